"""The training loop on accelerate: one GPU, many GPUs (`accelerate launch`) or the CPU, with mixed
precision, gradient accumulation and checkpointing, resumable training states, periodic validation
images, and an exported checkpoint in the official layout at the end.

    accelerate launch train.py --config configs/train-openpose-pose-guider.yaml

Output folder: checkpoints/checkpoint-<step>/ (training states for resuming), validation/ (images),
logs/, config.yaml (the resolved settings) and model/ (the exported checkpoint). Any training state can
be exported later: `python train.py --config <recipe> --export-state <output_dir>/checkpoints/checkpoint-<step>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from torch.utils.data import DataLoader

from ..model.image_processing import ClipImageSettings
from ..core.labels import PART_LABELS
from ..model.loading import load_components, resolve_checkpoint
from ..model.pipeline import Parts2WholePipeline
from .config import TrainConfig, config_to_dict, load_config
from .dataset import PartsToWholeDataset, resolve_dataset_root
from .export import export_checkpoint
from .objective import DropDecisions, TrainingModels, diffusion_loss, encode_text
from .references import install_training_processors
from .validation import save_validation_images

logger = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
EXPORT_FOLDER = "model"
#: Written into every training state: the trainable modules, in the order accelerate saved them.
STATE_MODULES_NAME = "parts2whole_training.json"
#: The console gets the mean loss, the learning rate and the speed every this many steps.
LOG_EVERY_STEPS = 50
WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingProgress:
    """The optimisation step, saved and restored with accelerate's training state."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


@dataclass
class TrainingResult:
    start_step: int
    final_step: int
    losses: list[float] = field(default_factory=list)
    exported: Path | None = None


def _checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def find_resume_state(output_dir: Path, resume: str | None) -> Path | None:
    """The training state to resume from: None, "latest" (newest under output_dir/checkpoints) or a path."""
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpointing.resume: {path} is not a training state folder")
        return path
    states = sorted((output_dir / CHECKPOINTS_FOLDER).glob(f"{CHECKPOINT_PREFIX}*"), key=_checkpoint_step)
    return states[-1] if states else None


def _check_state_modules(state: Path, trained: list[str]) -> None:
    """Refuse to resume a state saved for other trainable modules (its optimizer would not fit)."""
    record = state / STATE_MODULES_NAME
    if record.is_file():
        saved = json.loads(record.read_text())["modules"]
        if saved != trained:
            raise ValueError(f"{state} was saved while training {saved}, not {trained}: use another output_dir "
                             "or set checkpointing.resume to null")


def _prune_states(output_dir: Path, total_limit: int | None) -> None:
    if total_limit is None:
        return
    states = sorted((output_dir / CHECKPOINTS_FOLDER).glob(f"{CHECKPOINT_PREFIX}*"), key=_checkpoint_step)
    for stale in states[: max(0, len(states) - total_limit)]:
        shutil.rmtree(stale)


def _load_models(base_folder: Path, trained: list[str], gradient_checkpointing: bool, device: torch.device,
                 weight_dtype: torch.dtype) -> tuple[dict, dict]:
    """The base checkpoint's components, and its three trainable models set to train or stay frozen.

    The frozen encoders run in the mixed-precision dtype. The UNets and the pose guider stay float32 even
    when frozen (autocast computes in the low precision anyway): the validation pipeline then feeds every
    module its own dtype without autocast, which cannot mix float16 reference features with bfloat16.
    """
    components = load_components(base_folder, use_decoupled_cross_attn=True, torch_dtype=torch.float32)
    models = {name: components[name] for name in ("unet", "reference_unet", "pose_guider")}
    install_training_processors(models["unet"])
    for name, module in models.items():
        module.requires_grad_(name in trained).train(name in trained)
    if gradient_checkpointing:
        models["unet"].enable_gradient_checkpointing()  # also when frozen: the pose guider's gradient flows through it
        if "reference_unet" in trained:
            models["reference_unet"].enable_gradient_checkpointing()
    for name in ("vae", "text_encoder", "image_encoder"):
        components[name].to(device, dtype=weight_dtype)
    for name in models:
        if name not in trained:
            models[name].to(device)
    return components, models


def _save_training_state(accelerator: Accelerator, output_dir: Path, step: int, trained: list[str],
                         total_limit: int | None) -> None:
    """accelerate's full state (all processes take part), tagged with the trained modules; old states pruned."""
    state_dir = output_dir / CHECKPOINTS_FOLDER / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(state_dir))
    if accelerator.is_main_process:
        (state_dir / STATE_MODULES_NAME).write_text(json.dumps({"modules": trained}) + "\n")
        _prune_states(output_dir, total_limit)


