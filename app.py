"""Parts2Whole studio: the web app (Gradio). UI only; the model lives in `parts2whole.studio`.

Run `python app.py` (or `make run`) and open http://127.0.0.1:7860. Options: `--weights` (Hub id, folder
or "tiny"), `--share` for a public link, `--host`/`--port` (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
Every event people may script has an `api_name`, so `gradio_client` can call `/generate`, and the
preprocessing tools: `/<part>_auto_mask`, `/<part>_click`, `/<part>_undo_click`, `/<part>_remove_background`
(part = face, hair_or_headwear, upper_body_clothes, ...), `/pose_from_photo` (the kind of map the model reads),
`/pose_densepose_from_photo`, `/pose_openpose_from_photo`, `/pose_upload`, `/pose_kind`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

if os.environ.get("SPACES_ZERO_GPU"):  # Hugging Face ZeroGPU: `spaces` must be imported before torch uses CUDA
    import spaces  # noqa: F401

import gradio as gr
from PIL import Image, ImageChops

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module
from parts2whole.core.errors import CheckpointError, GenerationCancelled, Parts2WholeInputError
from parts2whole.core.labels import PART_LABELS, UI_SLOT_NAMES
from parts2whole.studio.preprocessing import BOX, EXCLUDE, INCLUDE, PreprocessingService
from parts2whole.model.schedulers import DEFAULT_SCHEDULER, FAST_SCHEDULER, FAST_STEPS, SCHEDULERS
from parts2whole.model.validation import MAX_IMAGE_PIXELS
from preprocess.images import load_image, load_mask

logger = logging.getLogger("parts2whole.app")

APP_TITLE = "Parts2Whole studio"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
#: Bundles older than this are deleted when a new one is written (they are also in Gradio's cache).
BUNDLE_MAX_AGE_S = 3600
BUNDLE_ROOT = Path(tempfile.gettempdir()) / "parts2whole-bundles"
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

#: Brush used to paint masks: a see-through magenta, so the part stays visible under it.
MASK_PAINT_COLOUR = "#ff2d95"
MASK_PAINT_OPACITY = 0.55
BRUSH_ADDS = "Brush adds to the used area"
BRUSH_REMOVES = "Brush removes from it"
MASK_THRESHOLD = 127
#: Longest side of mask previews and of the brush canvas, in pixels.
PREVIEW_MAX_SIDE = 768
#: Pose maps made from photos are at least this long (the pipeline scales them to the output).
POSE_MAP_MIN_SIDE = 768
#: While the photo examples are being fetched, each open page asks every this many seconds whether they are ready.
EXAMPLES_POLL_S = 3.0
GROUND_TRUTH_LABEL = "The real person · dataset photo (ground truth, not generated)"

CSS = """
.slot-card { border-radius: 12px; }
.slot-card .mask-preview img { object-fit: contain; }
/* The "Used area" label sits above the picture, not over it: every pixel can be clicked. */
.slot-card .mask-preview { height: auto !important; }
.slot-card .mask-preview [data-testid="block-label"] { position: relative; top: 0; left: 0; margin-bottom: 4px; }
.slot-card .mask-preview .image-container { height: 190px; }
#tiny-model-banner { background: #fff4d6; border: 1px solid #e8c15a; border-radius: 10px; padding: 10px 14px; }
#tiny-model-banner p { margin: 0; color: #5b4300; }
#generate-button { min-height: 52px; font-size: 1.1em; }
#run-status p { margin: 0; }
.brush-hint p { margin: 0; font-size: 0.9em; }
.mask-message p, #pose-kind p { margin: 0; font-size: 0.9em; }
#examples-note p { margin: 0; font-size: 0.88em; color: #555; }
.click-mode { padding-top: 2px !important; padding-bottom: 2px !important; }
.click-mode .wrap { gap: 4px !important; }
.click-mode label { padding: 2px 8px !important; font-size: 0.88em; }
"""

INTRO = (
    f"# {APP_TITLE}\n"
    "Upload reference pictures of a person's parts (each optional, at least one) and a pose map, write a prompt, "
    "then press Generate. Under each part you see the area the model will use (found automatically): faded "
    "pixels are ignored. Click the picture to add to it or remove from it; *Edit mask* has a brush, "
    "background removal and more."
)

#: Click modes on a part's picture: (shown, value). The value is what `/<part>_click` takes as `mode`.
CLICK_MODES = [("+ add", "add"), ("− remove", "remove"), ("▭ box", "box")]
CLICK_MODE_VALUES = {"add": INCLUDE, "remove": EXCLUDE, "box": BOX}
POSE_HELP = ("Drop a **Pose map** here (a DensePose map, coloured body parts on black, is what the released model "
             "reads), or make one from a **photo** of someone in the pose you want: the map drawn is the kind the "
             "loaded model reads (DensePose; an OpenPose-style DWPose skeleton for a model fine-tuned on those).")

#: Names each upload field after its visible label (aria-label), so screen readers, and browser automation
#: such as `page.get_by_label("Face")`, find the right one. Gradio re-creates inputs, hence the observer.
LABEL_FILE_INPUTS_JS = """
() => {
  const name = () => document.querySelectorAll('input[type="file"]').forEach((input) => {
    const block = input.closest('.block');
    const title = block && block.querySelector('[data-testid="block-label"]');
    const text = title && title.textContent.trim();
    if (text && input.getAttribute('aria-label') !== text) input.setAttribute('aria-label', text);
  });
  new MutationObserver(name).observe(document.body, {subtree: true, childList: true});
  name();
}
"""


# ----------------------------------------------------------------------------------------- slots


@dataclasses.dataclass
class PartSlot:
    """The components of one appearance slot: the picture, the mask in use and the tools that change it."""

    label: str  # official part label, e.g. "upper body clothes"
    image: gr.Image  # the reference picture
    mask: gr.Image  # the mask in use (hidden; white = use); empty = the picture's transparency
    preview: gr.Image  # the picture with ignored pixels faded; clicks on it refine the mask
    editor: gr.ImageEditor  # paint on the mask with a brush (strokes are merged into `mask`)
    brush_mode: gr.Radio  # whether strokes add to or remove from the mask
    mask_upload: gr.UploadButton
    mask_reset: gr.Button
    click_mode: gr.Radio  # what a click on the preview does: add, remove, box corner
    message: gr.Markdown  # one line about the mask (not found, unsure, tiny model...)
    tools: gr.State  # per-user prompts of this slot: {"clicks": ClickState, "corner": (x, y) | None}
    auto_button: gr.Button
    background_button: gr.Button
    undo_button: gr.Button
    click_x: gr.Number  # hidden: the API's click position (the browser sends it with the select event)
    click_y: gr.Number
    click_api: gr.Button  # hidden: carries `/<part>_click` for gradio_client

    @property
    def key(self) -> str:
        return self.label.replace(" ", "_")


def _load_reference(path: str | None, label: str) -> Image.Image | None:
    return load_image(path, what=f"{UI_SLOT_NAMES[label].lower()} image") if path else None


def _display_size(image: Image.Image) -> Image.Image:
    """A copy no larger than PREVIEW_MAX_SIDE: previews and the brush canvas stay fast for big photos
    (strokes are scaled back to the full picture when they are merged into the mask)."""
    if max(image.size) <= PREVIEW_MAX_SIDE:
        return image
    shown = image.copy()
    shown.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.NEAREST if image.mode == "L" else Image.Resampling.LANCZOS)
    return shown


def _editor_value(overlay: Image.Image) -> dict:
    """The editor shows the current mask as the background (ignored pixels faded); strokes go on top."""
    return {"background": overlay, "layers": [], "composite": None}


def _strokes(editor_value: dict | None, size: tuple[int, int]) -> Image.Image | None:
    """Everything painted in the editor's layers as one L mask at `size`, or None when nothing is painted."""
    if not editor_value:
        return None
    painted = None
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        layer = layer if isinstance(layer, Image.Image) else Image.open(layer)
        alpha = layer.convert("RGBA").getchannel("A").resize(size, Image.Resampling.NEAREST)
        painted = alpha if painted is None else ImageChops.lighter(painted, alpha)
    if painted is None or painted.getextrema()[1] == 0:
        return None
    return painted.point(lambda value: 255 if value > 0 else 0)


