"""Loading a model patches no process-global state (issue: model loads raced each other).

`accelerate.init_empty_weights` and the libraries' `from_pretrained` patch `nn.Module.register_parameter`,
`torch.nn.init` and the default dtype for every thread while they build. Here one thread loads the
pipeline again and again (float32 and bfloat16) while other threads keep building ordinary torch modules
and each preprocessing model; none of them may ever get a meta, uninitialised or wrongly typed tensor.
"""

from __future__ import annotations

import itertools
import math
import threading

import pytest
import torch

from parts2whole import Parts2WholePipeline
from preprocess.parsing import HumanParser
from preprocess.tiny import ensure_tiny_preprocessing, load_tiny_sam, tiny_segformer

#: Pipeline loads in the loading thread (alternating dtypes: a leaked default dtype shows up elsewhere).
LOADS = 4
LOAD_DTYPES = (torch.float32, torch.bfloat16)
PIPELINE_PARTS = ("unet", "reference_unet", "pose_guider", "vae", "text_encoder", "image_encoder")
#: A layer whose initialisation was skipped keeps torch.empty's garbage or zeros: its spread falls far
#: below kaiming-uniform's bound / sqrt(3) (or its values leave the bound).
INIT_SPREAD_FRACTION = 0.5


def tensor_problems(module: torch.nn.Module, what: str, dtype: torch.dtype = torch.float32) -> list[str]:
    problems = []
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        if tensor.is_meta:
            problems.append(f"{what}: {name} is on the meta device")
        elif tensor.is_floating_point() and tensor.dtype != dtype:
            problems.append(f"{what}: {name} is {tensor.dtype}, not {dtype}")
    return problems


def init_problems(layer: torch.nn.Linear, what: str) -> list[str]:
    """nn.Linear's own initialisation ran: uniform within 1/sqrt(fan_in) with the matching spread."""
    weight = layer.weight.detach()
    if weight.is_meta:
        return [f"{what}: weight is on the meta device"]
    bound = 1 / math.sqrt(layer.in_features)
    spread = weight.float().std().item()
    if weight.abs().max().item() > bound * 1.001 or spread < INIT_SPREAD_FRACTION * bound / math.sqrt(3):
        return [f"{what}: weight was not initialised (max {weight.abs().max().item():.3g}, std {spread:.3g})"]
    return []


@pytest.fixture(scope="module")
def tiny_preprocess(tmp_path_factory):
    return ensure_tiny_preprocessing(tmp_path_factory.mktemp("tiny-preprocess") / "models")


def test_models_built_in_other_threads_while_the_pipeline_loads_are_whole(tiny_checkpoint, tiny_preprocess):
    done = threading.Event()
    problems: list[str] = []
    rounds = {"torch modules": 0, "Segment Anything": 0, "human parser": 0, "random SegFormer": 0}
    loads: list[str] = []

    def load_pipelines():
        try:
            for index in range(LOADS):
                dtype = LOAD_DTYPES[index % len(LOAD_DTYPES)]
                pipe = Parts2WholePipeline.from_pretrained(tiny_checkpoint, torch_dtype=dtype)
                for part in PIPELINE_PARTS:
                    problems.extend(tensor_problems(getattr(pipe, part), f"pipeline load {index} {part}", dtype))
                loads.append(str(dtype))
        except Exception as error:  # noqa: BLE001 - reported by the assertions below
            problems.append(f"pipeline load failed: {type(error).__name__}: {error}")
        finally:
            done.set()

    def keep_building(kind, build):
        # At least one round each, then until the loads are over.
        while True:
            try:
                problems.extend(build())
            except Exception as error:  # noqa: BLE001
                problems.append(f"{kind} failed: {type(error).__name__}: {error}")
            rounds[kind] += 1
            if done.is_set():
                return

    def torch_modules():
        model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Conv2d(3, 8, 3), torch.nn.LayerNorm(8))
        return tensor_problems(model, "torch modules") + init_problems(model[0], "torch modules")

    def sam():
        return tensor_problems(load_tiny_sam(tiny_preprocess.sam).sam, "Segment Anything")

    def parser():
        return tensor_problems(HumanParser(tiny_preprocess.parser).model, "human parser")

    def random_segformer():
        return tensor_problems(tiny_segformer(), "random SegFormer")

    builders = [threading.Thread(target=keep_building, args=(kind, build), daemon=True)
                for kind, build in (("torch modules", torch_modules), ("Segment Anything", sam),
                                    ("human parser", parser), ("random SegFormer", random_segformer))]
    loader = threading.Thread(target=load_pipelines, daemon=True)
    for thread in (loader, *builders):
        thread.start()
    for thread in (loader, *builders):
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in (loader, *builders)), "a thread did not finish"
    assert not problems, problems[:10]
    assert len(loads) == LOADS
    assert all(count >= 1 for count in rounds.values()), rounds
    print(f"{len(loads)} pipeline loads; built meanwhile: {rounds}")
    assert torch.get_default_dtype() == torch.float32
