"""The choices the app offers and how much it runs at once: output sizes, speed presets, queue limits."""

from __future__ import annotations

import gradio as gr

from parts2whole.studio import DEFAULT_SCHEDULER, FAST_SCHEDULER, FAST_STEPS

#: Queue: one generation at a time per process (one GPU), a bounded waiting line.
GPU_CONCURRENCY = 1
#: Preprocessing (automatic masks, background removal, pose from a photo) runs beside generation, two at a
#: time; clicks only run SAM's small decoder once the picture is encoded, so more of them run at once.
PREPROCESS_CONCURRENCY = 2
CLICK_CONCURRENCY = 4
MAX_QUEUE_SIZE = 32

#: Output sizes offered (height x width, multiples of 8). The first matching default is pre-selected.
SIZE_PRESETS = {
    "768 × 512 · portrait (default)": (768, 512),
    "1024 × 768 · large portrait": (1024, 768),
    "512 × 512 · square": (512, 512),
    "512 × 384 · small portrait": (512, 384),
    "384 × 256 · quick preview": (384, 256),
    "192 × 128 · thumbnail": (192, 128),
}
DEFAULT_SIZE = "768 × 512 · portrait (default)"
#: With the tiny random model, outputs are noise anyway: start small so a click answers in seconds.
TINY_DEFAULT_SIZE = "192 × 128 · thumbnail"
TINY_DEFAULT_STEPS = 10

#: Speed presets above Advanced settings: value -> (sampler, steps or None for the app's default steps).
#: "fast" is DPM-Solver++ 2M at 20 steps; "default" is the official sampler (DDIM).
PRESET_DEFAULT, PRESET_FAST = "default", "fast"
SPEED_PRESETS = {PRESET_DEFAULT: (DEFAULT_SCHEDULER, None), PRESET_FAST: (FAST_SCHEDULER, FAST_STEPS)}


def preset_values(preset: str, default_steps: int) -> tuple[str, int]:
    """(sampler, steps) a speed preset stands for."""
    sampler, preset_steps = SPEED_PRESETS[preset]
    return sampler, preset_steps or default_steps


def matching_preset(sampler: str, steps, default_steps: int) -> str | None:
    """The preset that (sampler, steps) is, or None once someone set them by hand to something else."""
    for preset in SPEED_PRESETS:
        if preset_values(preset, default_steps) == (sampler, int(steps or 0)):
            return preset
    return None


def wire_speed_preset(preset: gr.Radio, scheduler: gr.Dropdown, steps: gr.Slider, default_steps: int) -> None:
    """Picking a preset sets the sampler and steps; changing either by hand selects the preset they match."""
    preset.input(lambda value: preset_values(value, default_steps), preset, [scheduler, steps],
                 api_visibility="private", queue=False, show_progress="hidden")
    for control in (scheduler, steps):
        control.input(lambda sampler, count: matching_preset(sampler, count, default_steps), [scheduler, steps],
                      preset, api_visibility="private", queue=False, show_progress="hidden")