def _preview_label(mask: Image.Image, source: str) -> str:
    return f"Used area {studio_module.mask_coverage(mask):.0%} · {source}"


def _slot_outputs(image: Image.Image | None, explicit_mask: Image.Image | None, source: str):
    """(mask, preview, editor) updates for a slot showing `image` with `explicit_mask` (None = alpha)."""
    if image is None:
        return None, gr.update(value=None, visible=False), None
    mask = explicit_mask if explicit_mask is not None else studio_module.default_mask(image)
    shown, shown_mask = _display_size(image), _display_size(mask)
    overlay = studio_module.overlay_mask(shown, shown_mask)
    preview = gr.update(value=overlay, visible=True, label=_preview_label(mask, source))
    return explicit_mask, preview, _editor_value(overlay)


def _default_source(image: Image.Image) -> str:
    return "transparency" if image.mode == "RGBA" else "whole picture"


def _user_error(error: Exception) -> gr.Error:
    return gr.Error(" ".join(str(error).split()), title="Please check the inputs", print_exception=False)


def make_slot_handlers(label: str):
    """Event handlers of one slot (plain functions of files and images: easy to test and to extend)."""

    def on_reference_change(image_path: str | None):
        try:
            image = _load_reference(image_path, label)
        except Parts2WholeInputError as error:
            raise _user_error(error) from None
        return _slot_outputs(image, None, _default_source(image) if image is not None else "")

    def on_mask_upload(mask_file, image_path: str | None):
        if not image_path:
            raise gr.Error(f"Upload the {UI_SLOT_NAMES[label].lower()} image first, then its mask.",
                           print_exception=False)
        try:
            image = _load_reference(image_path, label)
            loaded = load_mask(mask_file if isinstance(mask_file, str) else mask_file.name, image.size,
                               what=f"{UI_SLOT_NAMES[label].lower()} mask")
        except Parts2WholeInputError as error:
            raise _user_error(error) from None
        if loaded.note:
            gr.Info(loaded.note)
        return _slot_outputs(image, loaded.mask, "uploaded")

    def on_mask_painted(editor_value: dict | None, image_path: str | None, mask_path: str | None, mode: str):
        """Merge the strokes into the mask (add or remove), then show the result and clear the strokes."""
        if not image_path:
            return gr.skip(), gr.skip(), gr.skip()
        image = _load_reference(image_path, label)
        strokes = _strokes(editor_value, image.size)
        if strokes is None:
            return gr.skip(), gr.skip(), gr.skip()
        current = load_mask(mask_path, image.size).mask if mask_path else studio_module.default_mask(image)
        current = current.point(lambda value: 255 if value > MASK_THRESHOLD else 0)
        if mode == BRUSH_REMOVES:
            mask = ImageChops.subtract(current, strokes)
        else:
            mask = ImageChops.lighter(current, strokes)
        return _slot_outputs(image, mask, "painted")

    def on_mask_reset(image_path: str | None):
        return on_reference_change(image_path)

    return on_reference_change, on_mask_upload, on_mask_painted, on_mask_reset


#: Undo steps kept per slot (each holds one mask).
UNDO_STEPS = 10


def new_tool_state(clicks=None, mask: Image.Image | None = None, source: str = "") -> dict:
    """Per-user, per-slot tool state (kept in gr.State): SAM's click state, a pending box corner, the mask
    the tools last made (and its source), and the previous (mask, source, clicks) for Undo."""
    return {"clicks": clicks, "corner": None, "mask": mask, "source": source, "history": []}


def _has_transparency(image: Image.Image) -> bool:
    return image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255


