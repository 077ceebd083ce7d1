"""A manifest line with a `source` is an edit: its keys mirror `python -m parts2whole edit` (`source`,
`change`, `region`, `strength`, the new parts and masks by the `/generate` names, an optional `pose`
aligned with the source, the settings); what it leaves out is taken from the source, as the CLI does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import studio
from ..studio.edit_sources import EditFiles, ServiceAnalysis, prepare_edit
from .manifest import MASK_KEYS, PART_KEYS, ManifestLine, resolve_path

#: Settings keys -> `EditRequest` fields (the manifest and the CLI say "guidance").
SETTING_FIELDS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "steps": "steps",
                  "guidance": "guidance_scale", "height": "height", "width": "width", "num_images": "num_images",
                  "fusion_blocks": "fusion_blocks", "scheduler": "scheduler", "strength": "strength"}


def is_edit_line(line: ManifestLine) -> bool:
    return "source" in line.values


def run_edit_line(editor: studio.Studio, analysis: ServiceAnalysis, line: ManifestLine,
                  manifest_dir: Path) -> tuple[studio.GenerationResult, dict[str, Any]]:
    """Edit one line's source; (the result, the input files it was made from, for its JSON)."""
    values = line.values
    path = lambda key: str(resolve_path(values[key], manifest_dir))  # noqa: E731
    files = EditFiles(source=path("source"),
                      parts={label: path(key) for key, label in PART_KEYS.items() if key in values},
                      masks={label: path(key) for key, label in MASK_KEYS.items() if key in values},
                      region=path("region") if "region" in values else None,
                      pose=path("pose") if "pose" in values else None)
    settings = {field: values[key] for key, field in SETTING_FIELDS.items() if key in values}
    request = prepare_edit(analysis, change=values.get("change"), **files.load(), **settings)
    return editor.edit(request), files.files()
