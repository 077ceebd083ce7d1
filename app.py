"""Parts2Whole studio: the web app (Gradio). UI only; the model lives in `parts2whole.studio`.

Run `python app.py` (or `make run`) and open http://127.0.0.1:7860. Options: `--weights` (Hub id, folder
or "tiny"), `--share` for a public link, `--host`/`--port` (or GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
Every event people may script has an `api_name`, so `gradio_client` can call `/generate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

if os.environ.get("SPACES_ZERO_GPU"):  # Hugging Face ZeroGPU: `spaces` must be imported before torch uses CUDA
    import spaces  # noqa: F401

import gradio as gr
from PIL import Image, ImageChops

from parts2whole import studio as studio_module
from parts2whole.errors import CheckpointError, GenerationCancelled, Parts2WholeInputError
from parts2whole.labels import PART_LABELS, UI_SLOT_NAMES
from preprocess.images import load_image, load_mask

logger = logging.getLogger("parts2whole.app")

APP_TITLE = "Parts2Whole studio"
#: Optional module with the preprocessing UI tools (see UiExtensions).
EXTENSIONS_MODULE = "preprocess.ui"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
#: Bundles older than this are deleted when a new one is written (they are also in Gradio's cache).
BUNDLE_MAX_AGE_S = 3600
BUNDLE_ROOT = Path(tempfile.gettempdir()) / "parts2whole-bundles"
#: Queue: one generation at a time per process (one GPU), a bounded waiting line.
GPU_CONCURRENCY = 1
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

#: Brush used to paint masks: a see-through magenta, so the part stays visible under it.
MASK_PAINT_COLOUR = "#ff2d95"
MASK_PAINT_OPACITY = 0.55
BRUSH_ADDS = "Brush adds to the used area"
BRUSH_REMOVES = "Brush removes from it"
MASK_THRESHOLD = 127
#: Longest side of mask previews and of the brush canvas, in pixels.
PREVIEW_MAX_SIDE = 768

CSS = """
.slot-card { border-radius: 12px; }
.slot-card .mask-preview img { object-fit: contain; }
#tiny-model-banner { background: #fff4d6; border: 1px solid #e8c15a; border-radius: 10px; padding: 10px 14px; }
#tiny-model-banner p { margin: 0; color: #5b4300; }
#generate-button { min-height: 52px; font-size: 1.1em; }
#run-status p { margin: 0; }
.brush-hint p { margin: 0; font-size: 0.9em; }
"""

INTRO = (
    f"# {APP_TITLE}\n"
    "Upload reference pictures of a person's parts (each optional, at least one) and a pose map, write a prompt, "
    "then press Generate. Under each part you see the area the model will use: faded pixels are ignored. "
    "Open *Edit mask* to paint that area or upload your own mask."
)

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
    """The components of one appearance slot. The preprocessing features attach to these (e.g. an
    automatic mask writes `mask` and refreshes `preview` and `editor`; click-to-refine listens to
    `preview.select`)."""

    label: str  # official part label, e.g. "upper body clothes"
    image: gr.Image  # the reference picture
    mask: gr.Image  # the mask in use (hidden; white = use); empty = the picture's transparency
    preview: gr.Image  # the picture with ignored pixels faded
    editor: gr.ImageEditor  # paint on the mask with a brush (strokes are merged into `mask`)
    brush_mode: gr.Radio  # whether strokes add to or remove from the mask
    mask_upload: gr.UploadButton
    mask_reset: gr.Button

    @property
    def key(self) -> str:
        return self.label.replace(" ", "_")


SlotTool = Callable[[PartSlot], None]
PoseTool = Callable[[gr.Image], None]


@dataclasses.dataclass
class UiExtensions:
    """Where preprocessing features plug into the UI without changing its layout.

    `preprocess/ui.py`, when it exists, may define SLOT_TOOLS (functions called with each PartSlot inside
    its "Edit mask" section: add an "Automatic mask" button, listen to `slot.preview.select` for
    click-to-refine, write `slot.mask` and refresh with `slot_updates`) and POSE_TOOLS (functions called
    with the Pose image under it, e.g. "Make a pose map from a photo").
    """

    slot_tools: list[SlotTool] = dataclasses.field(default_factory=list)
    pose_tools: list[PoseTool] = dataclasses.field(default_factory=list)


def load_extensions() -> UiExtensions:
    try:
        module = importlib.import_module(EXTENSIONS_MODULE)
    except ModuleNotFoundError as error:
        if error.name != EXTENSIONS_MODULE:
            raise
        return UiExtensions()
    return UiExtensions(list(getattr(module, "SLOT_TOOLS", [])), list(getattr(module, "POSE_TOOLS", [])))


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


#: Public name for extensions: (mask, preview, editor) updates showing `image` with `mask` (None = its alpha).
slot_updates = _slot_outputs


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


def build_slot(label: str, slot_tools: Sequence[SlotTool] = ()) -> PartSlot:
    name = UI_SLOT_NAMES[label]
    key = label.replace(" ", "_")
    with gr.Column(elem_id=f"slot-{key}", elem_classes=["slot-card"], min_width=200):
        image = gr.Image(label=name, type="filepath", image_mode=None, sources=["upload", "clipboard"],
                         height=220, elem_id=f"{key}-image", buttons=["fullscreen"])
        preview = gr.Image(label="Used area", interactive=False, height=150, visible=False, format="png",
                           elem_id=f"{key}-mask-preview", elem_classes=["mask-preview"], buttons=[])
        mask = gr.Image(label=f"{name} mask", type="filepath", image_mode="L", visible=False, format="png",
                        elem_id=f"{key}-mask")
        with gr.Accordion("Edit mask", open=False, elem_id=f"{key}-mask-tools"):
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
            slot = PartSlot(label, image, mask, preview, editor, brush_mode, mask_upload, mask_reset)
            for tool in slot_tools:
                tool(slot)  # preprocessing tools add their buttons here and wire their events
    return slot


def wire_slot(slot: PartSlot) -> None:
    on_change, on_upload, on_painted, on_reset = make_slot_handlers(slot.label)
    outputs = [slot.mask, slot.preview, slot.editor]
    light = dict(concurrency_limit=None, show_progress="hidden")
    slot.image.change(on_change, slot.image, outputs, api_name=f"{slot.key}_mask_preview", **light)
    slot.mask_upload.upload(on_upload, [slot.mask_upload, slot.image], outputs, api_name=f"{slot.key}_mask_upload",
                            **light)
    painted_inputs = [slot.editor, slot.image, slot.mask, slot.brush_mode]
    slot.editor.apply(on_painted, painted_inputs, outputs, api_visibility="private", **light)
    slot.editor.input(on_painted, painted_inputs, outputs, trigger_mode="always_last", api_visibility="private",
                      **light)
    slot.mask_reset.click(on_reset, slot.image, outputs, api_visibility="private", **light)


# ----------------------------------------------------------------------------------------- generation


def new_session() -> dict:
    """Per-user state (kept by Gradio per browser session, never shared): the last run's settings."""
    return {"runs": 0, "last_seed": None}