def _friendly_errors(fn):
    """Tool handlers show one clear line (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (Parts2WholeInputError, CheckpointError) as error:
            raise _user_error(error) from None
        except Exception as error:  # a bug or an environment problem: log it, show one line
            logger.exception("%s failed", fn.__name__)
            raise gr.Error(f"That did not work ({type(error).__name__}): {' '.join(str(error).split())[:300]}",
                           print_exception=False) from None

    return wrapper


def make_tool_handlers(label: str, service: PreprocessingService):
    """Preprocessing handlers of one slot: automatic mask, clicks, undo, background removal.

    Each returns (mask, preview, editor, click mode, message, tool state): the mask in use, the picture
    with that mask (and the clicks) drawn, the brush canvas, the click-mode row, one line of text, and
    the per-user prompts.
    """
    name = UI_SLOT_NAMES[label].lower()

    def outputs(image: Image.Image, mask: Image.Image | None, source: str, tools: dict, message: str | None = None,
                notes: tuple[str, ...] = ()):
        tools.update(mask=mask, source=source)
        explicit, preview, editor = _slot_outputs(image, mask, source)
        clicks, corner = tools.get("clicks"), tools.get("corner")
        # Prompts are drawn once people click (automatic seeds and a cut-out's box stay out of sight until then).
        if clicks is not None and source in ("clicks", "box") or corner is not None:
            shown = preview["value"]
            preview["value"] = service.draw_prompts(shown, clicks, shown.width / image.width, corner)
        lines = [line for line in (message, *notes) if line]
        return (explicit, preview, editor, gr.update(visible=True), gr.update(value="  \n".join(lines)), tools)

    def empty():
        return (None, gr.update(value=None, visible=False), None, gr.update(visible=False, value="add"),
                gr.update(value=""), new_tool_state())

    def load(image_path: str | None) -> Image.Image | None:
        return _load_reference(image_path, label) if image_path else None

    def run_auto_mask(image: Image.Image):
        suggestion = service.auto_mask(image, label)
        service.prefetch_embedding(image)  # the first click then answers at once
        tools = new_tool_state(suggestion.clicks)
        message = suggestion.message
        if suggestion.source == "not found":
            message = message or f"No {name} found: click on it to select it."
        elif message is None:
            message = "Found automatically. Click the picture to fix it: + adds, − removes."
        return outputs(image, suggestion.mask, suggestion.source, tools, message,
                       (service.fallback_note("human parser", "Segment Anything", "DWPose"),))

    @_friendly_errors
    def on_uploaded(image_path: str | None):
        """After an upload: a cut-out keeps its transparency, anything else gets an automatic mask."""
        image = load(image_path)
        if image is None:
            return empty()
        if _has_transparency(image):
            tools = new_tool_state(service.start_state(image, studio_module.default_mask(image)))
            return outputs(image, None, "transparency", tools,
                           "Cut-out: its transparency is used. Click to refine, or try *Automatic mask*.")
        dataset_mask = examples_module.dataset_mask_path(image)  # a photo example: the dataset's own mask
        if dataset_mask:
            mask = load_mask(dataset_mask, image.size, what="dataset mask").mask
            tools = new_tool_state(service.start_state(image, mask.point(lambda v: 255 if v > MASK_THRESHOLD else 0)))
            return outputs(image, mask, "dataset mask", tools, "The dataset's own mask of this part. Click to refine it.")
        return run_auto_mask(image)

    @_friendly_errors
    def on_auto_mask(image_path: str | None):
        image = load(image_path)
        if image is None:
            raise gr.Error(f"Upload the {name} picture first.", print_exception=False)
        return run_auto_mask(image)

    def click(image_path: str | None, mode: str | None, tools: dict | None, x: float, y: float,
              mask_path: str | None = None):
        image = load(image_path)
        if image is None:
            raise gr.Error(f"Upload the {name} picture first, then click on it.", print_exception=False)
        tools = dict(tools or new_tool_state())
        clicks = tools.get("clicks")
        if clicks is not None and clicks.image_key != service.start_state(image).image_key:
            tools = new_tool_state()  # another picture: its clicks and undo steps do not apply
            clicks = None
        kind = CLICK_MODE_VALUES.get(mode or "add")
        if kind is None:
            raise gr.Error(f"Unknown click mode {mode!r}: use add, remove or box.", print_exception=False)
        suggestion = service.click(image, clicks, float(x), float(y), kind, tools.get("corner"))
        current = load_mask(mask_path, image.size).mask if mask_path else tools.get("mask")
        if suggestion is None:  # first corner of a box: show it, keep the mask as it is
            tools.update(clicks=clicks, corner=(float(x), float(y)))
            shown = outputs(image, current, tools.get("source") or "drawing a box", tools,
                            "Now click the opposite corner of the box.")
            return (gr.skip(), shown[1], gr.skip(), *shown[3:])
        history = [*tools.get("history", []), (current, tools.get("source") or _default_source(image), clicks)]
        tools.update(clicks=suggestion.clicks, corner=None, history=history[-UNDO_STEPS:])
        return outputs(image, suggestion.mask, suggestion.source, tools, None,
                       (service.fallback_note("Segment Anything"),))

    @_friendly_errors
    def on_click(image_path: str | None, mode: str | None, x: float, y: float, tools: dict | None):
        """A click at (x, y) in the picture's own pixels; `mode` is add, remove or box."""
        if x is None or y is None:
            raise gr.Error("Give the click position (x and y, in the picture's pixels).", print_exception=False)
        return click(image_path, mode, tools, x, y)

    @_friendly_errors
    def on_select(image_path: str | None, mask_path: str | None, mode: str | None, tools: dict | None,
                  evt: gr.SelectData):
        """A click on the preview, which may be a smaller copy of the picture: scale it back."""
        image = load(image_path)
        if image is None or not evt or evt.index is None:
            return (gr.skip(),) * 6
        x, y = evt.index[:2]
        shown = _display_size(image)
        scale = image.width / shown.width
        return click(image_path, mode, tools, x * scale, y * scale, mask_path)

    @_friendly_errors
    def on_undo(image_path: str | None, tools: dict | None):
        """Back to the mask before the last click (or forget a box's first corner)."""
        image = load(image_path)
        if image is None:
            return empty()
        tools = dict(tools or new_tool_state())
        if tools.get("corner") is not None:
            tools["corner"] = None
            mask = tools.get("mask")
            return outputs(image, mask, tools.get("source") or _default_source(image), tools)
        history = list(tools.get("history") or [])
        if not history:
            return (gr.skip(),) * 4 + (gr.update(value="No click to undo."), tools)
        mask, source, clicks = history.pop()
        tools.update(clicks=clicks, history=history)
        return outputs(image, mask, source, tools)

    @_friendly_errors
    def on_remove_background(image_path: str | None):
        """The picture without its background: the cut-out's alpha becomes the mask."""
        image = load(image_path)
        if image is None:
            raise gr.Error(f"Upload the {name} picture first.", print_exception=False)
        alpha = service.remove_background(image).getchannel("A")
        tools = new_tool_state(service.start_state(image, alpha.point(lambda v: 255 if v > MASK_THRESHOLD else 0)))
        return outputs(image, alpha, "background removed", tools, "Background removed: only the subject is used.",
                       (service.fallback_note("background remover"),))

    def on_reset():
        return new_tool_state(), gr.update(value="")

    return dict(uploaded=on_uploaded, auto_mask=on_auto_mask, click=on_click, select=on_select, undo=on_undo,
                remove_background=on_remove_background, reset=on_reset)


def build_slot(label: str) -> PartSlot:
    name = UI_SLOT_NAMES[label]
    key = label.replace(" ", "_")
    with gr.Column(elem_id=f"slot-{key}", elem_classes=["slot-card"], min_width=200):
        image = gr.Image(label=name, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                         height=220, elem_id=f"{key}-image", buttons=["fullscreen"])
        preview = gr.Image(label="Used area", interactive=False, height=190, visible=False, format="png",
                           elem_id=f"{key}-mask-preview", elem_classes=["mask-preview"], buttons=[])
        click_mode = gr.Radio(CLICK_MODES, value="add", label="Click mode", show_label=False, visible=False,
                              container=False,
                              elem_id=f"{key}-click-mode", elem_classes=["click-mode"])
        message = gr.Markdown("", label="Mask note", elem_id=f"{key}-mask-message", elem_classes=["mask-message"])
        mask = gr.Image(label=f"{name} mask", type="filepath", image_mode="L", visible=False, format="png",
                        elem_id=f"{key}-mask")
        tools = gr.State(new_tool_state())
        click_x = gr.Number(label="x", visible=False)
        click_y = gr.Number(label="y", visible=False)
        click_api = gr.Button(visible=False)
        with gr.Accordion("Edit mask", open=False, elem_id=f"{key}-mask-tools"):
            with gr.Row():
                auto_button = gr.Button("Automatic mask", size="sm", elem_id=f"{key}-auto-mask")
                background_button = gr.Button("Remove background", size="sm", elem_id=f"{key}-remove-background")
                undo_button = gr.Button("Undo click", size="sm", elem_id=f"{key}-undo-click")
            gr.Markdown("Paint over the picture: the used area updates after each stroke.",
                        elem_classes=["brush-hint"])
            editor = gr.ImageEditor(
                label="Brush", show_label=False, type="pil", image_mode="RGBA", sources=[],
                transforms=[], layers=False,
                brush=gr.Brush(colors=[(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY)],
                               default_color=(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY), color_mode="fixed"),
                format="png", height=260, elem_id=f"{key}-mask-editor", buttons=[])
            brush_mode = gr.Radio([BRUSH_ADDS, BRUSH_REMOVES], value=BRUSH_ADDS, show_label=False,
                                  elem_id=f"{key}-brush-mode")
            with gr.Row():
                mask_upload = gr.UploadButton("Upload mask", file_types=["image"], size="sm",
                                              elem_id=f"{key}-mask-upload")
                mask_reset = gr.Button("Reset mask", size="sm", elem_id=f"{key}-mask-reset")
    return PartSlot(label, image, mask, preview, editor, brush_mode, mask_upload, mask_reset, click_mode, message,
                    tools, auto_button, background_button, undo_button, click_x, click_y, click_api)


