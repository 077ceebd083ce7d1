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
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ..core.labels import PART_LABELS
from ..model.image_processing import ClipImageSettings
from ..model.loading import load_components, load_state_dict_strict, resolve_checkpoint
from ..model.pipeline import Parts2WholePipeline
from .config import OptimizationConfig, TrainConfig, config_to_dict, load_config
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


def _make_accelerator(config: TrainConfig, trained: list[str]) -> Accelerator:
    """accelerate's Accelerator for the run: mixed precision, accumulation, logging under output_dir/logs."""
    output_dir = Path(config.output_dir)
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if "reference_unet" in trained else []
    return Accelerator(
        gradient_accumulation_steps=config.optimization.gradient_accumulation_steps,
        mixed_precision=config.optimization.mixed_precision,
        log_with=config.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=handlers,
    )


def _make_loader(config: TrainConfig, data_root: Path, clip_settings: ClipImageSettings) -> DataLoader:
    """The shuffled training batches; ValueError when the data do not fill one batch."""
    data, batch_size = config.data, config.optimization.batch_size
    dataset = PartsToWholeDataset(data_root, data.train_jsonl, data.structure_key, data.height, data.width, clip_settings,
                                  data.min_crop_fraction, data.max_samples)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=data.num_workers, pin_memory=torch.cuda.is_available())
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training samples are fewer than one batch of {batch_size}")
    return loader


def _make_optimizer(optimization: OptimizationConfig, accelerator: Accelerator, parameters: list) -> tuple:
    """AdamW over the trained parameters and its learning-rate schedule (steps counted over all processes)."""
    optimizer = torch.optim.AdamW(parameters, lr=optimization.learning_rate, betas=(optimization.adam_beta1, optimization.adam_beta2),
                                  weight_decay=optimization.adam_weight_decay, eps=optimization.adam_epsilon)
    lr_scheduler = get_scheduler(optimization.lr_scheduler, optimizer,
                                 num_warmup_steps=optimization.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=optimization.max_train_steps * accelerator.num_processes)
    return optimizer, lr_scheduler


