"""The Gradio app: the studio's web front door. Only `app.py` (and tests) import this package.

Modules, one job each: `theme` (looks and texts), `settings` (sizes, speed presets, queue limits),
`feedback` (errors as one line), `uploads` (each upload decoded once per user), `masks` (mask previews
and the brush), `slots` (a part slot), `tools` (automatic masks, clicks, background removal), `pose` (the
Pose slot), `galleries` (examples and the pose gallery), `generate` (Generate and what follows it),
`bundle` (the download), `layout` (the page), `events` (its wiring), `demo` (the whole UI around a
studio) and `launch` (serving it).
"""

from __future__ import annotations

from .demo import build_demo
from .launch import launch, launch_kwargs, queue

__all__ = ["build_demo", "launch", "launch_kwargs", "queue"]