def wire_slot(slot: PartSlot, service: PreprocessingService | None = None) -> None:
    on_change, on_upload, on_painted, on_reset = make_slot_handlers(slot.label)
    outputs = [slot.mask, slot.preview, slot.editor]
    light = dict(concurrency_limit=None, show_progress="hidden")
    changed = slot.image.change(on_change, slot.image, outputs, api_name=f"{slot.key}_mask_preview", **light)
    slot.mask_upload.upload(on_upload, [slot.mask_upload, slot.image], outputs, api_name=f"{slot.key}_mask_upload",
                            **light)
    painted_inputs = [slot.editor, slot.image, slot.mask, slot.brush_mode]
    slot.editor.apply(on_painted, painted_inputs, outputs, api_visibility="private", **light)
    slot.editor.input(on_painted, painted_inputs, outputs, trigger_mode="always_last", api_visibility="private",
                      **light)
    slot.mask_reset.click(on_reset, slot.image, outputs, api_visibility="private", **light)
    if service is None:
        return

    tools = make_tool_handlers(slot.label, service)
    tool_outputs = outputs + [slot.click_mode, slot.message, slot.tools]
    heavy = dict(concurrency_limit=PREPROCESS_CONCURRENCY, concurrency_id="preprocess", show_progress="minimal",
                 show_progress_on=[slot.preview])
    clicks = dict(concurrency_limit=CLICK_CONCURRENCY, concurrency_id="clicks", show_progress="minimal",
                  show_progress_on=[slot.preview], trigger_mode="always_last")
    changed.success(tools["uploaded"], slot.image, tool_outputs, api_name=f"{slot.key}_uploaded", **heavy)
    slot.auto_button.click(tools["auto_mask"], slot.image, tool_outputs, api_name=f"{slot.key}_auto_mask", **heavy)
    slot.background_button.click(tools["remove_background"], slot.image, tool_outputs,
                                 api_name=f"{slot.key}_remove_background", **heavy)
    slot.preview.select(tools["select"], [slot.image, slot.mask, slot.click_mode, slot.tools], tool_outputs,
                        api_visibility="private", **clicks)
    slot.click_api.click(tools["click"], [slot.image, slot.click_mode, slot.click_x, slot.click_y, slot.tools],
                         tool_outputs, api_name=f"{slot.key}_click", **clicks)
    slot.undo_button.click(tools["undo"], [slot.image, slot.tools], tool_outputs, api_name=f"{slot.key}_undo_click",
                           **clicks)
    slot.mask_reset.click(tools["reset"], None, [slot.tools, slot.message], api_visibility="private", **light)


def new_pose_state() -> dict:
    """Per-user: how the current pose map was made (the kind, and for a map made from a photo how: the
    DensePose box, score and weights, or the DWPose keypoints), for the kind note and the bundle."""
    return {"from_photo": False, "map_key": None, "keypoints": None, "kind": None, "details": None}


def _pose_map_size(size: str | None) -> tuple[int, int]:
    """A pose map made from a photo matches the chosen output's shape, at least POSE_MAP_MIN_SIDE long."""
    height, width = SIZE_PRESETS.get(size or "", SIZE_PRESETS[DEFAULT_SIZE])
    scale = max(1.0, POSE_MAP_MIN_SIDE / max(height, width))
    return round(height * scale), round(width * scale)


def make_pose_handlers(service: PreprocessingService):
    """The Pose slot: say which kind of map it holds; turn a photo into the kind of map the model reads
    (a DensePose map for the released model, an OpenPose-style DWPose skeleton for an OpenPose checkpoint)."""
    from parts2whole.studio.preprocessing import POSE_TOOLS
    from preprocess.images import pixel_hash

    def kind_note(pose_map: Image.Image, from_photo: bool) -> dict:
        kind = service.structure_kind_of(pose_map)
        return gr.update(value=service.structure_note(kind, from_photo=from_photo), visible=True)

    def from_photo(photo: Image.Image, size: str | None, kind: str | None = None):
        made = service.pose_from_photo(photo, _pose_map_size(size), kind)
        state = {"from_photo": True, "map_key": pixel_hash(made.pose_map), "keypoints": made.keypoints,
                 "kind": made.kind, "details": made.details}
        tool = POSE_TOOLS[made.kind]
        preview = gr.update(value=made.preview, visible=True,
                            label=f"Detected pose ({tool}) · the map above is what the model gets")
        notes = [service.structure_note(made.kind, from_photo=True), made.note, service.fallback_note(tool)]
        return made.pose_map, preview, gr.update(value="  \n".join(n for n in notes if n), visible=True), state

    @_friendly_errors
    def on_pose_kind(pose_path: str | None, pose_state: dict | None):
        """Which kind of map the Pose slot holds, compared with what the model reads."""
        if not pose_path:
            return gr.update(value="", visible=False), gr.update(value=None, visible=False), new_pose_state()
        pose_map = load_image(pose_path, what="pose map")
        state = dict(pose_state or new_pose_state())
        if state.get("from_photo") and state.get("map_key") == pixel_hash(pose_map):
            note = service.structure_note(state.get("kind") or "openpose", from_photo=True)
            return gr.update(value=note, visible=True), gr.skip(), state
        dataset_note = _dataset_pose_note(pose_map)
        if dataset_note:
            return gr.update(value=dataset_note, visible=True), gr.update(value=None, visible=False), new_pose_state()
        return kind_note(pose_map, False), gr.update(value=None, visible=False), new_pose_state()

    @_friendly_errors
    def on_pose_upload(pose_path: str | None, size: str | None):
        """An upload into the Pose slot: a map is kept; a photo (not a map) becomes the kind of map the model
        reads (see `from_photo`)."""
        if not pose_path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        image = load_image(pose_path, what="pose picture")
        if service.structure_kind_of(image) != "unknown":
            return gr.skip(), gr.update(value=None, visible=False), kind_note(image, False), new_pose_state()
        return from_photo(image, size)

    def photo_handler(kind: str | None):
        what = {None: "the kind of pose map the loaded model reads", "densepose": "a DensePose map",
                "openpose": "an OpenPose-style DWPose skeleton map"}[kind]

        @_friendly_errors
        def on_pose_from_photo(photo, size: str | None = None):
            if not photo:
                raise gr.Error("Choose a photo of a person first.", print_exception=False)
            path = photo if isinstance(photo, str) else getattr(photo, "name", None) or photo.get("path")
            return from_photo(load_image(path, what="photo"), size, kind)

        on_pose_from_photo.__doc__ = (f"A photo of a person -> {what} (the most confident person for DensePose, "
                                      "everyone for DWPose), fitted to the output size, and a preview over the photo.")
        return on_pose_from_photo

    return dict(kind=on_pose_kind, upload=on_pose_upload, from_photo=photo_handler(None),
                densepose_from_photo=photo_handler("densepose"), openpose_from_photo=photo_handler("openpose"))


# ----------------------------------------------------------------------------------------- generation


def new_session() -> dict:
    """Per-user state (kept by Gradio per browser session, never shared): the last run's settings."""
    return {"runs": 0, "last_seed": None}


