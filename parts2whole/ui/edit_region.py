"""The edit region over the photo, and its refinement with a part slot's tools: clicks on the region
preview (Segment Anything on the photo: *+ add* adds the segment under the click to the region, *− remove*
takes it out, *▭ box* adds the segment inside a box drawn with two clicks), the *Edit region* brush (paint
area in or out), Undo and Reset.

Data flow: the region starts as the automatic one (the ticked parts' masks on the photo, grown:
`studio.edit_sources.automatic_region`), or as an uploaded region mask. Each click or stroke merges into it
and the result goes into the panel's region input, the very `region` that Edit (and the `/edit` endpoint)
receives; clearing that input (or *Reset region*) goes back to the automatic region. Per user, in
`gr.State`: the photo the region was refined on, a box's first corner, the last click (drawn on the
preview) and the regions before each change (for Undo).
"""

from __future__ import annotations

import dataclasses

import gradio as gr
from PIL import Image, ImageChops

from parts2whole import studio as studio_module
from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.studio.edit_sources import ServiceAnalysis, automatic_region
from parts2whole.studio.preprocessing import BOX, EXCLUDE, INCLUDE, PreprocessingService

from .feedback import friendly_errors
from .masks import BRUSH_ADDS, BRUSH_REMOVES, binary, display_size, editor_value, painted_mask, strokes
from .settings import CLICK_CONCURRENCY
from .theme import MASK_PAINT_COLOUR, MASK_PAINT_OPACITY
from .tools import CLICK_MODE_VALUES, CLICK_MODES, UNDO_STEPS
from .uploads import Uploads

#: The Uploads roles of the photo to edit and of the region mask.
SOURCE, REGION = "edit source", "edit region"
#: The region is shown over the photo in this colour, at this opacity.
REGION_COLOUR, REGION_OPACITY = (236, 72, 153), 0.5
#: `show`'s default: leave the region input as it is (gr.skip()).
KEEP = object()
CLICK_HINT = ("Click the photo to refine the region: + adds the part under the click, − removes it, "
              "▭ box: two corners.")


@dataclasses.dataclass
class RegionTools:
    """The components that refine the region (the preview and the region input are the panel's)."""

    click_mode: gr.Radio  # what a click on the preview does: add, remove, box corner
    message: gr.Markdown  # one line: where the region comes from, how much it covers
    tools: gr.State  # per user: see new_region_state
    undo_button: gr.Button
    reset_button: gr.Button
    editor: gr.ImageEditor  # the *Edit region* brush (strokes are merged into the region)
    brush_mode: gr.Radio  # whether strokes add to or remove from the region


def new_region_state(key: str | None = None) -> dict:
    """Per-user region tool state: the photo's pixel key, a box's pending first corner, the last click
    (a ClickState, drawn on the preview), whether the region input holds a region the tools made, and the
    regions before each change (None = the automatic region) for Undo."""
    return {"key": key, "corner": None, "shown": None, "made": False, "history": []}


def region_preview(photo: Image.Image, region: Image.Image) -> Image.Image:
    """The photo (preview-sized) with the region tinted, for people to check what will change."""
    shown = display_size(photo.convert("RGB"))
    mask = region.convert("L").resize(shown.size, Image.Resampling.NEAREST)
    tinted = Image.blend(shown, Image.new("RGB", shown.size, REGION_COLOUR), REGION_OPACITY)
    return Image.composite(tinted, shown, mask)


def build_region_clicks() -> tuple[gr.Radio, gr.Markdown, gr.Button, gr.Button]:
    """Under the region preview: the click mode, a line about the region, Undo and Reset."""
    click_mode = gr.Radio(CLICK_MODES, value="add", label="Click mode", show_label=False, container=False,
                          elem_id="edit-region-click-mode", elem_classes=["click-mode"])
    message = gr.Markdown("", elem_id="edit-region-message", elem_classes=["mask-message"])
    with gr.Row():
        undo_button = gr.Button("Undo", size="sm", elem_id="edit-region-undo")
        reset_button = gr.Button("Reset region", size="sm", elem_id="edit-region-reset")
    return click_mode, message, undo_button, reset_button


def build_region_brush() -> tuple[gr.ImageEditor, gr.Radio]:
    """*Edit region*: the brush over the photo with the region tinted, and whether it adds or removes."""
    with gr.Accordion("Edit region (brush)", open=False, elem_id="edit-region-tools"):
        gr.Markdown("Paint over the photo: the region updates after each stroke.", elem_classes=["brush-hint"])
        editor = gr.ImageEditor(
            label="Region brush", show_label=False, type="pil", image_mode="RGBA", sources=[], transforms=[],
            layers=False, brush=gr.Brush(colors=[(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY)],
                                         default_color=(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY), color_mode="fixed"),
            format="png", height=260, elem_id="edit-region-editor", buttons=[])
        brush_mode = gr.Radio([BRUSH_ADDS, BRUSH_REMOVES], value=BRUSH_ADDS, show_label=False,
                              elem_id="edit-region-brush-mode")
    return editor, brush_mode


