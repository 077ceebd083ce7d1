"""Samplers by name: `ddim` (the official one) and the diffusers solvers people pick in other demos.

Data flow: a name from the API, the studio, the CLI or the app -> `canonical_scheduler_name` (checked,
with a message listing the choices) -> `build_scheduler(name, config)`, called by the pipeline once per
generation with the checkpoint's scheduler config. Every entry is a diffusers scheduler class built
`from_config` of that config, so all of them share its noise schedule: the released checkpoint's is
`beta_schedule="linear"` (beta 0.00085 -> 0.012, "leading" timesteps with steps_offset 1), which the
model was trained with; it is kept as it is, never switched to SD's `scaled_linear`. Each entry's
overrides set only the knobs that make it that sampler (and switch off the ones another entry turns on,
so a config that already carries, say, Karras sigmas cannot leak into `dpmpp_2m`).

Nothing here holds state: the pipeline builds a fresh scheduler per call (multistep solvers keep the
previous model outputs on the instance), so generations with different samplers never share one.
Importing this module does not import diffusers (the studio and the CLI list the names cheaply).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import Parts2WholeInputError

#: The official sampler, and what every front door uses unless told otherwise.
DEFAULT_SCHEDULER = "ddim"
#: The app's "Fast" preset: DPM-Solver++ 2M at 20 steps, what SD-family demos offer for a quick image
#: (DDIM is run at 30-50).
FAST_SCHEDULER = "dpmpp_2m"
FAST_STEPS = 20
#: DPM-Solver++ (the data-prediction form, what "DPM++" means in other tools), second order: "2M".
DPMPP_ALGORITHM = "dpmsolver++"
MULTISTEP_ORDER = 2


@dataclass(frozen=True)
class SchedulerChoice:
    """One sampler: the diffusers class (by name, imported when built) and its overrides of the config."""

    name: str
    label: str  # what the app shows
    class_name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""


_CHOICES = (
    SchedulerChoice("ddim", "DDIM (official)", "DDIMScheduler", {},
                    "the sampler the model was released with (deterministic; 30-50 steps)"),
    SchedulerChoice("dpmpp_2m", "DPM-Solver++ 2M", "DPMSolverMultistepScheduler",
                    {"algorithm_type": DPMPP_ALGORITHM, "solver_order": MULTISTEP_ORDER, "use_karras_sigmas": False},
                    "deterministic; SD-family models are usually run at 20-25 steps with it"),
    SchedulerChoice("dpmpp_2m_karras", "DPM-Solver++ 2M Karras", "DPMSolverMultistepScheduler",
                    {"algorithm_type": DPMPP_ALGORITHM, "solver_order": MULTISTEP_ORDER, "use_karras_sigmas": True},
                    "the same solver on Karras et al.'s noise levels (denser near the end)"),
    SchedulerChoice("unipc", "UniPC", "UniPCMultistepScheduler",
                    {"solver_order": MULTISTEP_ORDER, "use_karras_sigmas": False},
                    "predictor-corrector; usually run at 15-25 steps"),
    SchedulerChoice("euler_a", "Euler ancestral", "EulerAncestralDiscreteScheduler", {},
                    "adds fresh noise every step (drawn from the seed): more varied, does not converge"),
)
#: name -> choice, in the order the app and --help list them.
SCHEDULERS: dict[str, SchedulerChoice] = {choice.name: choice for choice in _CHOICES}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


def canonical_scheduler_name(name: Any) -> str:
    """"DPMPP-2M" -> "dpmpp_2m"; anything unknown -> Parts2WholeInputError listing the choices."""
    if isinstance(name, str):
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        if key in SCHEDULERS:
            return key
    raise Parts2WholeInputError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULER_NAMES)}.")


def build_scheduler(name: str, config: Mapping[str, Any]):
    """A new scheduler `name`, built from `config` (the checkpoint's) with the entry's overrides."""
    import diffusers  # heavy: imported on first use, keeps importing this package light

    choice = SCHEDULERS[canonical_scheduler_name(name)]
    return getattr(diffusers, choice.class_name).from_config(dict(config), **choice.overrides)


def step_kwargs(scheduler, generator=None, eta: float = 0.0) -> dict[str, Any]:
    """The keyword arguments `scheduler.step` takes besides the tensors: `eta` for DDIM, the generator for
    the samplers that draw noise (diffusers' `prepare_extra_step_kwargs` convention)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def describe() -> str:
    """One line per sampler, for --help and the README."""
    return "\n".join(f"{choice.name:<16} {choice.label}: {choice.note}" for choice in _CHOICES)


def check_eta(eta: Any) -> float:
    """DDIM's eta: 0 (official, deterministic) to 1 (as much fresh noise per step as DDPM); the others ignore it."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= float(eta) <= 1.0:
        raise Parts2WholeInputError(f"eta must be a number from 0 to 1, got {eta!r}.")
    return float(eta)