def _write_bundle(result: studio_module.GenerationResult, inputs: dict[str, str], mask_sources: dict[str, str],
                  extra_parameters: dict | None = None, extra_files: dict[str, bytes] | None = None) -> Path:
    """A zip with everything needed to reproduce the result: inputs, masks, pose map, parameters, outputs."""
    _remove_old_bundles()
    folder = BUNDLE_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    request = result.request
    path = folder / f"parts2whole-seed{request.seed}.zip"
    parameters = result.parameters | {"mask_sources": mask_sources, "original_files": inputs} | (extra_parameters or {})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for label, image in request.references.items():
            stem = label.replace(" ", "_")
            bundle.writestr(f"inputs/{stem}.png", studio_module.png_bytes(image))
            mask = request.masks.get(label)
            mask = studio_module.default_mask(image) if mask is None else mask
            bundle.writestr(f"masks/{stem}.png", studio_module.png_bytes(mask))
        bundle.writestr("inputs/pose.png", studio_module.png_bytes(request.structure))
        for name, data in (extra_files or {}).items():
            bundle.writestr(name, data)
        for index, image in enumerate(result.images):
            bundle.writestr(f"results/result_{index}.png", studio_module.png_bytes(image))
        bundle.writestr("parameters.json", studio_module.parameters_json(parameters))
        bundle.writestr("README.txt", _bundle_readme(request))
    return path


def _bundle_readme(request: studio_module.GenerationRequest) -> str:
    parts = " ".join(f"--{label.replace(' ', '-')} inputs/{label.replace(' ', '_')}.png "
                     f"--mask-{label.replace(' ', '-')} masks/{label.replace(' ', '_')}.png"
                     for label in request.references)
    return (
        "Made with the Parts2Whole studio. parameters.json holds every setting; to reproduce from this folder:\n\n"
        f"python -m parts2whole generate {parts} --pose inputs/pose.png --prompt {json.dumps(request.prompt)} "
        f"--negative-prompt {json.dumps(request.negative_prompt)} --seed {request.seed} --steps {request.steps} "
        f"--guidance {request.guidance_scale} --height {request.height} --width {request.width} "
        f"--num-images {request.num_images} --fusion-blocks {request.fusion_blocks} --scheduler {request.scheduler} "
        "-o results/again.png\n"
    )


def _remove_old_bundles() -> None:
    if not BUNDLE_ROOT.is_dir():
        return
    cutoff = time.time() - BUNDLE_MAX_AGE_S
    for folder in BUNDLE_ROOT.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _status_line(result: studio_module.GenerationResult, studio: studio_module.Studio) -> str:
    request = result.request
    reuse = " · reference encoding reused" if result.reused_references else ""
    count = f"{len(result.images)} images" if len(result.images) != 1 else "1 image"
    tiny = " · tiny random model" if studio.is_tiny else ""
    notes = "".join(f"  \nℹ️ {note}" for note in getattr(result, "notes", []))
    return (f"✓ **Done**: {count} in {result.seconds:.1f} s · seed **{request.seed}** · "
            f"{request.steps}/{request.steps} steps · {SCHEDULERS[request.scheduler].label} · "
            f"{request.height}×{request.width}{reuse}{tiny}{notes}")


def _cancel_check() -> Callable[[], bool]:
    """A function telling whether the Gradio event running this handler was cancelled (the Stop button,
    or the browser/client went away), so a generation stops at the next step and frees the model.
    Outside a queued Gradio event (tests, scripts) it always says no."""
    try:
        from gradio.context import LocalContext

        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        jobs = getattr(getattr(blocks, "_queue", None), "active_jobs", None)
    except Exception:  # noqa: BLE001 - another Gradio version: no cancellation, never a false one
        return lambda: False

    def find():
        for job in list(jobs or ()):
            for event in job or ():
                if getattr(event, "_id", None) == event_id:
                    return event
        return None

    if not event_id or jobs is None or find() is None:
        return lambda: False

    def cancelled() -> bool:
        event = find()
        return event is None or not getattr(event, "alive", True)

    return cancelled


def _pose_details(service: PreprocessingService | None, structure: Image.Image | None, pose_state: dict | None):
    """(parameters, files) the bundle gets about the pose map: its kind, the expected kind, how it was made
    (`pose_map`: kind, from_photo and, for a map made from a photo, the tool, weights, people found, and the
    DensePose box in photo pixels and its score), and DWPose keypoints."""
    if service is None or structure is None:
        return {}, {}
    from parts2whole.studio.preprocessing import POSE_TOOLS
    from preprocess.images import pixel_hash

    state = pose_state or {}
    from_photo = bool(state.get("from_photo")) and state.get("map_key") == pixel_hash(structure)
    kind = (state.get("kind") or "openpose") if from_photo else service.structure_kind_of(structure)
    parameters = {"structure_kind": kind,
                  "expected_structure_kind": service.expected_structure_kind(),
                  "pose_source": f"{POSE_TOOLS.get(kind, kind)} from a photo" if from_photo else "uploaded",
                  "pose_map": dict(state.get("details") or {"kind": kind}) if from_photo
                  else {"kind": kind, "from_photo": False}}
    files = {}
    if from_photo and state.get("keypoints"):
        files["inputs/pose_keypoints.json"] = (json.dumps(state["keypoints"]) + "\n").encode()
    return parameters, files


def make_generate(studio: studio_module.Studio, service: PreprocessingService | None = None):
    """The Generate handler, bound to a studio (explicit parameters, so the API documents each one)."""

    def generate(face=None, face_mask=None, hair_or_headwear=None, hair_or_headwear_mask=None,
                 upper_body_clothes=None, upper_body_clothes_mask=None, lower_body_clothes=None,
                 lower_body_clothes_mask=None, whole_body_clothes=None, whole_body_clothes_mask=None, shoes=None,
                 shoes_mask=None, pose=None, prompt="", negative_prompt="", seed=0,
                 randomize_seed=True, steps=studio_module.DEFAULT_STEPS, guidance=studio_module.DEFAULT_GUIDANCE,
                 size=DEFAULT_SIZE, num_images=1, fusion_blocks=studio_module.DEFAULT_FUSION_BLOCKS,
                 scheduler=DEFAULT_SCHEDULER, session=None, pose_state=None, progress=gr.Progress()):
        files = dict(zip(PART_LABELS, (face, hair_or_headwear, upper_body_clothes, lower_body_clothes,
                                       whole_body_clothes, shoes)))
        mask_files = dict(zip(PART_LABELS, (face_mask, hair_or_headwear_mask, upper_body_clothes_mask,
                                            lower_body_clothes_mask, whole_body_clothes_mask, shoes_mask)))
        session = dict(session or new_session())
        progress(0.0, desc=studio_module.STAGE_PREPROCESSING)
        try:
            references, masks, mask_sources = {}, {}, {}
            for label, path in files.items():
                if mask_files[label] and not path:
                    raise Parts2WholeInputError(f"There is a mask for '{UI_SLOT_NAMES[label]}' but no image for it; "
                                                "add the image or drop the mask.")
                if not path:
                    continue
                references[label] = _load_reference(path, label)
                if mask_files[label]:
                    masks[label] = load_mask(mask_files[label], references[label].size,
                                             what=f"{UI_SLOT_NAMES[label].lower()} mask").mask
                mask_sources[label] = "given" if label in masks else _default_source(references[label])
            if size not in SIZE_PRESETS:
                raise Parts2WholeInputError(f"Unknown output size {size!r}; pick one of the listed sizes.")
            height, width = SIZE_PRESETS[size]
            structure = load_image(pose, what="pose map") if pose else None
            request = studio_module.GenerationRequest(
                references=references, masks=masks, structure=structure, prompt=prompt or "",
                negative_prompt=negative_prompt or "", seed=None if randomize_seed else (0 if seed is None else seed),
                steps=steps, guidance_scale=guidance, height=height, width=width,
                num_images=num_images, fusion_blocks=fusion_blocks,
                scheduler=scheduler or DEFAULT_SCHEDULER)  # the studio checks each value, with a message

            def report(update: studio_module.ProgressUpdate) -> None:
                progress(update.fraction, desc=update.text)

            result = studio.generate(request, progress=report, cancelled=_cancel_check())
        except (Parts2WholeInputError, CheckpointError) as error:  # also out of memory: "try a smaller size"
            raise _user_error(error) from None
        except GenerationCancelled:
            logger.info("generation stopped")
            raise gr.Error("Stopped. Press Generate to start again.", title="Stopped", print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # a bug or an environment problem: log it, show one line
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed ({type(error).__name__}): {' '.join(str(error).split())[:300]}",
                           print_exception=False) from None
        try:
            pose_parameters, pose_files = _pose_details(service, structure, pose_state)
        except Exception:  # noqa: BLE001 - the bundle is still useful without them
            logger.exception("could not describe the pose map")
            pose_parameters, pose_files = {}, {}
        pose_parameters.update(_dataset_sources(references, structure))
        bundle = _write_bundle(result, {label: Path(path).name for label, path in files.items() if path},
                               mask_sources, pose_parameters, pose_files)
        session.update(runs=session["runs"] + 1, last_seed=result.request.seed)
        gallery = [(image, f"seed {result.request.seed} · #{index + 1}") for index, image in enumerate(result.images)]
        status = _status_line(result, studio)
        kind, expected = pose_parameters.get("structure_kind"), pose_parameters.get("expected_structure_kind")
        if kind and expected and kind != expected:
            status += f"  \n⚠️ The pose map looks like **{kind}**; this model reads **{expected}** maps."
        return (gallery, str(bundle), status, session, result.request.seed)

    return generate