class RegionHandlers:
    """The region's handlers over a preprocessing service. Each returns (region, preview, brush canvas,
    message, tool state): the region input's new value (gr.skip() to leave it), the photo with the region
    tinted (and the last click drawn), the brush canvas, one line of text and the per-user state."""

    def __init__(self, service: PreprocessingService):
        self.service = service

    # ------------------------------------------------------------------------------- reading

    def photo(self, source: str | None, uploads: Uploads) -> Image.Image | None:
        if not source:
            return None
        photo = uploads.image(SOURCE, source, what="photo to edit")
        return photo if photo.mode == "RGB" else photo.convert("RGB")

    def key(self, photo: Image.Image) -> str:
        return self.service.start_state(photo).image_key

    def for_photo(self, tools: dict | None, photo: Image.Image) -> dict:
        """A copy of the state for `photo`; the state of another photo starts again."""
        key = self.key(photo)
        tools = dict(tools or new_region_state())
        return tools if tools.get("key") == key else new_region_state(key)

    def current(self, photo: Image.Image, change, region: str | None, uploads: Uploads) -> tuple[Image.Image, str]:
        """The region in use (binary L at the photo's size) and a line saying where it comes from."""
        if region:
            return binary(uploads.mask(REGION, region, photo.size, what="region").mask), "your region"
        labels = studio_module.changed_labels(change)
        if not labels:
            return Image.new("L", photo.size, 0), "Tick what to change, or click the photo to draw the region."
        try:
            mask, _origin = automatic_region(ServiceAnalysis(self.service), photo, labels)
        except Parts2WholeInputError as error:  # nothing found: people draw the region themselves
            return Image.new("L", photo.size, 0), f"{error} Click the photo or use the brush."
        return binary(mask), "found on the photo"

    # ------------------------------------------------------------------------------- answers

    def show(self, photo: Image.Image | None, region: Image.Image | None, source: str, tools: dict,
             value=KEEP, note: str | None = None) -> tuple:
        value = gr.skip() if value is KEEP else value
        if photo is None:
            return value, None, None, gr.update(value=""), tools
        tinted = region_preview(photo, region)
        shown = tinted
        if tools.get("shown") is not None or tools.get("corner") is not None:
            shown = self.service.draw_prompts(tinted, tools.get("shown"), tinted.width / photo.width,
                                              tools.get("corner"))
        line = f"Region {studio_module.mask_coverage(region):.0%} of the photo · {source}"
        if note:
            line += f"  \n{note}"
        return value, shown, editor_value(tinted), gr.update(value=line), tools

    def refresh(self, source, change, region, tools, uploads=None) -> tuple:
        """A new photo or new ticks: show the region. A region the tools made on another photo is cleared
        (it does not fit this one); an uploaded region stays."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        if photo is None:
            return gr.skip(), None, None, gr.update(value=""), new_region_state()
        tools, value, key = dict(tools or new_region_state()), KEEP, self.key(photo)
        if tools.get("key") != key:
            if tools.get("made") and region:
                value, region = None, None
            tools = new_region_state(key)
        mask, source_line = self.current(photo, change, region, uploads)
        return self.show(photo, mask, source_line, tools, value)

    def given(self, source, change, region, uploads=None) -> tuple:
        """A region uploaded or cleared by hand: the tools' history starts again."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        tools = new_region_state(self.key(photo) if photo is not None else None)
        if photo is None:
            return gr.skip(), None, None, gr.update(value=""), tools
        return self.show(photo, *self.current(photo, change, region, uploads), tools)

    def changed(self, photo: Image.Image, before: Image.Image, region_path: str | None, after: Image.Image,
                tools: dict, source: str, note: str | None = None) -> tuple:
        """Answer a change of the region by the tools, keeping what it was for Undo."""
        history = [*tools.get("history", []), (before if region_path else None)]
        tools.update(made=True, history=history[-UNDO_STEPS:])
        return self.show(photo, after, source, tools, after, note)

    # ------------------------------------------------------------------------------- tools

    def click(self, photo: Image.Image, change, region: str | None, mode: str | None, tools: dict | None,
              x: float, y: float, uploads: Uploads) -> tuple:
        """A click at (x, y) in the photo's pixels: add or remove the segment under it, or a box corner."""
        kind = CLICK_MODE_VALUES.get(mode or "add")
        if kind is None:
            raise gr.Error(f"Unknown click mode {mode!r}: use add, remove or box.", print_exception=False)
        tools = self.for_photo(tools, photo)
        current, source = self.current(photo, change, region, uploads)
        if kind == BOX and tools.get("corner") is None:
            tools.update(corner=(float(x), float(y)), shown=None)
            return self.show(photo, current, source, tools, note="Now click the opposite corner of the box.")
        suggestion = self.service.click(photo, None, float(x), float(y), BOX if kind == BOX else INCLUDE,
                                        tools.get("corner"))
        segment = binary(suggestion.mask)
        after = ImageChops.subtract(current, segment) if kind == EXCLUDE else ImageChops.lighter(current, segment)
        shown = suggestion.clicks
        if kind == EXCLUDE:  # drawn as a remove click (SAM was asked for the segment under it)
            shown = self.service.start_state(photo).add_click(float(x), float(y), positive=False)
        tools.update(corner=None, shown=shown)
        verb = {INCLUDE: "added by a click", EXCLUDE: "removed by a click", BOX: "added by a box"}[kind]
        return self.changed(photo, current, region, after, tools, f"{verb} · Undo steps back",
                            self.service.fallback_note("Segment Anything"))

    def on_select(self, source, change, region, mode, tools, uploads, evt: gr.SelectData):
        """A click on the preview, which may be a smaller copy of the photo: scale it back."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        if photo is None or not evt or evt.index is None:
            return (gr.skip(),) * 5
        scale = photo.width / display_size(photo).width
        return self.click(photo, change, region, mode, tools, evt.index[0] * scale, evt.index[1] * scale, uploads)

    def on_painted(self, value, source, change, region, mode, tools, uploads=None):
        """Merge the brush strokes into the region (add or remove)."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        painted = strokes(value, photo.size) if photo is not None else None
        if painted is None:
            return (gr.skip(),) * 5
        tools = self.for_photo(tools, photo)
        current, _source = self.current(photo, change, region, uploads)
        after = painted_mask(current, painted, mode or BRUSH_ADDS)
        tools.update(corner=None, shown=None)
        verb = "painted out" if mode == BRUSH_REMOVES else "painted in"
        return self.changed(photo, current, region, after, tools, f"{verb} · Undo steps back")

    def on_undo(self, source, change, region, tools, uploads=None):
        """Back to the region before the last click or stroke (or forget a box's first corner)."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        if photo is None:
            return (gr.skip(),) * 5
        tools = self.for_photo(tools, photo)
        history = list(tools.get("history") or [])
        if tools.get("corner") is None and not history:
            return (gr.skip(),) * 3 + (gr.update(value="Nothing to undo."), tools)
        if tools.get("corner") is not None:
            tools.update(corner=None)
            return self.show(photo, *self.current(photo, change, region, uploads), tools)
        before = history.pop()
        tools.update(history=history, shown=None, made=before is not None)
        if before is None:
            return self.show(photo, *self.current(photo, change, None, uploads), tools, None)
        return self.show(photo, before, "as before the last change", tools, before)

    def on_reset(self, source, change, uploads=None):
        """Back to the automatic region (the region input cleared)."""
        uploads = Uploads.of(uploads)
        photo = self.photo(source, uploads)
        tools = new_region_state(self.key(photo) if photo is not None else None)
        if photo is None:
            return None, None, None, gr.update(value=""), tools
        return self.show(photo, *self.current(photo, change, None, uploads), tools, None)


def wire_region(panel, uploads: gr.State, service: PreprocessingService) -> None:
    """The region preview and its tools. The preview follows the photo, the ticks and a region uploaded or
    cleared by hand (`upload`/`clear`, not `change`: the tools' own updates of the region answer themselves)."""
    handlers, tools = RegionHandlers(service), panel.region_tools
    outputs = [panel.region, panel.preview, tools.editor, tools.message, tools.tools]
    light = dict(api_visibility="private", concurrency_limit=None, show_progress="minimal",
                 show_progress_on=[panel.preview])
    shown = [panel.source, panel.change, panel.region, tools.tools, uploads]
    refresh = friendly_errors(handlers.refresh)
    panel.source.change(refresh, shown, outputs, **light)
    panel.change.change(refresh, shown, outputs, **light)
    given = friendly_errors(handlers.given)
    for trigger in (panel.region.upload, panel.region.clear):
        trigger(given, [panel.source, panel.change, panel.region, uploads], outputs, **light)
    clicks = dict(api_visibility="private", concurrency_limit=CLICK_CONCURRENCY, concurrency_id="clicks",
                  show_progress="minimal", show_progress_on=[panel.preview], trigger_mode="always_last")
    panel.preview.select(friendly_errors(handlers.on_select), [panel.source, panel.change, panel.region,
                         tools.click_mode, tools.tools, uploads], outputs, **clicks)
    painted = friendly_errors(handlers.on_painted)
    painted_inputs = [tools.editor, panel.source, panel.change, panel.region, tools.brush_mode, tools.tools, uploads]
    tools.editor.apply(painted, painted_inputs, outputs, **light)
    tools.editor.input(painted, painted_inputs, outputs, trigger_mode="always_last", **light)
    tools.undo_button.click(friendly_errors(handlers.on_undo), [panel.source, panel.change, panel.region,
                            tools.tools, uploads], outputs, **light)
    tools.reset_button.click(friendly_errors(handlers.on_reset), [panel.source, panel.change, uploads], outputs,
                             **light)
