"""A part slot: its components (picture, mask preview, click mode, brush, mask tools), its plain mask
handlers (preview, mask upload, brush, reset) and the wiring of every event of the slot."""

from __future__ import annotations

import dataclasses

import gradio as gr

from parts2whole import studio as studio_module
from parts2whole.core.dataset_layout import WHOLE_OUTFIT_HINT, WHOLE_OUTFIT_LABEL
from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.core.labels import UI_SLOT_NAMES
from parts2whole.studio.preprocessing import PreprocessingService

from .feedback import user_error
from .masks import BRUSH_ADDS, BRUSH_REMOVES, default_source, painted_mask, slot_outputs, strokes
from .settings import CLICK_CONCURRENCY, PREPROCESS_CONCURRENCY
from .theme import MASK_PAINT_COLOUR, MASK_PAINT_OPACITY
from .tools import CLICK_MODES, make_tool_handlers, new_tool_state
from .uploads import Uploads, file_path


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


def make_slot_handlers(label: str):
    """Mask handlers of one slot (plain functions of files and images: easy to test and to extend). Each
    takes the session's `Uploads` last, so a picture is decoded once, and returns (mask, preview, editor)."""
    name = UI_SLOT_NAMES[label].lower()

    def on_reference_change(image_path: str | None, uploads: Uploads | None = None):
        try:
            image = Uploads.of(uploads).reference(label, image_path)
        except Parts2WholeInputError as error:
            raise user_error(error) from None
        return slot_outputs(image, None, default_source(image) if image is not None else "")

    def on_mask_upload(mask_file, image_path: str | None, uploads: Uploads | None = None):
        if not image_path:
            raise gr.Error(f"Upload the {name} image first, then its mask.", print_exception=False)
        uploads = Uploads.of(uploads)
        try:
            image = uploads.reference(label, image_path)
            loaded = uploads.reference_mask(label, file_path(mask_file), image.size)
        except Parts2WholeInputError as error:
            raise user_error(error) from None
        if loaded.note:
            gr.Info(loaded.note)
        return slot_outputs(image, loaded.mask, "uploaded")

    def on_mask_painted(editor_value: dict | None, image_path: str | None, mask_path: str | None, mode: str,
                        uploads: Uploads | None = None):
        """Merge the strokes into the mask (add or remove), then show the result and clear the strokes."""
        if not image_path:
            return gr.skip(), gr.skip(), gr.skip()
        uploads = Uploads.of(uploads)
        image = uploads.reference(label, image_path)
        painted = strokes(editor_value, image.size)
        if painted is None:
            return gr.skip(), gr.skip(), gr.skip()
        current = (uploads.reference_mask(label, mask_path, image.size).mask if mask_path
                   else studio_module.default_mask(image))
        return slot_outputs(image, painted_mask(current, painted, mode), "painted")

    def on_mask_reset(image_path: str | None, uploads: Uploads | None = None):
        return on_reference_change(image_path, uploads)

    return on_reference_change, on_mask_upload, on_mask_painted, on_mask_reset


def build_slot(label: str) -> PartSlot:
    """The slot's components, in a card: picture, used area, click mode, note, and the *Edit mask* tools."""
    name = UI_SLOT_NAMES[label]
    key = label.replace(" ", "_")
    with gr.Column(elem_id=f"slot-{key}", elem_classes=["slot-card"], min_width=200):
        image = gr.Image(label=name, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                         height=220, elem_id=f"{key}-image", buttons=["fullscreen"])
        if label == WHOLE_OUTFIT_LABEL:  # what the model learned from this slot: the whole outfit, not a dress
            gr.Markdown(WHOLE_OUTFIT_HINT, elem_id=f"{key}-hint", elem_classes=["brush-hint"])
        preview = gr.Image(label="Used area", interactive=False, height=190, visible=False, format="png",
                           elem_id=f"{key}-mask-preview", elem_classes=["mask-preview"], buttons=[])
        click_mode = gr.Radio(CLICK_MODES, value="add", label="Click mode", show_label=False, visible=False,
                              container=False, elem_id=f"{key}-click-mode", elem_classes=["click-mode"])
        message = gr.Markdown("", label="Mask note", elem_id=f"{key}-mask-message", elem_classes=["mask-message"])
        mask = gr.Image(label=f"{name} mask", type="filepath", image_mode="L", visible=False, format="png",
                        elem_id=f"{key}-mask")
        tools = gr.State(new_tool_state())
        click_x = gr.Number(label="x", visible=False)
        click_y = gr.Number(label="y", visible=False)
        click_api = gr.Button(visible=False)
        with gr.Accordion("Edit mask", open=False, elem_id=f"{key}-mask-tools"):
            auto_button, background_button, undo_button, editor, brush_mode, mask_upload, mask_reset = (
                _mask_tools(key))
    return PartSlot(label, image, mask, preview, editor, brush_mode, mask_upload, mask_reset, click_mode, message,
                    tools, auto_button, background_button, undo_button, click_x, click_y, click_api)