def _write_bundle(result: studio_module.GenerationResult, inputs: dict[str, str], mask_sources: dict[str, str]) -> Path:
    """A zip with everything needed to reproduce the result: inputs, masks, pose map, parameters, outputs."""
    _remove_old_bundles()
    folder = BUNDLE_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    request = result.request
    path = folder / f"parts2whole-seed{request.seed}.zip"
    parameters = result.parameters | {"mask_sources": mask_sources, "original_files": inputs}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for label, image in request.references.items():
            stem = label.replace(" ", "_")
            bundle.writestr(f"inputs/{stem}.png", studio_module.png_bytes(image))
            mask = request.masks.get(label)
            mask = studio_module.default_mask(image) if mask is None else mask
            bundle.writestr(f"masks/{stem}.png", studio_module.png_bytes(mask))
        bundle.writestr("inputs/pose.png", studio_module.png_bytes(request.structure))
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
        f"--num-images {request.num_images} --fusion-blocks {request.fusion_blocks} -o results/again.png\n"
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
            f"{request.steps}/{request.steps} steps · {request.height}×{request.width}{reuse}{tiny}{notes}")


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


def make_generate(studio: studio_module.Studio):
    """The Generate handler, bound to a studio (explicit parameters, so the API documents each one)."""

    def generate(face=None, face_mask=None, hair_or_headwear=None, hair_or_headwear_mask=None,
                 upper_body_clothes=None, upper_body_clothes_mask=None, lower_body_clothes=None,
                 lower_body_clothes_mask=None, whole_body_clothes=None, whole_body_clothes_mask=None, shoes=None,
                 shoes_mask=None, pose=None, prompt="", negative_prompt="", seed=0,
                 randomize_seed=True, steps=studio_module.DEFAULT_STEPS, guidance=studio_module.DEFAULT_GUIDANCE,
                 size=DEFAULT_SIZE, num_images=1, fusion_blocks=studio_module.DEFAULT_FUSION_BLOCKS,
                 session=None, progress=gr.Progress()):
        files = dict(zip(PART_LABELS, (face, hair_or_headwear, upper_body_clothes, lower_body_clothes,
                                       whole_body_clothes, shoes)))
        mask_files = dict(zip(PART_LABELS, (face_mask, hair_or_headwear_mask, upper_body_clothes_mask,
                                            lower_body_clothes_mask, whole_body_clothes_mask, shoes_mask)))
        session = dict(session or new_session())
        progress(0.0, desc=studio_module.STAGE_PREPROCESSING)
        try:
            references, masks, mask_sources = {}, {}, {}
            for label, path in files.items():
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
                negative_prompt=negative_prompt or "", seed=None if randomize_seed else int(seed or 0),
                steps=int(steps), guidance_scale=float(guidance), height=height, width=width,
                num_images=int(num_images), fusion_blocks=fusion_blocks)

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
        bundle = _write_bundle(result, {label: Path(path).name for label, path in files.items() if path},
                               mask_sources)
        session.update(runs=session["runs"] + 1, last_seed=result.request.seed)
        gallery = [(image, f"seed {result.request.seed} · #{index + 1}") for index, image in enumerate(result.images)]
        return (gallery, str(bundle), _status_line(result, studio),
                session, result.request.seed)

    return generate


