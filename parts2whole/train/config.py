"""The training recipe's settings: one YAML file -> typed, validated dataclasses.

Every field has the default of the recommended recipe (the pose guider alone, on OpenPose-style maps
rendered from DWPose keypoints); a YAML file only lists what it changes. Unknown keys are errors, so a
typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Modules the recipe can fine-tune; everything else (VAE, CLIP text and image encoders) stays frozen.
TRAINABLE_MODULES = ("pose_guider", "unet", "reference_unet")
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")


@dataclass
class DataConfig:
    """Where the DeepFashion-MultiModal-Parts2Whole layout lives and how samples are shaped."""

    #: A local folder in the dataset's layout (images/, face/, ..., train.jsonl), or the Hub dataset id
    #: "huanngzh/DeepFashion-MultiModal-Parts2Whole" (downloaded to data/ on first use). Training on our
    #: DWPose maps needs the converter's output (dwpose/, *_dwpose.jsonl) in that folder.
    root: str = "data/DeepFashion-MultiModal-Parts2Whole"
    #: Index files, relative to `root`. The `*_dwpose.jsonl` files are written by
    #: `python -m parts2whole.train.convert_dwpose`.
    train_jsonl: str = "train_dwpose.jsonl"
    validation_jsonl: str = "test_dwpose.jsonl"
    #: Key of the sample's `structure` mapping that holds the pose map to train on.
    structure_key: str = "dwpose"
    #: Training resolution (multiples of 8); 768 x 512 is what the app generates by default.
    height: int = 768
    width: int = 512
    #: Random crop of the target (and its pose map, identically) keeping at least this fraction of each
    #: side before resizing; 1.0 disables the augmentation.
    min_crop_fraction: float = 0.9
    #: Use only the first N samples of the training index (None: all).
    max_samples: int | None = None
    num_workers: int = 4


@dataclass
class DropoutConfig:
    """Per-sample dropping probabilities that teach the unconditional branches used by guidance."""

    #: Drop the prompt, the CLIP image tokens and every reference together: exactly the unconditional
    #: half of classifier-free guidance at inference.
    text: float = 0.1
    #: Zero the pose guider's features.
    pose: float = 0.0
    #: Drop each reference part independently.
    reference: float = 0.2
    #: Drop all references of a sample at once.
    all_references: float = 0.2


@dataclass
class OptimizationConfig:
    modules: list[str] = field(default_factory=lambda: ["pose_guider"])
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 500
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    max_train_steps: int = 20000
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = True
    #: "full" (all 16 transformer blocks share attention with the references) or "midup".
    fusion_blocks: str = "full"
    seed: int = 42
    dropout: DropoutConfig = field(default_factory=DropoutConfig)


@dataclass
class CheckpointConfig:
    #: Save the full training state (for resuming) every this many optimisation steps.
    every_steps: int = 1000
    #: Keep at most this many training states (oldest removed first); None keeps all.
    total_limit: int | None = 3
    #: "latest" resumes from the newest state in output_dir/checkpoints, a path resumes from it, None
    #: starts fresh.
    resume: str | None = "latest"


@dataclass
class ValidationConfig:
    #: Generate validation images every this many steps (0 disables; the final model is always sampled).
    every_steps: int = 1000
    num_samples: int = 4
    num_inference_steps: int = 30
    guidance_scale: float = 3.5
    seed: int = 0


@dataclass
class TrainConfig:
    #: Base checkpoint in the official layout: a local folder or a Hub id.
    base_checkpoint: str = "huanngzh/Parts2Whole"
    output_dir: str = "outputs/parts2whole-openpose"
    #: Recorded in the exported checkpoint (parts2whole.json) so the app routes matching maps to it.
    structure_kind: str = "openpose"
    #: "tensorboard", "wandb", ... (anything accelerate's trackers accept), or None.
    report_to: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def validate(self) -> "TrainConfig":
        unknown = set(self.optimization.modules) - set(TRAINABLE_MODULES)
        if unknown or not self.optimization.modules:
            raise ValueError(f"optimization.modules must be a non-empty subset of {TRAINABLE_MODULES}, got {self.optimization.modules}")
        if self.optimization.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"optimization.mixed_precision must be one of {MIXED_PRECISION_CHOICES}")
        if self.optimization.fusion_blocks not in ("full", "midup"):
            raise ValueError("optimization.fusion_blocks must be 'full' or 'midup'")
        if self.data.height % 8 or self.data.width % 8:
            raise ValueError("data.height and data.width must be multiples of 8")
        if not 0 < self.data.min_crop_fraction <= 1:
            raise ValueError("data.min_crop_fraction must be in (0, 1]")
        for name, value in dataclasses.asdict(self.optimization.dropout).items():
            if not 0 <= value <= 1:
                raise ValueError(f"optimization.dropout.{name} must be a probability, got {value}")
        return self


def _build(cls, values: dict[str, Any], where: str):
    """Instantiate dataclass `cls` from a mapping, recursing into nested dataclasses; unknown keys fail."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown setting(s) in {where or 'config'}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}".lstrip("."))
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, values or {}, "").validate()


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe; `overrides` (nested mapping) replaces individual values, e.g. from a test."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in (overrides or {}).items():
        target = values
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return config_from_dict(values)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
