"""Generate: the files and settings of the form -> one studio request -> the gallery, the bundle and a
status line; Stop (cancellation), the strip of inputs used, and reusing the last seed."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from PIL import Image

from parts2whole import studio as studio_module
from parts2whole.core.errors import CheckpointError, GenerationCancelled, Parts2WholeInputError
from parts2whole.core.labels import PART_LABELS, UI_SLOT_NAMES
from parts2whole.serve import ServiceUnavailable
from parts2whole.studio import DEFAULT_SCHEDULER, SCHEDULERS
from parts2whole.studio.preprocessing import PreprocessingService

from .bundle import dataset_sources, write_bundle
from .feedback import failure, user_error
from .masks import default_source, display_size, overlay_item
from .pose import pose_details
from .settings import DEFAULT_SIZE, SIZE_PRESETS
from .uploads import POSE, Uploads

try:  # Gradio's internals: another version may move them (then no cancellation, never a false one)
    from gradio.context import LocalContext
except ImportError:  # pragma: no cover
    LocalContext = None

logger = logging.getLogger("parts2whole.app")


def new_session() -> dict:
    """Per-user state (kept by Gradio per browser session, never shared): the last run's settings."""
    return {"runs": 0, "last_seed": None}


@dataclasses.dataclass
class FormInputs:
    """The decoded pictures of the form: references and masks by label, where each mask came from, the pose map."""

    references: dict[str, Image.Image]
    masks: dict[str, Image.Image]
    mask_sources: dict[str, str]
    structure: Image.Image | None


def read_inputs(uploads: Uploads, files: dict[str, str | None], mask_files: dict[str, str | None],
                pose: str | None) -> FormInputs:
    """Each slot's picture and mask and the pose map, decoded once per session (see `Uploads`)."""
    references, masks, mask_sources = {}, {}, {}
    for label, path in files.items():
        if mask_files[label] and not path:
            raise Parts2WholeInputError(f"There is a mask for '{UI_SLOT_NAMES[label]}' but no image for it; "
                                        "add the image or drop the mask.")
        if not path:
            continue
        references[label] = uploads.reference(label, path)
        if mask_files[label]:
            masks[label] = uploads.reference_mask(label, mask_files[label], references[label].size).mask
        mask_sources[label] = "given" if label in masks else default_source(references[label])
    structure = uploads.image(POSE, pose, what="pose map") if pose else None
    return FormInputs(references, masks, mask_sources, structure)


def output_size(size: str | None) -> tuple[int, int]:
    if size not in SIZE_PRESETS:
        raise Parts2WholeInputError(f"Unknown output size {size!r}; pick one of the listed sizes.")
    return SIZE_PRESETS[size]


def cancel_check() -> Callable[[], bool]:
    """A function telling whether the Gradio event running this handler was cancelled (the Stop button,
    or the browser/client went away), so a generation stops at the next step and frees the model.
    Outside a queued Gradio event (tests, scripts) it always says no."""
    try:
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


@contextlib.contextmanager
def generation_errors():
    """Inputs to fix, Stop and failures become one line each (never a traceback)."""
    try:
        yield
    except (Parts2WholeInputError, CheckpointError) as error:  # also out of memory: "try a smaller size"
        raise user_error(error) from None
    except ServiceUnavailable as error:  # every device worker down, or the queue full: say so, nothing is lost
        raise gr.Error(str(error), title="Busy", print_exception=False) from None
    except GenerationCancelled:
        logger.info("generation stopped")
        raise gr.Error("Stopped. Press Generate to start again.", title="Stopped", print_exception=False) from None
    except gr.Error:
        raise
    except Exception as error:  # a bug or an environment problem: log it, show one line
        logger.exception("generation failed")
        raise failure("Generation failed", error) from None


def status_line(result: studio_module.GenerationResult, studio: studio_module.Studio,
                pose_parameters: dict | None = None) -> str:
    request = result.request
    reuse = " · reference encoding reused" if result.reused_references else ""
    count = f"{len(result.images)} images" if len(result.images) != 1 else "1 image"
    tiny = " · tiny random model" if studio.is_tiny else ""
    notes = "".join(f"  \nℹ️ {note}" for note in getattr(result, "notes", []))
    status = (f"✓ **Done**: {count} in {result.seconds:.1f} s · seed **{request.seed}** · "
              f"{request.steps}/{request.steps} steps · {SCHEDULERS[request.scheduler].label} · "
              f"{request.height}×{request.width}{reuse}{tiny}{notes}")
    kind, expected = (pose_parameters or {}).get("structure_kind"), (pose_parameters or {}).get("expected_structure_kind")
    if kind and expected and kind != expected:
        status += f"  \n⚠️ The pose map looks like **{kind}**; this model reads **{expected}** maps."
    return status