def make_used_inputs(service: PreprocessingService | None = None):
    """After a generation: each part with the mask that was used, and the pose map, next to the result."""

    def used_inputs(*values):
        *slot_values, pose, pose_state = values
        items = []
        for label, path, mask_path in zip(PART_LABELS, slot_values[0::2], slot_values[1::2]):
            if not path:
                continue
            image = _load_reference(path, label)
            mask = load_mask(mask_path, image.size).mask if mask_path else studio_module.default_mask(image)
            overlay = studio_module.overlay_mask(_display_size(image), _display_size(mask))
            items.append((overlay, f"{UI_SLOT_NAMES[label]} · {studio_module.mask_coverage(mask):.0%} used"))
        if pose:
            pose_map = load_image(pose, what="pose map")
            details, _ = _pose_details(service, pose_map, pose_state)
            kind = details.get("structure_kind")
            items.append((_display_size(pose_map), "Pose" + (f" · {kind}" if kind else "")))
        return gr.update(value=items, visible=True)

    return used_inputs


# ----------------------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True)
class Example:
    """One example: part images by label, a pose map, a prompt and a thumbnail. Drawn ones come from a
    folder of assets/examples; photo ones from the dataset (parts2whole.examples), with the real photo."""

    title: str
    parts: dict[str, str]
    pose: str
    prompt: str
    thumbnail: str
    target: str | None = None  # the dataset's real photo of the person (ground truth), photo examples only
    sample_id: str | None = None


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    examples = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        pose, thumbnail = path / "pose.png", path / "thumbnail.jpg"
        if not pose.is_file():
            continue
        prompt_file = path / "prompt.json"
        prompt = json.loads(prompt_file.read_text())["prompt"] if prompt_file.is_file() else ""
        parts = {label: str(path / f"{label.replace(' ', '_')}.png") for label in PART_LABELS
                 if (path / f"{label.replace(' ', '_')}.png").is_file()}
        examples.append(Example(title=path.name.replace("-", " ").capitalize(), parts=parts, pose=str(pose),
                                prompt=prompt, thumbnail=str(thumbnail if thumbnail.is_file() else pose)))
    return examples


def make_example_loader(examples: list[Example] | None = None):
    def load_example(shown: dict | None, evt: gr.SelectData):
        """Fill every slot from the example clicked in the gallery (slots it lacks are emptied), and show
        the real photo of a photo example next to it."""
        listed = (shown or {}).get("examples") or examples or []
        if evt is None or evt.index is None or not 0 <= evt.index < len(listed):
            return [gr.skip()] * (len(PART_LABELS) + 3)
        example = listed[evt.index]
        truth = (gr.update(value=example.target, visible=True, label=GROUND_TRUTH_LABEL) if example.target
                 else gr.update(value=None, visible=False))
        return [example.parts.get(label) for label in PART_LABELS] + [example.pose, example.prompt, truth]

    return load_example


def photo_examples(manifest: examples_module.Manifest) -> list[Example]:
    return [Example(title=item.title, parts={label: manifest.path(path) for label, path in item.parts.items()},
                    pose=manifest.path(item.pose), prompt=item.prompt, thumbnail=manifest.path(item.card),
                    target=manifest.path(item.target), sample_id=item.sample_id) for item in manifest.examples]


def shown_content(snapshot: examples_module.Snapshot) -> dict:
    """What one page shows: the photo examples and their poses when fetched, else the drawn ones."""
    manifest = snapshot.manifest
    if manifest is not None and manifest.examples:
        examples = photo_examples(manifest)
        poses = [{"path": manifest.path(p.pose), "thumbnail": manifest.path(p.thumbnail), "label": p.label,
                  "sample": p.sample_id} for p in manifest.poses]
    else:
        examples = load_examples()
        poses = [{"path": e.pose, "thumbnail": e.pose, "label": f"{e.title} (drawn)", "sample": None} for e in examples]
    return {"version": snapshot.version, "examples": examples, "poses": poses, "note": snapshot.note,
            "photos": manifest is not None and bool(manifest.examples)}


def _example_items(content: dict) -> list[tuple[str, str]]:
    if content["photos"]:
        return [(e.thumbnail, f"{e.title} · real photo first") for e in content["examples"]]
    return [(e.thumbnail, e.title) for e in content["examples"]]


def _pose_items(content: dict) -> list[tuple[str, str]]:
    return [(p["thumbnail"], p["label"]) for p in content["poses"]]


def make_examples_refresh(library: examples_module.ExampleLibrary):
    """On page load and on each timer tick while fetching: swap in the photo examples once they are there."""

    def refresh(shown: dict | None):
        snapshot = library.snapshot()
        timer = gr.Timer(active=snapshot.state == examples_module.STATE_FETCHING)
        if shown and shown.get("version") == snapshot.version:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), timer
        content = shown_content(snapshot)
        return (gr.update(value=_example_items(content)), gr.update(value=content["note"]),
                gr.update(value=_pose_items(content)), content, timer)

    return refresh


def load_pose_from_gallery(shown: dict | None, evt: gr.SelectData):
    """The pose clicked in the pose gallery goes into the Pose slot (its kind note follows)."""
    poses = (shown or {}).get("poses") or []
    if evt is None or evt.index is None or not 0 <= evt.index < len(poses):
        return gr.skip()
    return poses[evt.index]["path"]


