"""The studio on a local Ray Serve with two CPU replicas (`--engine ray`), through the handle the app uses.

Two generations overlap; a re-generation of a part set lands on the replica that cached it (model
multiplexing); a replica killed mid-generation still delivers (retried once, with a note); outputs equal
the in-process studio's within the golden tolerance; Stop cancels the replica's generation. Ray starts
once for the module (2 CPUs, no dashboard). In CI (CI=true) a missing Ray Serve fails, as in test_batch."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from app_fixtures import WEIGHTS_DIR
from serve_cases import KILL_STEPS, LONG_STEPS, Recorder, assert_overlapped, request, run_concurrently
from tolerances import assert_same_pixels
from parts2whole.core.errors import GenerationCancelled
from parts2whole.serve import RETRY_NOTE
from parts2whole.studio import WEIGHTS_DIR_ENV

#: A person re-generates seconds later; replicas push the ids they hold every 0.1 s, give them that time.
REGENERATE_AFTER_S = 1.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def ray_studio():
    try:
        import ray
        from ray import serve
    except ImportError:
        if _in_ci():
            pytest.fail("Ray Serve is not installed; CI installs requirements-ray.txt (make test)")
        pytest.skip("Ray Serve is not installed: pip install -r requirements-ray.txt")
    from parts2whole.serve.ray_client import RayStudio

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WEIGHTS_DIR_ENV, str(WEIGHTS_DIR))  # forwarded to the replicas
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 object_store_memory=256 * 1024**2)
        try:
            studio = RayStudio("tiny", device="cpu", min_replicas=2)
            assert studio.workers == 2
            yield studio
            studio.close()
            serve.shutdown()
        finally:
            ray.shutdown()


def _replica_stats(studio) -> dict[str, dict]:
    """Every replica's own counters, asked through the handle until both answered."""
    seen: dict[str, dict] = {}
    for _ in range(40):
        row = studio.handle.stats.remote().result()
        seen[row["replica"]] = row
        if len(seen) == studio.workers:
            break
    return seen


def test_two_generations_run_at_the_same_time(ray_studio):
    results, recorders = run_concurrently(ray_studio, [request("face", steps=LONG_STEPS),
                                                       request("upper_body_clothes", steps=LONG_STEPS)])
    assert_overlapped(recorders)
    assert sorted(row["generations"] for row in ray_studio.stats()) == [1, 1]


def test_same_part_set_lands_on_the_replica_that_cached_it(ray_studio):
    before = {row["replica"]: dict(row) for row in ray_studio.stats()}
    first = ray_studio.generate(request("face", "shoes", seed=1))
    time.sleep(REGENERATE_AFTER_S)
    second = ray_studio.generate(request("face", "shoes", seed=2))
    after = {row["replica"]: row for row in ray_studio.stats()}
    grew = {replica: row["generations"] - before.get(replica, {}).get("generations", 0) for replica, row in after.items()}
    assert sorted(grew.values())[-1] == 2, f"both generations on one replica: {grew}"
    replica = max(grew, key=grew.get)
    assert after[replica]["cache_hits"] - before.get(replica, {}).get("cache_hits", 0) == 1
    assert not first.reused_references and second.reused_references


def test_outputs_equal_the_single_process_studio(ray_studio, tiny_studio):
    wanted = request("face", "lower_body_clothes", seed=11)
    assert_same_pixels(ray_studio.generate(wanted).images[0], tiny_studio.generate(wanted).images[0])


def test_stop_cancels_the_replicas_generation(ray_studio):
    stop = Recorder(at_step=2, action=lambda: None)
    with pytest.raises(GenerationCancelled):
        ray_studio.generate(request("shoes", seed=3, steps=150), progress=stop, cancelled=stop.fired.is_set)
    assert max(stop.steps) < 150
    stopped = 0
    for _ in range(100):  # the replica notices the cancel at its next step, then counts it
        stopped = sum(row["stopped"] for row in _replica_stats(ray_studio).values())
        if stopped:
            break
        time.sleep(0.1)
    assert stopped == 1
    assert ray_studio.generate(request("shoes", seed=4)).images  # both replicas take work again


def test_a_replica_killed_mid_generation_still_delivers(ray_studio, tiny_studio):
    """Last in the module: Serve starts a new replica in the background."""
    wanted = request("upper_body_clothes", "shoes", seed=5, steps=KILL_STEPS)

    def kill_the_running_replica() -> None:
        os.kill(next(iter(ray_studio.running_pids)), signal.SIGKILL)

    recorder = Recorder(at_step=1, action=kill_the_running_replica)
    result = ray_studio.generate(wanted, progress=recorder)
    assert recorder.fired.is_set() and RETRY_NOTE in result.notes
    assert_same_pixels(result.images[0], tiny_studio.generate(wanted).images[0])
