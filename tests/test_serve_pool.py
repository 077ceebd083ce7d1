"""The local pool of device workers (`--devices cpu,cpu`): two worker processes on the tiny model.

Two generations overlap; a re-generation of a part set runs on the worker that cached it; a worker
killed mid-generation still delivers (run again elsewhere, with a note); outputs equal the in-process
studio's within the golden tolerance; Stop stops the worker's generation; bad input and a pool with no
worker each give one clear message. One pool for the module (starting a worker loads a model)."""

from __future__ import annotations

import os
import signal

import pytest

from app_fixtures import WEIGHTS_DIR
from serve_cases import KILL_STEPS, LONG_STEPS, Recorder, assert_overlapped, request, run_concurrently
from tolerances import assert_same_pixels
from parts2whole.core.errors import GenerationCancelled, Parts2WholeInputError
from parts2whole.serve import RETRY_NOTE, DevicePool, ServiceUnavailable
from parts2whole.studio import WEIGHTS_DIR_ENV, ResolvedWeights, Studio


@pytest.fixture(scope="module")
def pool():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WEIGHTS_DIR_ENV, str(WEIGHTS_DIR))  # the spawned workers inherit it
        pool = DevicePool(["cpu", "cpu"], "tiny", torch_threads=1)
        assert pool.wait_ready() == 2
        yield pool
        pool.close()


def _by_index(pool) -> dict[int, dict]:
    return {row["index"]: row for row in pool.stats()}


def test_two_generations_run_at_the_same_time(pool):
    results, recorders = run_concurrently(pool, [request("face", steps=LONG_STEPS),
                                                 request("upper_body_clothes", steps=LONG_STEPS)])
    assert_overlapped(recorders)
    assert all(result.images[0].size == (64, 96) for result in results)
    assert [row["generations"] for row in pool.stats()] == [1, 1]  # one each: the least busy got the second


def test_same_part_set_runs_on_the_worker_that_cached_it(pool):
    before = _by_index(pool)
    first = pool.generate(request("face", "shoes", seed=1))
    second = pool.generate(request("face", "shoes", seed=2))  # a new seed: same parts, same encoding
    after = _by_index(pool)
    grew = [index for index in after if after[index]["generations"] > before[index]["generations"]]
    assert len(grew) == 1, "both generations ran on one worker"
    index = grew[0]
    assert after[index]["generations"] - before[index]["generations"] == 2
    assert after[index]["cache_hits"] - before[index]["cache_hits"] == 1
    assert not first.reused_references and second.reused_references


def test_outputs_equal_the_single_process_studio(pool, tiny_studio):
    wanted = request("face", "lower_body_clothes", seed=11)
    direct = tiny_studio.generate(wanted)
    pooled = pool.generate(wanted)
    assert pooled.request.seed == direct.request.seed == 11
    assert_same_pixels(pooled.images[0], direct.images[0])


def test_stop_stops_the_workers_generation(pool):
    stop = Recorder(at_step=2, action=lambda: None)
    with pytest.raises(GenerationCancelled):
        pool.generate(request("face", seed=3, steps=150), progress=stop, cancelled=stop.fired.is_set)
    assert max(stop.steps) < 150  # it stopped early (the answer above came only once the worker stopped)
    assert pool.generate(request("face", seed=4)).images  # and the worker is free again


def test_bad_input_is_refused_before_any_worker(pool):
    before = [row["generations"] for row in pool.stats()]
    with pytest.raises(Parts2WholeInputError):
        pool.generate(request("face", steps=0))
    assert [row["generations"] for row in pool.stats()] == before


def test_a_worker_killed_mid_generation_still_delivers(pool, tiny_studio):
    """Last in the module: the killed worker restarts (loading a model) while the other serves."""
    wanted = request("upper_body_clothes", "shoes", seed=5, steps=KILL_STEPS)

    def kill_the_busy_worker() -> None:
        busy = [row for row in pool.stats() if row["busy"] and row["alive"]]
        os.kill(busy[0]["pid"], signal.SIGKILL)

    recorder = Recorder(at_step=1, action=kill_the_busy_worker)
    result = pool.generate(wanted, progress=recorder)
    assert recorder.fired.is_set() and pool.restarts == 1
    assert RETRY_NOTE in result.notes
    assert_same_pixels(result.images[0], tiny_studio.generate(wanted).images[0])


def test_no_worker_is_one_clear_message(monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(WEIGHTS_DIR))
    missing = ResolvedWeights(path="/nonexistent/checkpoint", name="missing")
    local = Studio(resolver=lambda spec: missing, device="cpu")
    with DevicePool(["cpu"], local=local, torch_threads=1) as broken:
        assert broken.wait_ready() == 0
        with pytest.raises(ServiceUnavailable, match="No device worker is running"):
            broken.generate(request("face"))


def test_an_edit_runs_on_a_worker_like_in_process(pool, tiny_studio):
    """`Studio.edit` is forwarded like `generate`: same pixels as the in-process studio, at the source's size."""
    from test_edit_studio import SETTINGS, SIZE, StubAnalysis, _noise  # the edit tests' stub parser and photo
    from parts2whole.studio.edit_sources import prepare_edit

    wanted = prepare_edit(StubAnalysis(), _noise(SIZE[1], SIZE[0], 0), new_parts={"shoes": _noise(40, 56, 1)},
                          **SETTINGS)
    pooled = pool.edit(wanted)
    assert pooled.images[0].size == SIZE and pooled.parameters["mode"] == "edit"
    assert_same_pixels(pooled.images[0], tiny_studio.edit(wanted).images[0])