class _TrainingRun:
    """One training run. `__init__` sets it up (accelerator, output folder, models, data, optimizer and
    schedule, the resumed state, validation samples); `train` runs the step loop (checkpoints and
    validation images on the way); `finish` exports the checkpoint."""

    def __init__(self, config: TrainConfig):
        self.config, self.optimization = config, config.optimization
        self.output_dir = Path(config.output_dir)
        self.trained = list(self.optimization.modules)
        self.accelerator = accelerator = _make_accelerator(config, self.trained)
        set_seed(self.optimization.seed)
        resume_from = find_resume_state(self.output_dir, config.checkpointing.resume)
        if resume_from is not None:
            _check_state_modules(resume_from, self.trained)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))

        with accelerator.main_process_first():
            self.base_folder = resolve_checkpoint(config.base_checkpoint)
            self.data_root = resolve_dataset_root(config.data.root)
        self.components, self.models = _load_models(self.base_folder, self.trained, self.optimization.gradient_checkpointing,
                                                    accelerator.device, WEIGHT_DTYPES[accelerator.mixed_precision])
        self.clip_settings = ClipImageSettings.from_config(self.components["feature_extractor"].to_dict())
        loader = _make_loader(config, self.data_root, self.clip_settings)
        self.parameters = [p for name in self.trained for p in self.models[name].parameters()]
        optimizer, lr_scheduler = _make_optimizer(self.optimization, accelerator, self.parameters)
        self.optimizer, self.loader, self.lr_scheduler = self._prepare(optimizer, loader, lr_scheduler)
        self.progress = self._restore(resume_from)
        self._window_start = time.perf_counter()  # the console's s/step since the last log line

        self.training_models = self._training_models()
        self.label_embeds = encode_text(self.training_models, list(PART_LABELS))
        self.validation_dataset = self._validation_dataset()

    def _prepare(self, optimizer, loader, lr_scheduler) -> tuple:
        """accelerate's `prepare` of the trained models (kept in `self.models`), the optimizer, the batches and
        the schedule."""
        accelerator, trained = self.accelerator, self.trained
        prepared = accelerator.prepare(*(self.models[name] for name in trained), optimizer, loader, lr_scheduler)
        for name, module in zip(trained, prepared):
            self.models[name] = module
            # Autocast is applied explicitly around the loss; the forward wrapper `prepare` adds would also
            # autocast inside the validation pipeline, whose float16 reference features clash with bfloat16.
            accelerator.unwrap_model(module, keep_fp32_wrapper=False)
        return tuple(prepared[len(trained):])

    def _restore(self, resume_from: Path | None) -> TrainingProgress:
        """The step counter, saved with every training state; loaded (with the whole state) when resuming."""
        progress = TrainingProgress()
        self.accelerator.register_for_checkpointing(progress)
        if resume_from is not None:
            self.accelerator.load_state(str(resume_from))
            logger.info("resumed from %s at step %d", resume_from, progress.step)
        return progress

    def _training_models(self) -> TrainingModels:
        components, models = self.components, self.models
        return TrainingModels(
            vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
            image_encoder=components["image_encoder"], unet=models["unet"],
            unet_module=self.accelerator.unwrap_model(models["unet"]),
            reference_unet=models["reference_unet"], pose_guider=models["pose_guider"],
            noise_scheduler=components["scheduler"], train_reference_unet="reference_unet" in self.trained)

    def _validation_dataset(self) -> PartsToWholeDataset | None:
        """The held-out samples of the validation images (main process only; None when there are none)."""
        data, validation = self.config.data, self.config.validation
        if not (self.accelerator.is_main_process and validation.num_samples):
            return None
        if not (self.data_root / data.validation_jsonl).is_file():
            logger.warning("no validation images: %s not found", self.data_root / data.validation_jsonl)
            return None
        return PartsToWholeDataset(self.data_root, data.validation_jsonl, data.structure_key, data.height,
                                   data.width, self.clip_settings, 1.0, validation.num_samples)

    def validate(self, step: int) -> None:
        """Validation images of the current weights, under output_dir/validation."""
        validation = self.config.validation
        if self.validation_dataset is None or validation.num_samples == 0:
            return
        with torch.no_grad():
            pipe = _make_pipeline(self.components, self.models, self.accelerator, self.config.structure_kind)
            paths = save_validation_images(pipe, self.validation_dataset, self.output_dir / "validation", step,
                                           num_samples=validation.num_samples,
                                           num_inference_steps=validation.num_inference_steps,
                                           guidance_scale=validation.guidance_scale, seed=validation.seed,
                                           fusion_blocks=self.optimization.fusion_blocks)
        logger.info("validation images: %s", ", ".join(str(p) for p in paths))

    def train(self) -> TrainingResult:
        """The step loop, epoch by epoch, until max_train_steps; a resumed run first skips the batches its
        epoch has already seen."""
        optimization, accelerator, loader = self.optimization, self.accelerator, self.loader
        updates_per_epoch = math.ceil(len(loader) / optimization.gradient_accumulation_steps)
        start_step = self.progress.step
        result = TrainingResult(start_step=start_step, final_step=start_step)
        epoch = self.progress.step // updates_per_epoch
        self._window_start = time.perf_counter()
        while self.progress.step < optimization.max_train_steps:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            skip = (self.progress.step % updates_per_epoch) * optimization.gradient_accumulation_steps \
                if epoch == start_step // updates_per_epoch else 0
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in batches:
                loss = self._accumulate(batch)
                if not accelerator.sync_gradients:
                    continue
                self._after_update(loss, result)
                if self.progress.step >= optimization.max_train_steps:
                    break
            epoch += 1
        result.final_step = self.progress.step
        return result

    def _accumulate(self, batch: dict) -> torch.Tensor:
        """Forward and backward of one batch; the optimizer steps when accelerate's accumulation says so."""
        optimization, accelerator = self.optimization, self.accelerator
        with accelerator.accumulate(*(self.models[name] for name in self.trained)):
            drops = DropDecisions.sample(len(batch["caption"]), len(PART_LABELS), optimization.dropout, accelerator.device)
            with accelerator.autocast():
                loss = diffusion_loss(self.training_models, batch, drops, self.label_embeds, optimization.fusion_blocks)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.parameters, optimization.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss

    def _after_update(self, loss: torch.Tensor, result: TrainingResult) -> None:
        """After an optimisation step: count it, log the loss, save a training state and make validation
        images when they are due."""
        optimization, accelerator, step = self.optimization, self.accelerator, self.progress.step + 1
        self.progress.step = step
        step_loss = accelerator.gather(loss.detach().reshape(1)).mean().item()
        result.losses.append(step_loss)
        accelerator.log({"train_loss": step_loss, "lr": self.lr_scheduler.get_last_lr()[0]}, step=step)
        if step % LOG_EVERY_STEPS == 0 and accelerator.is_main_process:
            recent = result.losses[-LOG_EVERY_STEPS:]
            seconds = (time.perf_counter() - self._window_start) / len(recent)
            logger.info("step %d/%d  loss %.4f  lr %.2e  %.2f s/step", step, optimization.max_train_steps,
                        sum(recent) / len(recent), self.lr_scheduler.get_last_lr()[0], seconds)
            self._window_start = time.perf_counter()
        checkpointing, every_validation = self.config.checkpointing, self.config.validation.every_steps
        if step % checkpointing.every_steps == 0 or step == optimization.max_train_steps:
            _save_training_state(accelerator, self.output_dir, step, self.trained, checkpointing.total_limit)
        if every_validation and step % every_validation == 0 and step < optimization.max_train_steps \
                and accelerator.is_main_process:
            self.validate(step)

    def finish(self, result: TrainingResult) -> None:
        """Export the trained checkpoint (official layout) and its validation images, then end the run."""
        accelerator, config, data = self.accelerator, self.config, self.config.data
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            result.exported = export_checkpoint(
                self.output_dir / EXPORT_FOLDER, self.base_folder, unet=accelerator.unwrap_model(self.models["unet"]),
                reference_unet=accelerator.unwrap_model(self.models["reference_unet"]),
                pose_guider=accelerator.unwrap_model(self.models["pose_guider"]), trained_modules=self.trained,
                structure_kind=config.structure_kind,
                training_info={"base_checkpoint": config.base_checkpoint, "training_steps": self.progress.step,
                               "structure_key": data.structure_key, "resolution": [data.height, data.width]})
            self.validate(self.progress.step)
        accelerator.end_training()


def run_training(config: TrainConfig) -> TrainingResult:
    """Train as `config` says; returns the steps run, the per-step losses and the exported checkpoint."""
    run = _TrainingRun(config)
    if run.accelerator.is_main_process and config.report_to:
        run.accelerator.init_trackers("parts2whole-train")
    result = run.train()
    run.finish(result)
    return result


def _state_weights_name(index: int) -> str:
    """accelerate's file name for the index-th prepared model of a training state."""
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"


def export_training_state(config: TrainConfig, state: str | Path, destination: str | Path) -> Path:
    """Export an intermediate training state (checkpoints/checkpoint-<step>) in the official layout,
    e.g. the step whose validation images look best."""
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
