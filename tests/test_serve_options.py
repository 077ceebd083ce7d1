"""Serving options without starting anything: which devices, the router's choices, replica options, the
login and its warning, and the Gradio queue running one generation per device. Cheap: no model loads."""

from __future__ import annotations

import dataclasses

import pytest

from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.serve import MAX_PART_SETS_PER_WORKER, AffinityRouter, part_set_key, parse_devices
from parts2whole.serve import devices as devices_module
from serve_cases import request


def test_devices_from_the_option_the_environment_or_all(monkeypatch):
    monkeypatch.delenv("P2W_DEVICES", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert parse_devices(None) is None  # nothing asked: one in-process studio
    assert parse_devices("cuda:0, cuda:2") == ["cuda:0", "cuda:2"]
    assert parse_devices("cpu,cpu") == ["cpu", "cpu"]
    monkeypatch.setenv("P2W_DEVICES", "cuda:1")
    assert parse_devices(None) == ["cuda:1"] and parse_devices("cpu") == ["cpu"]  # the option wins
    monkeypatch.setattr(devices_module, "visible_gpus", lambda: 3)
    assert parse_devices("all") == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(devices_module, "visible_gpus", lambda: 0)
    assert parse_devices("all") == ["cpu"]
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert parse_devices("all") is None  # ZeroGPU attaches a GPU per call: no pool


@pytest.mark.parametrize("spec", ["gpu0", "cuda:x", "cpu:1", ",", "tpu"])
def test_bad_devices_are_one_clear_message(spec, monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    with pytest.raises(Parts2WholeInputError, match="--devices"):
        parse_devices(spec)


def test_part_set_key_ignores_seed_and_prompt_but_not_parts_or_size():
    base = part_set_key(request("face", "shoes", seed=1).validated())
    assert part_set_key(request("face", "shoes", seed=9).validated()) == base
    assert part_set_key(request("face", seed=1).validated()) != base
    resized = request("face", "shoes", seed=1)
    assert part_set_key(dataclasses.replace(resized, height=192, width=128).validated()) != base


def test_router_prefers_the_warm_worker_up_to_one_request_behind():
    router = AffinityRouter(2)
    first = router.pick("a", [0, 1])
    router.done(first)
    assert router.pick("a", [0, 1]) == first  # warm and idle
    assert router.pick("a", [0, 1]) == first  # warm, one request behind the idle one: still warm
    other = router.pick("a", [0, 1])  # two behind: a popular part set spills to the other worker
    assert other != first
    router.done(first), router.done(first), router.done(other)
    assert router.pick("b", [1 - first]) == 1 - first  # only one usable
    assert router.pick("c", []) is None


def test_router_forgets_least_recently_used_part_sets_and_restarted_workers():
    router = AffinityRouter(1, capacity=2)
    for key in ("a", "b", "c"):
        router.done(router.pick(key, [0]))
    assert list(router.keys[0]) == ["b", "c"]
    router.forget(0)
    assert not router.keys[0] and MAX_PART_SETS_PER_WORKER >= 1


def test_without_affinity_requests_take_turns():
    router = AffinityRouter(2, affinity=False)
    picks = []
    for _ in range(4):
        picks.append(router.pick("a", [0, 1]))
        router.done(picks[-1])
    assert picks == [0, 1, 0, 1]


def test_replica_options_one_gpu_each_or_cpu_replicas_and_autoscaling(monkeypatch):
    from parts2whole.serve.ray_client import replica_options  # imports no Ray until a studio starts

    gpu = replica_options({"GPU": 4, "CPU": 32}, None, None, None)
    assert gpu["num_replicas"] == 4 and gpu["ray_actor_options"]["num_gpus"] == 1
    scaled = replica_options({"GPU": 4, "CPU": 32}, None, 1, 8)
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8}
    cpu = replica_options({"CPU": 2}, "cpu", 2, None)
    assert cpu["num_replicas"] == 2 and cpu["ray_actor_options"]["num_cpus"] == 1
    assert "PYTHONPATH" in cpu["ray_actor_options"]["runtime_env"]["env_vars"]


def test_auth_and_the_warning_for_serving_past_localhost(monkeypatch):
    from parts2whole.ui.launch import exposure_warning, parse_auth

    monkeypatch.delenv("P2W_AUTH", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert parse_auth(None) is None
    assert parse_auth("ann:se:cret") == ("ann", "se:cret")
    monkeypatch.setenv("P2W_AUTH", "bob:pw")
    assert parse_auth(None) == ("bob", "pw")
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_auth(bad)
    assert exposure_warning("127.0.0.1", False, None) is None
    assert "--auth" in exposure_warning("0.0.0.0", False, None)
    assert "--share" in exposure_warning("127.0.0.1", True, None)
    assert exposure_warning("0.0.0.0", True, ("a", "b")) is None


def test_app_refuses_a_malformed_login_and_ray_options_without_ray(capsys):
    import app  # the entry point's option parsing only

    with pytest.raises(SystemExit) as exited:
        app.parse_args(["--auth", "no-password"])
    assert exited.value.code == 2 and "USER:PASSWORD" in capsys.readouterr().err
    from parts2whole.serve import options

    with pytest.raises(Parts2WholeInputError, match="--engine ray"):
        options.build_studio(app.parse_args(["--ray-address", "auto"]))
    with pytest.raises(Parts2WholeInputError, match="one replica per GPU"):
        options.build_studio(app.parse_args(["--engine", "ray", "--devices", "all"]))


def test_the_gpu_queue_runs_one_generation_per_device():
    import gradio as gr

    from parts2whole.ui.launch import GPU_QUEUE, queue

    with gr.Blocks() as demo:
        button, text = gr.Button(), gr.Textbox()
        button.click(lambda: "x", None, text, concurrency_limit=1, concurrency_id=GPU_QUEUE)
        button.click(lambda: "y", None, text, concurrency_limit=4, concurrency_id="preprocess")
    queue(demo, gpu_concurrency=3)
    limits = {fn.concurrency_id: fn.concurrency_limit for fn in demo.fns.values()}
    assert limits == {GPU_QUEUE: 3, "preprocess": 4}
