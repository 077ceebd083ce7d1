"""Benchmark `parts2whole.serve`: routing overhead per request, and the reference-cache hit rate of a
session trace with and without part-set affinity, on a pool of two device workers and on Ray Serve.

One run prints both tables, on the tiny model (`--weights tiny`, built offline), CPU only:

- Overhead: the same warm request (its part set cached, a new seed each time, 1 step at 96x64) run
  in this process on a Studio (direct), through the pool (`--devices cpu,cpu`) and through the Ray Serve
  handle (two CPU replicas); the median of `--repeats` calls each, every side on one torch thread, so the
  difference is what routing, pickling and the stream cost.
- Hit rate: bench/serve_trace.json (a scripted session: people re-generating with new seeds and switching
  outfits) replayed on two lanes at `--speed` times its pace, each person waiting for their last result;
  a hit is a generation whose studio reused the encoding
  (counted by the workers themselves). Each worker's reference cache holds MAX_PART_SETS_PER_WORKER
  three-part sets, as the real cache's bytes would at 768x512 (see serve/affinity.py).

    nice -n 10 .venv/bin/python bench/bench_serve.py          # a few minutes on 2 busy cores

Wall times on a shared machine are stretched by the other jobs: the load average is printed with them.
No GPU figures: lent machines have one GPU, so N real GPUs are unmeasured (docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))

from PIL import Image  # noqa: E402

from parts2whole.serve import MAX_PART_SETS_PER_WORKER, DevicePool  # noqa: E402
from parts2whole.studio import GenerationRequest, Studio  # noqa: E402

EXAMPLE = REPO_ROOT / "assets" / "examples" / "red-shirt-and-jeans"
TRACE = Path(__file__).resolve().parent / "serve_trace.json"
#: The three variants of a picture a trace event can name (content differs, so part sets differ).
VARIANTS = (lambda image: image, lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            lambda image: image.transpose(Image.Transpose.ROTATE_180))


def request(parts, variant: int, seed: int, steps: int) -> GenerationRequest:
    references = {part.replace("_", " "): VARIANTS[variant](Image.open(EXAMPLE / f"{part}.png").convert("RGB"))
                  for part in parts}
    return GenerationRequest(references=references, structure=Image.open(EXAMPLE / "pose.png"), seed=seed,
                             steps=steps, height=96, width=64)


def overheads(studios: dict, repeats: int) -> dict[str, float]:
    """Median ms per path of the same warm request, the paths taking turns so they share the machine's load."""
    for studio in studios.values():
        studio.generate(request(["face"], 0, 0, 1))  # warm: model loaded, part set cached
    times: dict[str, list[float]] = {name: [] for name in studios}
    for seed in range(1, repeats + 1):
        for name, studio in studios.items():
            started = time.perf_counter()
            studio.generate(request(["face"], 0, seed, 1))
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def replay(studio, events: list[dict], steps: int, speed: float) -> tuple[int, int, float]:
    """(hits, generations, seconds) of the trace on two lanes (the app's queue with two workers): an event
    starts once its time (`t` / speed) has come and its person's previous request has finished."""
    pending, busy_users, lock, results = list(events), set(), threading.Lock(), []
    started = time.perf_counter()

    def lane() -> None:
        while True:
            now = (time.perf_counter() - started) * speed
            with lock:
                event = next((e for e in pending if e["user"] not in busy_users and e["t"] <= now), None)
                if event is None and not pending:
                    return
                if event is not None:
                    pending.remove(event)
                    busy_users.add(event["user"])
            if event is None:
                time.sleep(0.01)
                continue
            result = studio.generate(request(event["parts"], event["variant"], event["seed"], steps))
            with lock:
                results.append(result.reused_references)
                busy_users.discard(event["user"])

    lanes = [threading.Thread(target=lane) for _ in range(2)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()
    return sum(results), len(results), time.perf_counter() - started


def three_part_set_bytes(studio: Studio) -> int:
    studio.generate(request(["face", "upper_body_clothes", "lower_body_clothes"], 0, 0, 1))
    return studio.reference_cache.total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=2, help="steps per generation of the trace")
    parser.add_argument("--speed", type=float, default=3.0, help="replay the trace this many times faster than recorded")
    parser.add_argument("--trace", type=Path, default=TRACE, help="a session trace of the same shape as serve_trace.json")
    parser.add_argument("--no-ray", action="store_true", help="the pool only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch  # the bench measures torch work; one thread each side, as the workers run

    torch.set_num_threads(1)
    events = json.loads(args.trace.read_text())["events"]
    direct = Studio("tiny", device="cpu")
    cache_bytes = MAX_PART_SETS_PER_WORKER * three_part_set_bytes(direct)
    ray = None if args.no_ray else start_ray()
    hits, timings = [], {}
    for affinity in (True, False):
        studios = {"pool (--devices cpu,cpu)": DevicePool(["cpu", "cpu"], "tiny", cache_bytes=cache_bytes,
                                                          affinity=affinity, torch_threads=1)}
        studios["pool (--devices cpu,cpu)"].wait_ready()
        if ray is not None:
            from parts2whole.serve.ray_client import RayStudio  # Ray Serve is optional, as above

            studios["Ray Serve handle (2 CPU replicas)"] = RayStudio("tiny", device="cpu", min_replicas=2,
                                                                     cache_bytes=cache_bytes, affinity=affinity)
        for name, studio in studios.items():  # the trace first, on cold caches
            how = ("affinity" if affinity else "least busy only") if name.startswith("pool") else \
                ("multiplexed by part set" if affinity else "no multiplexed id")
            hits.append((f"{name.split(' (')[0]}, {how}", *replay(studio, events, args.steps, args.speed)))
        if affinity:
            timings = overheads({"direct (in-process Studio)": direct, **studios}, args.repeats)
        for studio in studios.values():
            studio.close()
    if ray is not None:
        ray.serve.shutdown()
        ray.shutdown()
    print_tables(timings, hits, args.trace.name, len(events), len({(tuple(e["parts"]), e["variant"]) for e in events}))


def start_ray():
    import ray  # optional (requirements-ray.txt): only this part of the bench needs it
    import ray.serve  # noqa: F401 - shut down at the end

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def print_tables(timings: dict[str, float], hits, trace: str, count: int, distinct: int) -> None:
    direct = timings["direct (in-process Studio)"]
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; tiny model, 96x64, CPU")
    print(f"\nRouting overhead per request (median, warm part set, 1 step):\n{'path':<36}{'ms':>9}{'overhead ms':>13}")
    for name, ms in timings.items():
        print(f"{name:<36}{ms:>9.1f}{ms - direct:>13.1f}")
    print(f"\nCache hit rate on {trace} ({count} generations, {distinct} part sets: at most "
          f"{count - distinct} hits; 2 workers, "
          f"{MAX_PART_SETS_PER_WORKER} sets per worker):\n{'routing':<44}{'hits':>6}{'rate':>8}{'wall s':>9}")
    for name, hit, total, seconds in hits:
        print(f"{name:<44}{hit:>6}{hit / total:>8.0%}{seconds:>9.1f}")


if __name__ == "__main__":
    main()
