"""Benchmark `parts2whole.batch`: lines per minute, local and on Ray, with and without grouping by part set.

The manifest is the suite's lookbook: the 3 example part sets x 2 pose maps x 2 seeds, 12 lines, written
in interleaved order (set A, B, C, A, B, C, ...), on the tiny model (`--weights tiny`, built offline). Each
configuration runs the whole batch into a fresh folder and reports the wall time of `batch.run` (model
loading and, on Ray, actor start-up included), lines per minute, the mean time of a line, and the number of
reference encodes (real studio cache misses).

- grouped / manifest order: `group=True` (the default: work ordered by part set) or `group=False`.
- "cache: 1 set": each worker's reference cache holds one part set's encoding, as on a GPU whose cache
  budget is smaller than a shop's many outfits; with the default budget the tiny model's 3 sets all fit, so
  the order cannot matter there.
- Ray: a local Ray instance with `--ray-cpus` CPUs and `--ray-workers` CPU actors (one thread each).

    nice -n 10 .venv/bin/python bench/bench_batch.py              # a few minutes on 2 busy cores

Wall time on a shared machine is stretched by the other jobs: the load average is printed with the figures.
GPU figures (portraits per minute per GPU at 768x512, 30 steps) need a GPU: `--device cuda --height 768
--width 512 --steps 30 --weights <real-size checkpoint folder>`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from parts2whole import batch, studio  # noqa: E402
from parts2whole.studio.inputs import load_request  # noqa: E402

EXAMPLES = REPO_ROOT / "assets" / "examples"
PART_SETS = ("red-shirt-and-jeans", "hat-and-green-top", "summer-dress")
POSES = ("red-shirt-and-jeans", "summer-dress")
SEEDS = (1, 2)


def write_manifest(folder: Path, height: int, width: int, steps: int) -> Path:
    shutil.copytree(EXAMPLES, folder / "parts", ignore=shutil.ignore_patterns("*.jpg", "*.json"))
    rows = []
    for pose in POSES:
        for seed in SEEDS:
            for name in PART_SETS:
                row = {path.stem: f"parts/{name}/{path.name}" for path in sorted((folder / "parts" / name).glob("*.png"))
                       if path.stem != "pose"}
                row.update(pose=f"parts/{pose}/pose.png", seed=seed, height=height, width=width, steps=steps,
                           prompt=f"{name.replace('-', ' ')}, high quality")
                rows.append(row)
    manifest = folder / "lookbook.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def one_set_cache_bytes(manifest: Path, weights: str, device: str | None) -> int:
    """A reference-cache budget that holds the largest part set's encoding, but never two sets."""
    lines = batch.read_manifest(manifest)
    runner = studio.Studio(weights, device=device)
    pipe = runner.pipeline()
    sizes = []
    for group in batch.group_by_part_set(lines, manifest.parent):
        request = load_request(batch.line_inputs(group[0], manifest.parent))  # validated
        encoding = pipe.encode_references(dict(request.references), dict(request.masks), height=request.height,
                                          width=request.width, fusion_blocks=request.fusion_blocks)
        sizes.append(studio._tensor_bytes(encoding))
    budget = int(max(sizes) * 1.1)
    smallest_pair = sum(sorted(sizes)[:2])
    assert budget < smallest_pair, (sizes, budget)
    return budget


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--ray-workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))
    logging.basicConfig(level=logging.WARNING)

    import torch

    folder = Path(tempfile.mkdtemp(prefix="parts2whole-bench-batch-"))
    manifest = write_manifest(folder, args.height, args.width, args.steps)
    one_set = one_set_cache_bytes(manifest, args.weights, args.device)
    configs = [
        ("local", True, None, "grouped"),
        ("local", False, None, "manifest order"),
        ("local", True, one_set, "grouped, cache: 1 set"),
        ("local", False, one_set, "manifest order, cache: 1 set"),
    ]
    ray = None
    if not args.skip_ray:
        import ray

        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        configs += [("ray", True, None, f"grouped, {args.ray_workers} actors"),
                    ("ray", False, None, f"manifest order, {args.ray_workers} actors")]
    print(f"12 lines, {args.height}x{args.width}, {args.steps} steps, weights {args.weights}, torch threads "
          f"{torch.get_num_threads()} (local); load average before: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    try:
        for engine, group, cache, label in configs:
            summary = batch.run(manifest, folder / f"out-{len(rows)}", engine=engine, weights=args.weights,
                                device=args.device, group=group, cache_bytes=cache, progress=False,
                                workers=args.ray_workers if engine == "ray" else None)
            assert summary.succeeded and summary.generated == 12, summary.describe()
            line_seconds = [result.seconds for result in summary.results]
            rows.append((engine, label, summary.encodes, summary.seconds, summary.lines_per_minute,
                         sum(line_seconds) / len(line_seconds), summary.workers))
            print(f"  done: {engine} {label}: {summary.seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{'engine':7} {'order / cache':34} {'workers':>7} {'encodes':>7} {'seconds':>8} {'lines/min':>9} "
          f"{'s/line':>7}")
    for engine, label, encodes, seconds, per_minute, per_line, workers in rows:
        print(f"{engine:7} {label:34} {workers:7d} {encodes:7d} {seconds:8.1f} {per_minute:9.1f} {per_line:7.2f}")
    by_label = {(row[0], row[1]): row for row in rows}
    print()
    pairs = [(("local", "manifest order, cache: 1 set"), ("local", "grouped, cache: 1 set"))]
    if not args.skip_ray:
        pairs.append((("ray", f"manifest order, {args.ray_workers} actors"),
                      ("ray", f"grouped, {args.ray_workers} actors")))
    for ungrouped, grouped in pairs:
        slow, fast = by_label[ungrouped], by_label[grouped]
        print(f"{grouped[0]}: the 12 lines take {slow[3]:.1f} s in manifest order ({slow[2]} encodes) and "
              f"{fast[3]:.1f} s grouped by part set ({fast[2]} encodes): {slow[3] / fast[3]:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
