"""An edit's cost next to a generation's, same working size and steps, from one run, side by side.

Model: the tiny random checkpoint (`parts2whole.model.tiny.build_tiny_checkpoint`, seed 0) on the CPU, or
a checkpoint folder given with `--weights`. Both calls reuse one cached reference encoding (two parts), so
what is compared is the call itself: the generation (pose guider, denoising, decode) against the edit
(the same, plus the crop, the VAE encode of the source, the per-step blend and the full-resolution paste).
Timings are process CPU time (a shared machine stretches wall time unevenly), interleaved rounds, fastest
of each. The tiny model's UNet is so small that the edit's fixed costs weigh far more than they would on
the real model: read the ratio as an upper bound.

    .venv/bin/python bench/bench_edit.py                       # tiny model, 256x192, 10 steps
    .venv/bin/python bench/bench_edit.py --height 384 --width 256 --steps 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parts2whole import Parts2WholePipeline  # noqa: E402
from parts2whole.model.edit_region import check_edit  # noqa: E402
from parts2whole.model.editing import Parts2WholeEditPipeline  # noqa: E402
from parts2whole.model.tiny import build_tiny_checkpoint  # noqa: E402
from parts2whole.model.validation import check_request  # noqa: E402


def _timed(fn) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="a checkpoint folder (default: the tiny model, built now)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    folder = args.weights or build_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny-parts2whole", seed=0)
    pipe = Parts2WholePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    edit_pipe = Parts2WholeEditPipeline.from_pipe(pipe)

    rng = np.random.default_rng(0)
    parts = {label: Image.fromarray(rng.integers(0, 256, (96, 80, 3), dtype=np.uint8))
             for label in ("face", "shoes")}
    source_size = (args.width * 3 // 2, args.height)  # a landscape photo: the crop is the model's aspect
    source = Image.fromarray(rng.integers(0, 256, (source_size[1], source_size[0], 3), dtype=np.uint8))
    pose = Image.new("RGB", source_size)
    ImageDraw.Draw(pose).rectangle((source_size[0] // 3, 4, 2 * source_size[0] // 3, source_size[1] - 4), fill=(30, 140, 200))
    region = Image.new("L", source_size)
    ImageDraw.Draw(region).rectangle((source_size[0] // 3, source_size[1] * 3 // 4, 2 * source_size[0] // 3,
                                      source_size[1] - 8), fill=255)

    def request(structure):
        return check_request(references=parts, masks=None, structure=structure, prompt="", negative_prompt="",
                             height=args.height, width=args.width, num_inference_steps=args.steps, guidance_scale=3.5,
                             num_images_per_prompt=1, output_type="np", fusion_blocks="full",
                             has_reference_encoding=False)

    generation, edit_request = request(pose.crop((source_size[0] // 6, 0, source_size[0] * 5 // 6, source_size[1]))), request(pose)
    encoding = pipe.encode_checked(generation.references, args.height, args.width, "full")
    edit = check_edit(source, region, 1.0, 32, 8)
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    run_generation = lambda: pipe.generate_checked(generation, reference_encoding=encoding, generator=seeded())  # noqa: E731
    run_edit = lambda: edit_pipe.edit_checked(edit_request, edit, reference_encoding=encoding, generator=seeded())  # noqa: E731
    run_generation(), run_edit()  # warm up
    timings = {"generate": [], "edit": []}
    for _ in range(args.rounds):
        timings["generate"].append(_timed(run_generation))
        timings["edit"].append(_timed(run_edit))
    model = "tiny random model" if args.weights is None else args.weights
    best = {name: min(values) for name, values in timings.items()}
    print(f"{model}, CPU ({torch.get_num_threads()} threads), {args.height}x{args.width}, {args.steps} steps, "
          f"2 cached references, source {source_size[0]}x{source_size[1]}: generate {best['generate']:.2f} s, "
          f"edit {best['edit']:.2f} s CPU time (edit/generate = {best['edit'] / best['generate']:.2f}x)")


if __name__ == "__main__":
    main()
