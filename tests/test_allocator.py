"""The CPU allocator tuning: freed blocks are reused instead of being faulted in afresh, once per process,
and the opt-out environment variable leaves the C library alone."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from parts2whole.model.allocator import KEEP_MALLOC_DEFAULTS_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Runs a small conv net (tensors of a few MB allocated and freed layer after layer) after one warm-up call, and reports the minor page faults of the measured rounds.
CHURN_SCRIPT = """
import json, resource, sys
import torch
sys.path.insert(0, sys.argv[1])
from parts2whole.model.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator()
again = tune_cpu_allocator()
net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(c, c2, 3, padding=1), torch.nn.GroupNorm(4, c2), torch.nn.SiLU())
                            for c, c2 in [(3, 32), (32, 64), (64, 64), (64, 32), (32, 4)]]).eval()
x = torch.randn(2, 3, 96, 96)
def churn():
    with torch.no_grad():
        net(x)
churn()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    churn()
print(json.dumps({"tuned": tuned, "again": again,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start}))
"""


def run_churn(env_overrides: dict[str, str]) -> dict:
    import os

    env = {key: value for key, value in os.environ.items() if key != KEEP_MALLOC_DEFAULTS_ENV} | env_overrides
    result = subprocess.run([sys.executable, "-c", CHURN_SCRIPT, str(REPO_ROOT)], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning applies to glibc only")
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    tuned = run_churn({})
    default = run_churn({KEEP_MALLOC_DEFAULTS_ENV: "1"})
    assert tuned["tuned"] and tuned["again"]
    assert not default["tuned"]
    assert tuned["faults"] * 2 < default["faults"], (tuned, default)


def test_building_a_pipeline_tunes_the_allocator(tiny_pipe):
    from parts2whole.model import allocator

    assert allocator._tuned is (platform.libc_ver()[0] == "glibc")