def _dataset_pose_note(pose_map: Image.Image) -> str | None:
    source = examples_module.dataset_source(pose_map)
    if not source or "DensePose" not in source.get("role", ""):
        return None
    return (f"✓ **DensePose map** of a real person (test sample `{source['sample']}` of the dataset): "
            "the kind of map the released model reads.")


def _dataset_sources(references: dict, structure: Image.Image | None) -> dict:
    """For the bundle: which dataset sample each input came from (the photo examples and the pose gallery)."""
    try:
        found = {label: examples_module.dataset_source(image) for label, image in references.items()}
        found["pose"] = examples_module.dataset_source(structure)
    except Exception:  # noqa: BLE001 - provenance is a nice-to-have, never a failure
        logger.exception("could not trace the inputs to the dataset")
        return {}
    found = {key: value for key, value in found.items() if value}
    if not found:
        return {}
    extra = {"dataset_sources": found}
    if "pose" in found:
        extra["pose_source"] = f"{found['pose']['dataset']}@{found['pose']['revision'][:7]} test sample {found['pose']['sample']}"
    return extra


# ----------------------------------------------------------------------------------------- layout


def build_demo(studio: studio_module.Studio, service: PreprocessingService | None = None,
               library: examples_module.ExampleLibrary | None = None) -> gr.Blocks:
    """The whole UI around one studio. Nothing per-user lives outside `gr.State`.

    `library`: the photo examples (default: the dataset's, fetched in the background when not cached; the
    drawn examples are shown until they are there)."""
    if service is None:
        service = PreprocessingService(studio)
        service.warm_up_in_background()
    if library is None:
        library = examples_module.ExampleLibrary()
        library.start_background_fetch()
    tiny = studio.is_tiny
    default_size = TINY_DEFAULT_SIZE if tiny else DEFAULT_SIZE
    default_steps = TINY_DEFAULT_STEPS if tiny else studio_module.DEFAULT_STEPS
    library.cache_dir.mkdir(parents=True, exist_ok=True)
    # Served as they are (assets/ and the fetched photo examples), never expired from the cache.
    gr.set_static_paths([EXAMPLES_DIR, library.cache_dir])
    with gr.Blocks(title=APP_TITLE, delete_cache=(BUNDLE_MAX_AGE_S, BUNDLE_MAX_AGE_S)) as demo:
        session = gr.State(new_session())
        gr.Markdown(INTRO)
        banner = studio.banner()
        if banner and tiny:
            banner += (f" To keep it quick, it starts at {default_size.split(' ·')[0]} px and {default_steps} steps "
                       "(change them under *Advanced settings*).")
        if banner and service.banner_note():
            banner += " " + service.banner_note()
        gr.Markdown(banner or "", visible=bool(banner), elem_id="tiny-model-banner")

        content = shown_content(library.snapshot())
        shown_examples = gr.State(content)  # per page: what its galleries show (swapped when the fetch ends)
        example_gallery = gr.Gallery(
            _example_items(content), label="Examples · click one to fill the slots", columns=4, fit_columns=False,
            height=250, allow_preview=False, object_fit="contain", interactive=False, elem_id="examples", buttons=[])
        examples_note = gr.Markdown(content["note"], elem_id="examples-note")
        ground_truth = gr.Image(label=GROUND_TRUTH_LABEL, interactive=False, visible=False, height=300,
                                elem_id="example-ground-truth", buttons=["fullscreen"])
        examples_timer = gr.Timer(EXAMPLES_POLL_S, active=library.snapshot().state == examples_module.STATE_FETCHING)

        slots: list[PartSlot] = []
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### Reference parts · each optional, at least one")
                for row_labels in (PART_LABELS[:3], PART_LABELS[3:]):
                    with gr.Row(equal_height=False):
                        for label in row_labels:
                            slots.append(build_slot(label))
            with gr.Column(scale=2):
                pose = gr.Image(label="Pose", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=260, elem_id="pose-image", buttons=["fullscreen"], format="png")
                pose_kind = gr.Markdown("", label="Pose map kind", visible=False, elem_id="pose-kind")
                pose_preview = gr.Image(label="Detected pose", interactive=False, visible=False, height=200,
                                        format="png", elem_id="pose-preview", buttons=["fullscreen"])
                pose_photo = gr.UploadButton("Make a pose map from a photo", file_types=["image"], size="sm",
                                             elem_id="pose-from-photo")
                gr.Markdown(POSE_HELP, elem_id="pose-help")
                pose_gallery = gr.Gallery(  # photo examples: DensePose maps of real test targets; else the drawn ones
                    _pose_items(content), label="Pose gallery · DensePose maps of real people, click one",
                    columns=8, height=150, allow_preview=False, object_fit="contain", interactive=False,
                    elem_id="pose-gallery", buttons=[])
                pose_state = gr.State(new_pose_state())
                prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="prompt",
                                    placeholder="e.g. a woman in a red shirt, high quality, realistic")
                negative_prompt = gr.Textbox("", label="Negative prompt", lines=1, elem_id="negative-prompt",
                                             placeholder="e.g. blurry, low quality, deformed")
                speed_preset = gr.Radio(
                    [(f"Default · {SCHEDULERS[DEFAULT_SCHEDULER].label}, {default_steps} steps", PRESET_DEFAULT),
                     (f"Fast · {SCHEDULERS[FAST_SCHEDULER].label}, {FAST_STEPS} steps", PRESET_FAST)],
                    value=PRESET_DEFAULT, label="Speed", elem_id="speed-preset",
                    info="Sets the sampler and the steps (both under Advanced settings)")
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced-settings"):
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=studio_module.MAX_SEED,
                                         elem_id="seed")
                        randomize_seed = gr.Checkbox(label="Random seed", value=True, elem_id="random-seed",
                                                     info="Untick to reuse the seed above")
                    steps = gr.Slider(1, 100, value=default_steps, step=1, label="Steps", elem_id="steps",
                                      info="More steps: slower, often finer")
                    guidance = gr.Slider(1.0, 10.0, value=studio_module.DEFAULT_GUIDANCE, step=0.1,
                                         label="Guidance", elem_id="guidance", info="How strongly to follow the prompt")
                    size = gr.Dropdown(list(SIZE_PRESETS), value=default_size, label="Output size (height × width)",
                                       elem_id="size")
                    num_images = gr.Slider(1, studio_module.MAX_IMAGES, value=1, step=1, label="Number of images",
                                           elem_id="num-images")
                    fusion_blocks = gr.Radio(list(studio_module.FUSION_BLOCK_CHOICES),
                                             value=studio_module.DEFAULT_FUSION_BLOCKS, label="Fusion blocks",
                                             info="UNet blocks that look at the parts: full (closest) or midup",
                                             elem_id="fusion-blocks")
                    scheduler = gr.Dropdown([(choice.label, name) for name, choice in SCHEDULERS.items()],
                                            value=DEFAULT_SCHEDULER, label="Sampler", elem_id="scheduler",
                                            allow_custom_value=True,  # an unknown name gets the studio's message
                                            info="DDIM is the official one; DPM-Solver++ and UniPC need fewer steps")
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=4)
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1, min_width=80)
                status = gr.Markdown("", label="Status", elem_id="run-status")
                result = gr.Gallery(label="Result", columns=2, height=420, object_fit="contain", format="png",
                                    elem_id="result-gallery", buttons=["download", "fullscreen"], interactive=False)
                used = gr.Gallery(label="Masks and pose used", columns=4, height=160, object_fit="contain",
                                  format="png", elem_id="used-inputs", buttons=["fullscreen"], interactive=False,
                                  visible=False)
                with gr.Row():
                    bundle = gr.DownloadButton("Download bundle (.zip)", elem_id="download-bundle")
                    reuse_seed = gr.Button("Reuse last seed", size="lg", elem_id="reuse-seed")
                last_seed = gr.Number(label="Seed used", visible=False, precision=0)

        for slot in slots:
            wire_slot(slot, service)

        pose_tools = make_pose_handlers(service)
        pose_outputs = [pose, pose_preview, pose_kind, pose_state]
        preprocess = dict(concurrency_limit=PREPROCESS_CONCURRENCY, concurrency_id="preprocess",
                          show_progress="minimal", show_progress_on=[pose])
        pose.change(pose_tools["kind"], [pose, pose_state], [pose_kind, pose_preview, pose_state], api_name="pose_kind",
                    concurrency_limit=None, show_progress="hidden")
        pose.upload(pose_tools["upload"], [pose, size], pose_outputs, api_name="pose_upload", **preprocess)
        pose_photo.upload(pose_tools["from_photo"], [pose_photo, size], pose_outputs, api_name="pose_from_photo",
                          **preprocess)
        for pose_kind_name in ("densepose", "openpose"):  # API only: one endpoint per kind, whatever the model reads
            gr.Button(visible=False).click(pose_tools[f"{pose_kind_name}_from_photo"], [pose_photo, size], pose_outputs,
                                           api_name=f"pose_{pose_kind_name}_from_photo", **preprocess)

        example_gallery.select(make_example_loader(), shown_examples,
                               [slot.image for slot in slots] + [pose, prompt, ground_truth],
                               api_visibility="private", concurrency_limit=None, show_progress="hidden")
        pose_gallery.select(load_pose_from_gallery, shown_examples, pose, api_visibility="private",
                            concurrency_limit=None, show_progress="hidden")
        refresh_examples = make_examples_refresh(library)
        refreshed = [example_gallery, examples_note, pose_gallery, shown_examples, examples_timer]
        demo.load(refresh_examples, shown_examples, refreshed, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
        examples_timer.tick(refresh_examples, shown_examples, refreshed, api_visibility="private",
                            concurrency_limit=None, show_progress="hidden")

        generate_inputs = []
        for slot in slots:
            generate_inputs += [slot.image, slot.mask]
        used_inputs = generate_inputs + [pose, pose_state]
        generate_inputs += [pose, prompt, negative_prompt, seed, randomize_seed, steps, guidance, size, num_images,
                            fusion_blocks, scheduler, session, pose_state]
        generated = generate_button.click(make_generate(studio, service), generate_inputs,
                                          [result, bundle, status, session, last_seed], api_name="generate",
                                          concurrency_limit=GPU_CONCURRENCY, concurrency_id="gpu",
                                          show_progress_on=[result])
        generated.success(_friendly_errors(make_used_inputs(service)), used_inputs, used, api_visibility="private",
                          concurrency_limit=None, show_progress="hidden")

        def reuse(session_state: dict):
            seed_value = (session_state or {}).get("last_seed")
            if seed_value is None:
                raise gr.Error("Generate once first: there is no seed to reuse yet.", print_exception=False)
            return seed_value, False

        reuse_seed.click(reuse, session, [seed, randomize_seed], api_visibility="private", concurrency_limit=None)
        wire_speed_preset(speed_preset, scheduler, steps, default_steps)
        # Stop cancels the running (or waiting) generation; the handler sees it and frees the model.
        stop_button.click(None, None, None, cancels=[generated], api_visibility="private", queue=False)
    return demo


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


#: Largest upload the server accepts (Gradio refuses bigger files before they reach a handler).
MAX_UPLOAD_MB = 50
#: Gradio's worker threads for all handlers (the GPU queue is limited separately, see GPU_CONCURRENCY).
MAX_THREADS = 40


def queue(demo: gr.Blocks) -> gr.Blocks:
    """GPU work waits in line, GPU_CONCURRENCY at a time (MAX_QUEUE_SIZE may wait; more are turned away
    with "queue full"); cheap UI events (mask previews) have no limit and run beside it.
    Uploaded pictures reach the handlers undecoded (see `pass_uploads_undecoded`)."""
    pass_uploads_undecoded(demo)
    return demo.queue(default_concurrency_limit=GPU_CONCURRENCY, max_size=MAX_QUEUE_SIZE)


def pass_uploads_undecoded(demo: gr.Blocks) -> None:
    """Hand every file-path image input to the handlers as the uploaded file, without Gradio decoding it.

    Gradio's own preprocessing opens each upload with PIL (and converts a mask to "L", decoding every
    pixel) before a handler runs: a text file, a PDF or a zero-byte upload then fails inside Gradio with
    an anonymous error, and a decompression bomb is decoded. Our loaders (preprocess.images) check the
    header, the pixel limit and the format first and say what is wrong, so they get the file as it is.
    """
    for block in demo.blocks.values():
        if isinstance(block, gr.Image) and block.type == "filepath" and not getattr(block, "_undecoded", False):
            block.preprocess = functools.partial(_undecoded_image, block.preprocess)
            block._undecoded = True


def _undecoded_image(gradio_preprocess, payload):
    if payload is None:
        return None
    url, path = getattr(payload, "url", None) or "", getattr(payload, "path", None)
    if path and not url.startswith("data:"):
        return str(path)  # already in Gradio's upload cache
    return gradio_preprocess(payload)


def launch_kwargs(args: argparse.Namespace) -> dict:
    """How the app is served: uploads capped at MAX_UPLOAD_MB, errors as one-line messages (never a
    traceback), and nothing served outside Gradio's cache and assets/ (no `allowed_paths`); the cache is
    cleaned by the Blocks' `delete_cache`."""
    return dict(server_name=args.host, server_port=args.port, share=args.share or None, css=CSS,
                theme=gr.themes.Soft(), js=LABEL_FILE_INPUTS_JS, show_error=False, footer_links=["api", "gradio"],
                max_file_size=f"{MAX_UPLOAD_MB}mb", max_threads=MAX_THREADS)


# ----------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{APP_TITLE}: the web app. Opens on http://{DEFAULT_HOST}:{DEFAULT_PORT}.")
    parser.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights; "
                             "falls back to 'tiny' when the Hub is unreachable)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
                        help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for everyone)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT),
                        help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every local request
    args = parse_args(argv)
    # PIL refuses to open anything above twice this (Gradio's own image handling included); our loaders
    # refuse above the limit itself, from the header.
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    studio = studio_module.get_studio(args.weights, device=args.device, dtype=args.dtype)
    weights = studio.weights  # resolve now: downloads, or one line saying why the tiny model is used
    print(f"Weights: {weights.name}" + (" - outputs are noise, not portraits" if weights.is_tiny else ""), flush=True)
    if studio.device_choice.zero_gpu:
        studio.pipeline()  # ZeroGPU: load on CPU at start; each generation moves it to the GPU
    demo = queue(build_demo(studio))
    demo.launch(**launch_kwargs(args))


if __name__ == "__main__":
    main()
