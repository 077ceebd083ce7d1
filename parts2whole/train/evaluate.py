"""Evaluate a checkpoint on the test split with the paper's metrics.

    # 1. generate: one folder per test sample with generated.png and target.png (the ground truth)
    python -m parts2whole.train.evaluate generate --checkpoint outputs/parts2whole-openpose-pose-guider/model \
        --data-root data/DeepFashion-MultiModal-Parts2Whole --jsonl test_dwpose.jsonl --structure-key dwpose \
        --output outputs/eval-openpose --num-samples 500 --device cuda
    # 2. score: every generated image against its own ground truth (+ FID over the two sets)
    python -m parts2whole.train.evaluate score --pairs outputs/eval-openpose --metrics clip dinov2 lpips dreamsim fid --device cuda

`score` writes scores.json (mean per metric and the number of pairs) and scores.csv (per pair).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .metrics import PAIRED_METRICS, SET_METRICS

GENERATED_NAME, TARGET_NAME = "generated.png", "target.png"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def generate_pairs(pipe, dataset, output: Path, *, num_samples: int | None, num_inference_steps: int,
                   guidance_scale: float, seed: int, skipped: list[int] | None = None) -> list[Path]:
    """Generate samples of `dataset` (a `PartsToWholeDataset`) once each, until `num_samples` pairs (default:
    all); existing pairs are kept. A sample whose pose map is blank (DensePose found nobody) has no pose to
    follow: it is skipped (its index appended to `skipped`), and the next one is taken."""
    # .validation imports the pipeline (diffusers): only `generate` needs it, so `score` and `--help` stay light.
    from .validation import generate_sample

    folders = []
    wanted = len(dataset) if num_samples is None else num_samples
    for index in range(len(dataset)):
        if len(folders) >= wanted:
            break
        folder = output / f"{index:05d}"
        if not (folder / GENERATED_NAME).is_file():
            if not dataset.has_structure(index):
                if skipped is not None:
                    skipped.append(index)
                continue
            folder.mkdir(parents=True, exist_ok=True)
            generated, target, structure = generate_sample(pipe, dataset, index, num_inference_steps=num_inference_steps,
                                                           guidance_scale=guidance_scale, seed=seed + index)
            target.save(folder / TARGET_NAME)
            structure.save(folder / "structure.png")
            generated.save(folder / GENERATED_NAME)
        folders.append(folder)
    return folders


def read_pairs(root: Path) -> tuple[list[str], list[Image.Image], list[Image.Image]]:
    names, generated, targets = [], [], []
    for folder in sorted(p for p in root.iterdir() if (p / GENERATED_NAME).is_file() and (p / TARGET_NAME).is_file()):
        names.append(folder.name)
        generated.append(Image.open(folder / GENERATED_NAME).convert("RGB"))
        targets.append(Image.open(folder / TARGET_NAME).convert("RGB"))
    if not names:
        raise FileNotFoundError(f"no {GENERATED_NAME} + {TARGET_NAME} pairs under {root}")
    return names, generated, targets


def score_pairs(names: Sequence[str], generated: Sequence[Image.Image], targets: Sequence[Image.Image],
                paired_metrics: Sequence, set_metrics: Sequence = (), batch_size: int = 16) -> tuple[dict, list[dict]]:
    """(summary {metric: {"mean", "higher_is_better"}, "pairs": N}, per-pair rows)."""
    rows = [{"pair": name} for name in names]
    summary: dict = {"pairs": len(names)}
    for metric in paired_metrics:
        scores = []
        for start in range(0, len(names), batch_size):
            scores += metric.score_pairs(generated[start:start + batch_size], targets[start:start + batch_size])
        for row, score in zip(rows, scores):
            row[metric.name] = score
        summary[metric.name] = {"mean": sum(scores) / len(scores), "higher_is_better": metric.higher_is_better}
    for metric in set_metrics:
        summary[metric.name] = {"value": metric.score_sets(generated, targets), "higher_is_better": metric.higher_is_better}
    return summary, rows


def write_scores(root: Path, summary: dict, rows: list[dict]) -> None:
    (root / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(root / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the test split and score it with the paper's metrics.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate")
    generate.add_argument("--checkpoint", required=True)
    generate.add_argument("--data-root", default="data/DeepFashion-MultiModal-Parts2Whole")
    generate.add_argument("--jsonl", default="test_dwpose.jsonl")
    generate.add_argument("--structure-key", default="dwpose")
    generate.add_argument("--output", required=True)
    generate.add_argument("--num-samples", type=int, default=None)
    generate.add_argument("--height", type=int, default=768)
    generate.add_argument("--width", type=int, default=512)
    generate.add_argument("--steps", type=int, default=50)
    generate.add_argument("--guidance", type=float, default=3.5)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    generate.add_argument("--dtype", choices=sorted(DTYPES), default="fp16" if torch.cuda.is_available() else "fp32")
    score = commands.add_parser("score")
    score.add_argument("--pairs", required=True)
    score.add_argument("--metrics", nargs="+", default=["clip", "dinov2"], choices=[*PAIRED_METRICS, *SET_METRICS])
    score.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    if args.command == "generate":
        # The pipeline (diffusers, transformers) only for `generate`: `score` and `--help` stay light.
        from ..model.image_processing import ClipImageSettings
        from ..model.pipeline import Parts2WholePipeline
        from .dataset import PartsToWholeDataset, resolve_dataset_root
        from .export import read_structure_kind

        checkpoint = Path(args.checkpoint)
        structure_kind = read_structure_kind(checkpoint) if checkpoint.is_dir() else "densepose"
        pipe = Parts2WholePipeline.from_pretrained(args.checkpoint, torch_dtype=DTYPES[args.dtype],
                                                   structure_kind=structure_kind).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        dataset = PartsToWholeDataset(resolve_dataset_root(args.data_root), args.jsonl, args.structure_key, args.height, args.width,
                                      ClipImageSettings.from_config(pipe.feature_extractor.to_dict()))
        skipped: list[int] = []
        folders = generate_pairs(pipe, dataset, Path(args.output), num_samples=args.num_samples,
                                 num_inference_steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                                 skipped=skipped)
        print(f"{len(folders)} pairs in {args.output}" + (f"; {len(skipped)} samples skipped: their pose map is blank"
                                                         if skipped else ""))
    else:
        root = Path(args.pairs)
        names, generated, targets = read_pairs(root)
        paired = [PAIRED_METRICS[name](device=args.device) for name in args.metrics if name in PAIRED_METRICS]
        sets = [SET_METRICS[name](device=args.device) for name in args.metrics if name in SET_METRICS]
        summary, rows = score_pairs(names, generated, targets, paired, sets)
        write_scores(root, summary, rows)
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