def _make_pipeline(components: dict, models: dict, accelerator: Accelerator, structure_kind: str) -> Parts2WholePipeline:
    """A pipeline over the live (unwrapped) modules, for validation images."""
    pipe = Parts2WholePipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        image_encoder=components["image_encoder"], feature_extractor=components["feature_extractor"],
        unet=accelerator.unwrap_model(models["unet"]), reference_unet=accelerator.unwrap_model(models["reference_unet"]),
        pose_guider=accelerator.unwrap_model(models["pose_guider"]), scheduler=components["scheduler"],
        structure_kind=structure_kind)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_training(config: TrainConfig) -> TrainingResult:
    """Train as `config` says; returns the steps run, the per-step losses and the exported checkpoint."""
    optimization = config.optimization
    output_dir = Path(config.output_dir)
    trained = list(optimization.modules)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if "reference_unet" in trained else []
    accelerator = Accelerator(
        gradient_accumulation_steps=optimization.gradient_accumulation_steps,
        mixed_precision=optimization.mixed_precision,
        log_with=config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
    )
    set_seed(optimization.seed)
    resume_from = find_resume_state(output_dir, config.checkpointing.resume)
    if resume_from is not None:
        _check_state_modules(resume_from, trained)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))

    with accelerator.main_process_first():
        base_folder = resolve_checkpoint(config.base_checkpoint)
        data_root = resolve_dataset_root(config.data.root)
    components, models = _load_models(base_folder, trained, optimization.gradient_checkpointing, accelerator.device,
                                      WEIGHT_DTYPES[accelerator.mixed_precision])

    clip_settings = ClipImageSettings.from_config(components["feature_extractor"].to_dict())
    data = config.data
    dataset = PartsToWholeDataset(data_root, data.train_jsonl, data.structure_key, data.height, data.width, clip_settings,
                                  data.min_crop_fraction, data.max_samples)
    loader = DataLoader(dataset, batch_size=optimization.batch_size, shuffle=True, drop_last=True,
                        num_workers=data.num_workers, pin_memory=torch.cuda.is_available())
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training samples are fewer than one batch of {optimization.batch_size}")

    parameters = [p for name in trained for p in models[name].parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=optimization.learning_rate, betas=(optimization.adam_beta1, optimization.adam_beta2),
                                  weight_decay=optimization.adam_weight_decay, eps=optimization.adam_epsilon)
    lr_scheduler = get_scheduler(optimization.lr_scheduler, optimizer,
                                 num_warmup_steps=optimization.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=optimization.max_train_steps * accelerator.num_processes)
    prepared = accelerator.prepare(*(models[name] for name in trained), optimizer, loader, lr_scheduler)
    for name, module in zip(trained, prepared):
        models[name] = module
        # Autocast is applied explicitly around the loss; the forward wrapper `prepare` adds would also
        # autocast inside the validation pipeline, whose float16 reference features clash with bfloat16.
        accelerator.unwrap_model(module, keep_fp32_wrapper=False)
    optimizer, loader, lr_scheduler = prepared[len(trained):]

    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        logger.info("resumed from %s at step %d", resume_from, progress.step)
    start_step = progress.step

    training_models = TrainingModels(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        image_encoder=components["image_encoder"], unet=models["unet"], unet_module=accelerator.unwrap_model(models["unet"]),
        reference_unet=models["reference_unet"], pose_guider=models["pose_guider"],
        noise_scheduler=components["scheduler"], train_reference_unet="reference_unet" in trained)
    label_embeds = encode_text(training_models, list(PART_LABELS))
    validation_dataset = None
    if accelerator.is_main_process and config.validation.num_samples:
        if (data_root / data.validation_jsonl).is_file():
            validation_dataset = PartsToWholeDataset(data_root, data.validation_jsonl, data.structure_key, data.height,
                                                     data.width, clip_settings, 1.0, config.validation.num_samples)
        else:
            logger.warning("no validation images: %s not found", data_root / data.validation_jsonl)

    def validate(step: int) -> None:
        if validation_dataset is None or config.validation.num_samples == 0:
            return
        with torch.no_grad():
            pipe = _make_pipeline(components, models, accelerator, config.structure_kind)
            paths = save_validation_images(pipe, validation_dataset, output_dir / "validation", step,
                                           num_samples=config.validation.num_samples,
                                           num_inference_steps=config.validation.num_inference_steps,
                                           guidance_scale=config.validation.guidance_scale, seed=config.validation.seed,
                                           fusion_blocks=optimization.fusion_blocks)
        logger.info("validation images: %s", ", ".join(str(p) for p in paths))

    if accelerator.is_main_process and config.report_to:
        accelerator.init_trackers("parts2whole-train")
    updates_per_epoch = math.ceil(len(loader) / optimization.gradient_accumulation_steps)
    result = TrainingResult(start_step=start_step, final_step=start_step)
    epoch = progress.step // updates_per_epoch
    window_start = time.perf_counter()
    while progress.step < optimization.max_train_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        skip = (progress.step % updates_per_epoch) * optimization.gradient_accumulation_steps if epoch == start_step // updates_per_epoch else 0
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            with accelerator.accumulate(*(models[name] for name in trained)):
                drops = DropDecisions.sample(len(batch["caption"]), len(PART_LABELS), optimization.dropout, accelerator.device)
                with accelerator.autocast():
                    loss = diffusion_loss(training_models, batch, drops, label_embeds, optimization.fusion_blocks)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(parameters, optimization.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            step_loss = accelerator.gather(loss.detach().reshape(1)).mean().item()
            result.losses.append(step_loss)
            accelerator.log({"train_loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=progress.step)
            if progress.step % LOG_EVERY_STEPS == 0 and accelerator.is_main_process:
                recent = result.losses[-LOG_EVERY_STEPS:]
                seconds = (time.perf_counter() - window_start) / len(recent)
                logger.info("step %d/%d  loss %.4f  lr %.2e  %.2f s/step", progress.step, optimization.max_train_steps,
                            sum(recent) / len(recent), lr_scheduler.get_last_lr()[0], seconds)
                window_start = time.perf_counter()
            if progress.step % config.checkpointing.every_steps == 0 or progress.step == optimization.max_train_steps:
                _save_training_state(accelerator, output_dir, progress.step, trained, config.checkpointing.total_limit)
            if config.validation.every_steps and progress.step % config.validation.every_steps == 0 \
                    and progress.step < optimization.max_train_steps and accelerator.is_main_process:
                validate(progress.step)
            if progress.step >= optimization.max_train_steps:
                break
        epoch += 1
    result.final_step = progress.step

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        result.exported = export_checkpoint(
            output_dir / EXPORT_FOLDER, base_folder, unet=accelerator.unwrap_model(models["unet"]),
            reference_unet=accelerator.unwrap_model(models["reference_unet"]),
            pose_guider=accelerator.unwrap_model(models["pose_guider"]), trained_modules=trained,
            structure_kind=config.structure_kind,
            training_info={"base_checkpoint": config.base_checkpoint, "training_steps": progress.step,
                           "structure_key": data.structure_key, "resolution": [data.height, data.width]})
        validate(progress.step)
    accelerator.end_training()
    return result


def _state_weights_name(index: int) -> str:
    """accelerate's file name for the index-th prepared model of a training state."""
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"


def export_training_state(config: TrainConfig, state: str | Path, destination: str | Path) -> Path:
    """Export an intermediate training state (checkpoints/checkpoint-<step>) in the official layout,
    e.g. the step whose validation images look best."""
    from safetensors.torch import load_file

    from ..model.loading import load_state_dict_strict

    state = Path(state)
    base_folder = resolve_checkpoint(config.base_checkpoint)
    components = load_components(base_folder, use_decoupled_cross_attn=True, torch_dtype=torch.float32)
    for index, name in enumerate(config.optimization.modules):
        load_state_dict_strict(components[name], load_file(str(state / _state_weights_name(index))), f"{name} of {state}")
    return export_checkpoint(
        destination, base_folder, unet=components["unet"], reference_unet=components["reference_unet"],
        pose_guider=components["pose_guider"], trained_modules=list(config.optimization.modules),
        structure_kind=config.structure_kind,
        training_info={"base_checkpoint": config.base_checkpoint, "training_steps": _checkpoint_step(state),
                       "structure_key": config.data.structure_key, "resolution": [config.data.height, config.data.width]})


def _parse_override(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"--set expects key=value, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> TrainingResult:
    parser = argparse.ArgumentParser(description="Fine-tune Parts2Whole (e.g. the pose guider on DWPose/OpenPose maps).")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/train-openpose-pose-guider.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], type=_parse_override, metavar="KEY=VALUE",
                        help="override one setting, e.g. --set optimization.max_train_steps=100 (repeatable)")
    parser.add_argument("--export-state", default=None, metavar="DIR",
                        help="instead of training, export this training state (checkpoints/checkpoint-<step>) ...")
    parser.add_argument("--export-to", default=None, metavar="DIR", help="... to this folder (default: <state>-model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, dict(args.overrides))
    if args.export_state:
        exported = export_training_state(config, args.export_state, args.export_to or f"{Path(args.export_state)}-model")
        print(f"exported {args.export_state} to {exported}")
        return TrainingResult(start_step=0, final_step=0, exported=exported)
    return run_training(config)


if __name__ == "__main__":
    main()