# ----------------------------------------------------------------------------------------- examples


@dataclasses.dataclass(frozen=True)
class Example:
    """One folder of assets/examples: part images by label, a pose map, a prompt and a thumbnail."""

    title: str
    parts: dict[str, str]
    pose: str
    prompt: str
    thumbnail: str


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


def make_example_loader(examples: list[Example]):
    def load_example(evt: gr.SelectData):
        """Fill every slot from the example clicked in the gallery (slots it lacks are emptied)."""
        example = examples[evt.index]
        return [example.parts.get(label) for label in PART_LABELS] + [example.pose, example.prompt]

    return load_example


# ----------------------------------------------------------------------------------------- layout


def build_demo(studio: studio_module.Studio, extensions: UiExtensions | None = None) -> gr.Blocks:
    """The whole UI around one studio. Nothing per-user lives outside `gr.State`."""
    extensions = load_extensions() if extensions is None else extensions
    tiny = studio.is_tiny
    default_size = TINY_DEFAULT_SIZE if tiny else DEFAULT_SIZE
    default_steps = TINY_DEFAULT_STEPS if tiny else studio_module.DEFAULT_STEPS
    gr.set_static_paths([EXAMPLES_DIR])  # served from assets/ as they are, never expired from the cache
    with gr.Blocks(title=APP_TITLE, delete_cache=(BUNDLE_MAX_AGE_S, BUNDLE_MAX_AGE_S)) as demo:
        session = gr.State(new_session())
        gr.Markdown(INTRO)
        banner = studio.banner()
        if banner and tiny:
            banner += (f" To keep it quick, it starts at {default_size.split(' ·')[0]} px and {default_steps} steps "
                       "(change them under *Advanced settings*).")
        gr.Markdown(banner or "", visible=bool(banner), elem_id="tiny-model-banner")

        examples = load_examples()
        example_gallery = None
        if examples:
            example_gallery = gr.Gallery(
                [(example.thumbnail, example.title) for example in examples], label="Examples · click one to fill the slots",
                columns=6, fit_columns=False, height=230, allow_preview=False, object_fit="contain", interactive=False,
                elem_id="examples", buttons=[])

        slots: list[PartSlot] = []
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### Reference parts · each optional, at least one")
                for row_labels in (PART_LABELS[:3], PART_LABELS[3:]):
                    with gr.Row(equal_height=False):
                        for label in row_labels:
                            slots.append(build_slot(label, extensions.slot_tools))
            with gr.Column(scale=2):
                pose = gr.Image(label="Pose", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                height=260, elem_id="pose-image", buttons=["fullscreen"])
                for tool in extensions.pose_tools:
                    tool(pose)
                gr.Markdown("The pose map is a DensePose rendering of the body (coloured parts on black), "
                            "which is what the released model reads.", elem_id="pose-help")
                prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="prompt",
                                    placeholder="e.g. a woman in a red shirt, high quality, realistic")
                negative_prompt = gr.Textbox("", label="Negative prompt", lines=1, elem_id="negative-prompt",
                                             placeholder="e.g. blurry, low quality, deformed")
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
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=4)
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1, min_width=80)
                status = gr.Markdown("", label="Status", elem_id="run-status")
                result = gr.Gallery(label="Result", columns=2, height=420, object_fit="contain", format="png",
                                    elem_id="result-gallery", buttons=["download", "fullscreen"], interactive=False)
                with gr.Row():
                    bundle = gr.DownloadButton("Download bundle (.zip)", elem_id="download-bundle")
                    reuse_seed = gr.Button("Reuse last seed", size="lg", elem_id="reuse-seed")
                last_seed = gr.Number(label="Seed used", visible=False, precision=0)

        for slot in slots:
            wire_slot(slot)

        if example_gallery is not None:
            example_gallery.select(make_example_loader(examples), None, [slot.image for slot in slots] + [pose, prompt],
                                   api_visibility="private", concurrency_limit=None, show_progress="hidden")

        generate_inputs = []
        for slot in slots:
            generate_inputs += [slot.image, slot.mask]
        generate_inputs += [pose, prompt, negative_prompt, seed, randomize_seed, steps, guidance, size, num_images,
                            fusion_blocks, session]
        generated = generate_button.click(make_generate(studio), generate_inputs, [result, bundle, status, session, last_seed],
                              api_name="generate", concurrency_limit=GPU_CONCURRENCY, concurrency_id="gpu",
                              show_progress_on=[result])

        def reuse(session_state: dict):
            seed_value = (session_state or {}).get("last_seed")
            if seed_value is None:
                raise gr.Error("Generate once first: there is no seed to reuse yet.", print_exception=False)
            return seed_value, False

        reuse_seed.click(reuse, session, [seed, randomize_seed], api_visibility="private", concurrency_limit=None)
        # Stop cancels the running (or waiting) generation; the handler sees it and frees the model.
        stop_button.click(None, None, None, cancels=[generated], api_visibility="private", queue=False)
    return demo


#: Largest upload the server accepts (Gradio refuses bigger files before they reach a handler).
MAX_UPLOAD_MB = 50
#: Gradio's worker threads for all handlers (the GPU queue is limited separately, see GPU_CONCURRENCY).
MAX_THREADS = 40


def queue(demo: gr.Blocks) -> gr.Blocks:
    """GPU work waits in line, GPU_CONCURRENCY at a time (MAX_QUEUE_SIZE may wait; more are turned away
    with "queue full"); cheap UI events (mask previews) have no limit and run beside it."""
    return demo.queue(default_concurrency_limit=GPU_CONCURRENCY, max_size=MAX_QUEUE_SIZE)


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
    studio = studio_module.get_studio(args.weights, device=args.device, dtype=args.dtype)
    weights = studio.weights  # resolve now: downloads, or one line saying why the tiny model is used
    print(f"Weights: {weights.name}" + (" - outputs are noise, not portraits" if weights.is_tiny else ""), flush=True)
    if studio.device_choice.zero_gpu:
        studio.pipeline()  # ZeroGPU: load on CPU at start; each generation moves it to the GPU
    demo = queue(build_demo(studio))
    demo.launch(**launch_kwargs(args))


if __name__ == "__main__":
    main()