def _mask_tools(key: str):
    """Inside *Edit mask*: the tool buttons, the brush and its mode, mask upload and reset."""
    with gr.Row():
        auto_button = gr.Button("Automatic mask", size="sm", elem_id=f"{key}-auto-mask")
        background_button = gr.Button("Remove background", size="sm", elem_id=f"{key}-remove-background")
        undo_button = gr.Button("Undo click", size="sm", elem_id=f"{key}-undo-click")
    gr.Markdown("Paint over the picture: the used area updates after each stroke.", elem_classes=["brush-hint"])
    editor = gr.ImageEditor(
        label="Brush", show_label=False, type="pil", image_mode="RGBA", sources=[], transforms=[], layers=False,
        brush=gr.Brush(colors=[(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY)],
                       default_color=(MASK_PAINT_COLOUR, MASK_PAINT_OPACITY), color_mode="fixed"),
        format="png", height=260, elem_id=f"{key}-mask-editor", buttons=[])
    brush_mode = gr.Radio([BRUSH_ADDS, BRUSH_REMOVES], value=BRUSH_ADDS, show_label=False, elem_id=f"{key}-brush-mode")
    with gr.Row():
        mask_upload = gr.UploadButton("Upload mask", file_types=["image"], size="sm", elem_id=f"{key}-mask-upload")
        mask_reset = gr.Button("Reset mask", size="sm", elem_id=f"{key}-mask-reset")
    return auto_button, background_button, undo_button, editor, brush_mode, mask_upload, mask_reset


def wire_slot(slot: PartSlot, uploads: gr.State, service: PreprocessingService | None = None) -> None:
    """The slot's events: the preview on each new picture, mask upload, brush, reset; with a preprocessing
    service also the automatic mask after an upload, the tool buttons, and clicks (browser and API)."""
    on_change, on_upload, on_painted, on_reset = make_slot_handlers(slot.label)
    outputs = [slot.mask, slot.preview, slot.editor]
    light = dict(concurrency_limit=None, show_progress="hidden")
    changed = slot.image.change(on_change, [slot.image, uploads], outputs, api_name=f"{slot.key}_mask_preview",
                                **light)
    slot.mask_upload.upload(on_upload, [slot.mask_upload, slot.image, uploads], outputs,
                            api_name=f"{slot.key}_mask_upload", **light)
    painted_inputs = [slot.editor, slot.image, slot.mask, slot.brush_mode, uploads]
    slot.editor.apply(on_painted, painted_inputs, outputs, api_visibility="private", **light)
    slot.editor.input(on_painted, painted_inputs, outputs, trigger_mode="always_last", api_visibility="private",
                      **light)
    slot.mask_reset.click(on_reset, [slot.image, uploads], outputs, api_visibility="private", **light)
    if service is not None:
        _wire_tools(slot, uploads, service, changed, outputs + [slot.click_mode, slot.message, slot.tools])


def _wire_tools(slot: PartSlot, uploads: gr.State, service: PreprocessingService, changed, tool_outputs) -> None:
    tools = make_tool_handlers(slot.label, service)
    heavy = dict(concurrency_limit=PREPROCESS_CONCURRENCY, concurrency_id="preprocess", show_progress="minimal",
                 show_progress_on=[slot.preview])
    clicks = dict(concurrency_limit=CLICK_CONCURRENCY, concurrency_id="clicks", show_progress="minimal",
                  show_progress_on=[slot.preview], trigger_mode="always_last")
    picture = [slot.image, uploads]
    changed.success(tools["uploaded"], picture, tool_outputs, api_name=f"{slot.key}_uploaded", **heavy)
    slot.auto_button.click(tools["auto_mask"], picture, tool_outputs, api_name=f"{slot.key}_auto_mask", **heavy)
    slot.background_button.click(tools["remove_background"], picture, tool_outputs,
                                 api_name=f"{slot.key}_remove_background", **heavy)
    slot.preview.select(tools["select"], [slot.image, slot.mask, slot.click_mode, slot.tools, uploads], tool_outputs,
                        api_visibility="private", **clicks)
    slot.click_api.click(tools["click"], [slot.image, slot.click_mode, slot.click_x, slot.click_y, slot.tools, uploads],
                         tool_outputs, api_name=f"{slot.key}_click", **clicks)
    slot.undo_button.click(tools["undo"], [slot.image, slot.tools, uploads], tool_outputs,
                           api_name=f"{slot.key}_undo_click", **clicks)
    slot.mask_reset.click(tools["reset"], None, [slot.tools, slot.message], api_visibility="private",
                          concurrency_limit=None, show_progress="hidden")

