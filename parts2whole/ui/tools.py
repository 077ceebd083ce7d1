"""A part slot's preprocessing tools: the automatic mask after an upload, clicks and boxes (Segment
Anything), undo, and background removal; each answers with the mask, its preview and one line of text."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module
from parts2whole.core.labels import UI_SLOT_NAMES
from parts2whole.studio.preprocessing import BOX, EXCLUDE, INCLUDE, MaskSuggestion, PreprocessingService

from .feedback import friendly_errors
from .masks import binary, default_source, display_size, has_transparency, slot_outputs
from .uploads import Uploads

#: Click modes on a part's picture: (shown, value). The value is what `/<part>_click` takes as `mode`.
CLICK_MODES = [("+ add", "add"), ("− remove", "remove"), ("▭ box", "box")]
CLICK_MODE_VALUES = {"add": INCLUDE, "remove": EXCLUDE, "box": BOX}
#: Undo steps kept per slot (each holds one mask).
UNDO_STEPS = 10


def new_tool_state(clicks=None, mask: Image.Image | None = None, source: str = "") -> dict:
    """Per-user, per-slot tool state (kept in gr.State): SAM's click state, a pending box corner, the mask
    the tools last made (and its source), and the previous (mask, source, clicks) for Undo."""
    return {"clicks": clicks, "corner": None, "mask": mask, "source": source, "history": []}


class SlotTools:
    """The tool handlers of one slot, over a preprocessing service.

    Each handler returns (mask, preview, editor, click mode, message, tool state): the mask in use, the
    picture with that mask (and the clicks) drawn, the brush canvas, the click-mode row, one line of text,
    and the per-user prompts. Each takes the session's `Uploads` last: the picture is decoded once.
    """

    def __init__(self, label: str, service: PreprocessingService):
        self.label, self.service = label, service
        self.name = UI_SLOT_NAMES[label].lower()

    # ------------------------------------------------------------------------------- answers

    def show(self, image: Image.Image, mask: Image.Image | None, source: str, tools: dict,
             message: str | None = None, notes: tuple[str | None, ...] = ()) -> tuple:
        tools.update(mask=mask, source=source)
        explicit, preview, editor = slot_outputs(image, mask, source)
        clicks, corner = tools.get("clicks"), tools.get("corner")
        # Prompts are drawn once people click (automatic seeds and a cut-out's box stay out of sight until then).
        if clicks is not None and source in ("clicks", "box") or corner is not None:
            shown = preview["value"]
            preview["value"] = self.service.draw_prompts(shown, clicks, shown.width / image.width, corner)
        lines = [line for line in (message, *notes) if line]
        return (explicit, preview, editor, gr.update(visible=True), gr.update(value="  \n".join(lines)), tools)

    @staticmethod
    def empty() -> tuple:
        return (None, gr.update(value=None, visible=False), None, gr.update(visible=False, value="add"),
                gr.update(value=""), new_tool_state())

    def picture(self, image_path: str | None, uploads: Uploads | None, then: str | None = None) -> Image.Image | None:
        """The slot's picture, decoded once per session; with `then`, its absence is an error saying so."""
        image = Uploads.of(uploads).reference(self.label, image_path)
        if image is None and then is not None:
            raise gr.Error(f"Upload the {self.name} picture first{then}.", print_exception=False)
        return image

    # ------------------------------------------------------------------------------- automatic masks

    def automatic(self, image: Image.Image) -> tuple:
        suggestion: MaskSuggestion = self.service.auto_mask(image, self.label)
        self.service.prefetch_embedding(image)  # the first click then answers at once
        message = suggestion.message
        if suggestion.source == "not found":
            message = message or f"No {self.name} found: click on it to select it."
        elif message is None:
            message = "Found automatically. Click the picture to fix it: + adds, − removes."
        return self.show(image, suggestion.mask, suggestion.source, new_tool_state(suggestion.clicks), message,
                         (self.service.fallback_note("human parser", "Segment Anything", "DWPose"),))

    def on_uploaded(self, image_path: str | None, uploads: Uploads | None = None):
        """After an upload: a cut-out keeps its transparency, anything else gets an automatic mask."""
        uploads = Uploads.of(uploads)
        image = self.picture(image_path, uploads)
        if image is None:
            return self.empty()
        if has_transparency(image):
            tools = new_tool_state(self.service.start_state(image, studio_module.default_mask(image)))
            return self.show(image, None, "transparency", tools,
                             "Cut-out: its transparency is used. Click to refine, or try *Automatic mask*.")
        dataset_mask = examples_module.dataset_mask_path(image)  # a photo example: the dataset's own mask
        if dataset_mask:
            mask = uploads.mask(f"{self.label} dataset mask", dataset_mask, image.size, what="dataset mask").mask
            tools = new_tool_state(self.service.start_state(image, binary(mask)))
            return self.show(image, mask, "dataset mask", tools, "The dataset's own mask of this part. Click to refine it.")
        return self.automatic(image)

    def on_auto_mask(self, image_path: str | None, uploads: Uploads | None = None):
        return self.automatic(self.picture(image_path, uploads, then=""))

    def on_remove_background(self, image_path: str | None, uploads: Uploads | None = None):
        """The picture without its background: the cut-out's alpha becomes the mask."""
        image = self.picture(image_path, uploads, then="")
        alpha = self.service.remove_background(image).getchannel("A")
        tools = new_tool_state(self.service.start_state(image, binary(alpha)))
        return self.show(image, alpha, "background removed", tools, "Background removed: only the subject is used.",
                         (self.service.fallback_note("background remover"),))

    # ------------------------------------------------------------------------------- clicks

    def click(self, image: Image.Image, mode: str | None, tools: dict | None, x: float, y: float,
              current: Image.Image | None = None) -> tuple:
        """A click at (x, y) in the picture's pixels; `current` is the mask in use (default: the tools' last)."""
        tools = dict(tools or new_tool_state())
        clicks = tools.get("clicks")
        if clicks is not None and clicks.image_key != self.service.start_state(image).image_key:
            tools = new_tool_state()  # another picture: its clicks and undo steps do not apply
            clicks = None
        kind = CLICK_MODE_VALUES.get(mode or "add")
        if kind is None:
            raise gr.Error(f"Unknown click mode {mode!r}: use add, remove or box.", print_exception=False)
        suggestion = self.service.click(image, clicks, float(x), float(y), kind, tools.get("corner"))
        current = tools.get("mask") if current is None else current
        if suggestion is None:  # first corner of a box: show it, keep the mask as it is
            tools.update(clicks=clicks, corner=(float(x), float(y)))
            shown = self.show(image, current, tools.get("source") or "drawing a box", tools,
                              "Now click the opposite corner of the box.")
            return (gr.skip(), shown[1], gr.skip(), *shown[3:])
        history = [*tools.get("history", []), (current, tools.get("source") or default_source(image), clicks)]
        tools.update(clicks=suggestion.clicks, corner=None, history=history[-UNDO_STEPS:])
        return self.show(image, suggestion.mask, suggestion.source, tools, None,
                         (self.service.fallback_note("Segment Anything"),))

    def on_click(self, image_path: str | None, mode: str | None, x: float, y: float, tools: dict | None,
                 uploads: Uploads | None = None):
        """A click at (x, y) in the picture's own pixels; `mode` is add, remove or box."""
        if x is None or y is None:
            raise gr.Error("Give the click position (x and y, in the picture's pixels).", print_exception=False)
        return self.click(self.picture(image_path, uploads, then=", then click on it"), mode, tools, x, y)

    def on_select(self, image_path: str | None, mask_path: str | None, mode: str | None, tools: dict | None,
                  uploads: Uploads | None, evt: gr.SelectData):
        """A click on the preview, which may be a smaller copy of the picture: scale it back."""
        uploads = Uploads.of(uploads)
        image = self.picture(image_path, uploads)
        if image is None or not evt or evt.index is None:
            return (gr.skip(),) * 6
        x, y = evt.index[:2]
        scale = image.width / display_size(image).width
        current = uploads.reference_mask(self.label, mask_path, image.size).mask if mask_path else None
        return self.click(image, mode, tools, x * scale, y * scale, current)

    def on_undo(self, image_path: str | None, tools: dict | None, uploads: Uploads | None = None):
        """Back to the mask before the last click (or forget a box's first corner)."""
        image = self.picture(image_path, uploads)
        if image is None:
            return self.empty()
        tools = dict(tools or new_tool_state())
        if tools.get("corner") is not None:
            tools["corner"] = None
            return self.show(image, tools.get("mask"), tools.get("source") or default_source(image), tools)
        history = list(tools.get("history") or [])
        if not history:
            return (gr.skip(),) * 4 + (gr.update(value="No click to undo."), tools)
        mask, source, clicks = history.pop()
        tools.update(clicks=clicks, history=history)
        return self.show(image, mask, source, tools)

    @staticmethod
    def on_reset():
        return new_tool_state(), gr.update(value="")


def make_tool_handlers(label: str, service: PreprocessingService) -> dict:
    """The slot's tool handlers by name (uploaded, auto_mask, click, select, undo, remove_background, reset)."""
    tools = SlotTools(label, service)
    handlers = dict(uploaded=tools.on_uploaded, auto_mask=tools.on_auto_mask, click=tools.on_click,
                    select=tools.on_select, undo=tools.on_undo, remove_background=tools.on_remove_background)
    return {name: friendly_errors(handler) for name, handler in handlers.items()} | {"reset": tools.on_reset}