def bundle_of(result, inputs: FormInputs, files: dict[str, str | None], service: PreprocessingService | None,
              pose_state: dict | None) -> tuple[Path, dict]:
    """The result's bundle, and what it says about the pose map (for the status line)."""
    try:
        pose_parameters, pose_files = pose_details(service, inputs.structure, pose_state)
    except Exception:  # noqa: BLE001 - the bundle is still useful without them
        logger.exception("could not describe the pose map")
        pose_parameters, pose_files = {}, {}
    pose_parameters.update(dataset_sources(inputs.references, inputs.structure))
    bundle = write_bundle(result, {label: Path(path).name for label, path in files.items() if path},
                          inputs.mask_sources, pose_parameters, pose_files)
    return bundle, pose_parameters


def make_generate(studio: studio_module.Studio, service: PreprocessingService | None = None):
    """The Generate handler, bound to a studio (explicit parameters, so the API documents each one)."""

    def generate(face=None, face_mask=None, hair_or_headwear=None, hair_or_headwear_mask=None,
                 upper_body_clothes=None, upper_body_clothes_mask=None, lower_body_clothes=None,
                 lower_body_clothes_mask=None, whole_body_clothes=None, whole_body_clothes_mask=None, shoes=None,
                 shoes_mask=None, pose=None, prompt="", negative_prompt="", seed=0,
                 randomize_seed=True, steps=studio_module.DEFAULT_STEPS, guidance=studio_module.DEFAULT_GUIDANCE,
                 size=DEFAULT_SIZE, num_images=1, fusion_blocks=studio_module.DEFAULT_FUSION_BLOCKS,
                 scheduler=DEFAULT_SCHEDULER, session=None, pose_state=None, uploads=None, progress=gr.Progress()):
        files = dict(zip(PART_LABELS, (face, hair_or_headwear, upper_body_clothes, lower_body_clothes,
                                       whole_body_clothes, shoes)))
        mask_files = dict(zip(PART_LABELS, (face_mask, hair_or_headwear_mask, upper_body_clothes_mask,
                                            lower_body_clothes_mask, whole_body_clothes_mask, shoes_mask)))
        session = dict(session or new_session())
        progress(0.0, desc=studio_module.STAGE_PREPROCESSING)
        with generation_errors():
            inputs = read_inputs(Uploads.of(uploads), files, mask_files, pose)
            height, width = output_size(size)
            request = studio_module.GenerationRequest(
                references=inputs.references, masks=inputs.masks, structure=inputs.structure, prompt=prompt or "",
                negative_prompt=negative_prompt or "", seed=None if randomize_seed else (0 if seed is None else seed),
                steps=steps, guidance_scale=guidance, height=height, width=width, num_images=num_images,
                fusion_blocks=fusion_blocks, scheduler=scheduler or DEFAULT_SCHEDULER)  # the studio checks each value
            result = studio.generate(request, progress=lambda update: progress(update.fraction, desc=update.text),
                                     cancelled=cancel_check())
        bundle, pose_parameters = bundle_of(result, inputs, files, service, pose_state)
        session.update(runs=session["runs"] + 1, last_seed=result.request.seed)
        gallery = [(image, f"seed {result.request.seed} · #{index + 1}") for index, image in enumerate(result.images)]
        return (gallery, str(bundle), status_line(result, studio, pose_parameters), session, result.request.seed)

    return generate


def make_used_inputs(service: PreprocessingService | None = None):
    """After a generation: each part with the mask that was used, and the pose map, next to the result."""

    def used_inputs(*values):
        *slot_values, pose, pose_state, uploads = values
        uploads = Uploads.of(uploads)
        items = []
        for label, path, mask_path in zip(PART_LABELS, slot_values[0::2], slot_values[1::2]):
            if not path:
                continue
            image = uploads.reference(label, path)
            mask = (uploads.reference_mask(label, mask_path, image.size).mask if mask_path
                    else studio_module.default_mask(image))
            items.append((overlay_item(image, mask),
                          f"{UI_SLOT_NAMES[label]} · {studio_module.mask_coverage(mask):.0%} used"))
        if pose:
            pose_map = uploads.image(POSE, pose, what="pose map")
            kind = pose_details(service, pose_map, pose_state)[0].get("structure_kind")
            items.append((display_size(pose_map), "Pose" + (f" · {kind}" if kind else "")))
        return gr.update(value=items, visible=True)

    return used_inputs


def reuse(session: dict | None):
    """The last run's seed into the Seed box, with Random seed unticked."""
    seed = (session or {}).get("last_seed")
    if seed is None:
        raise gr.Error("Generate once first: there is no seed to reuse yet.", print_exception=False)
    return seed, False
