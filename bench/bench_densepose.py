"""Time photo -> DensePose map (preprocess.densepose) on CPU or GPU, stage by stage.

The real-size densepose_rcnn_R_50_FPN_s1x, at detectron2's test size (short side 800, long side
<= 1333). Weights: ``--weights`` (a model-zoo .pkl or its .safetensors), else the D1 reference
case's random checkpoint rebuilt from ``../shared/densepose/D1`` (it finds the person in the D1
photo, so every stage runs as it would with the trained weights; speed does not depend on the
values). The photo: ``--photo``, else the D1 photo resized to 750x1101. One warm-up call, then
``--runs`` timed calls; prints the median seconds of each stage and of the whole call, the process
CPU seconds of a call and the load average (on a shared machine wall time grows with the load).
Stages: input (decode, resize, normalise), backbone (ResNet-50 + FPN), rpn, box_head (RoIAlign,
2 FC, NMS), densepose_head (decoder on the whole stride-4 map, RoIAlign, 8 convs, predictor),
resampling (the top person's charts onto its box).

    nice -n 10 .venv/bin/python bench/bench_densepose.py
    .venv/bin/python bench/bench_densepose.py --device cuda --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

#: The issue's goal for one photo -> map call on a 2-core CPU.
TARGET_SECONDS_CPU = 3.0
#: The bench photo's size (width, height).
PHOTO_SIZE = (750, 1101)
STAGES = ("input", "backbone", "rpn", "box_head", "densepose_head", "resampling")


def _load_average() -> str:
    try:
        return " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="model-zoo .pkl (default: D1's rebuilt random checkpoint)")
    parser.add_argument("--photo", type=Path, help="photo (default: the D1 photo resized to 750x1101)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from preprocess.densepose import load_densepose

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    from densepose_reference import D1, rebuild_d1_weights, save_model_zoo_pickle, shared_available

    with tempfile.TemporaryDirectory() as scratch:
        weights = args.weights
        if weights is None:
            if not shared_available():
                sys.exit("no --weights and no ../shared/densepose/D1 to rebuild the reference weights from")
            weights = save_model_zoo_pickle(rebuild_d1_weights(), Path(scratch) / "model_final_162be9.pkl")
        start = time.perf_counter()
        estimator = load_densepose(weights, device=args.device)
        load_seconds = time.perf_counter() - start
    photo = Image.open(args.photo).convert("RGB") if args.photo else Image.open(D1 / "input.jpg").convert("RGB").resize(PHOTO_SIZE, Image.BILINEAR)

    estimator(photo)  # warm-up (allocator, oneDNN / cuDNN kernel choice)
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    per_stage_cpu: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals, cpu_totals = [], []
    for _ in range(args.runs):
        timings: dict[str, float] = {}
        start, cpu_start = time.perf_counter(), time.process_time()
        run = estimator.run(photo, timings=timings)
        estimator.result(run)
        totals.append(time.perf_counter() - start)
        cpu_totals.append(time.process_time() - cpu_start)
        for stage in STAGES:
            per_stage[stage].append(timings.get(stage, 0.0))
            per_stage_cpu[stage].append(timings.get(stage + " cpu", 0.0))

    total = statistics.median(totals)
    print(f"DensePose photo -> map  photo {photo.width}x{photo.height}  device {args.device}  "
          f"torch threads {torch.get_num_threads()}  cores {os.cpu_count()}  load average {_load_average()}")
    source = estimator.weights if args.weights else "D1's random reference checkpoint (rebuilt, real size)"
    print(f"weights: {source}  (load {load_seconds:.2f} s)  people found: {len(run.boxes)}")
    for stage in STAGES:
        seconds = statistics.median(per_stage[stage])
        print(f"  {stage:15s} {seconds:7.3f} s  {100 * seconds / total:5.1f} %   CPU {statistics.median(per_stage_cpu[stage]):7.3f} s")
    verdict = ""
    if args.device == "cpu":
        verdict = f"  (goal <= {TARGET_SECONDS_CPU:.0f} s on 2 cores: {'met' if total <= TARGET_SECONDS_CPU else 'not met'})"
    print(f"  {'whole call':15s} {total:7.3f} s  median of {args.runs}, min {min(totals):.3f} s, max {max(totals):.3f} s{verdict}")
    print(f"  {'process CPU':15s} {statistics.median(cpu_totals):7.3f} s  (all threads; on an idle machine wall ~ CPU / threads)")


if __name__ == "__main__":
    main()
