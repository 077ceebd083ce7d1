"""The examples and the pose gallery: the drawn examples of assets/examples, the dataset's photo examples
once fetched (swapped in on each open page), filling the slots from a click, and a pose from the gallery."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gradio as gr

from parts2whole import examples as examples_module
from parts2whole.core.labels import PART_LABELS

from .theme import GROUND_TRUTH_LABEL

#: The drawn examples, one folder each, in the checkout's assets/ (served as they are).
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
#: While the photo examples are being fetched, each open page asks every this many seconds whether they are ready.
EXAMPLES_POLL_S = 3.0


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


def example_items(content: dict) -> list[tuple[str, str]]:
    if content["photos"]:
        return [(e.thumbnail, f"{e.title} · real photo first") for e in content["examples"]]
    return [(e.thumbnail, e.title) for e in content["examples"]]


def pose_items(content: dict) -> list[tuple[str, str]]:
    return [(p["thumbnail"], p["label"]) for p in content["poses"]]


def make_examples_refresh(library: examples_module.ExampleLibrary):
    """On page load and on each timer tick while fetching: swap in the photo examples once they are there."""

    def refresh(shown: dict | None):
        snapshot = library.snapshot()
        timer = gr.Timer(active=snapshot.state == examples_module.STATE_FETCHING)
        if shown and shown.get("version") == snapshot.version:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), timer
        content = shown_content(snapshot)
        return (gr.update(value=example_items(content)), gr.update(value=content["note"]),
                gr.update(value=pose_items(content)), content, timer)

    return refresh


def load_pose_from_gallery(shown: dict | None, evt: gr.SelectData):
    """The pose clicked in the pose gallery goes into the Pose slot (its kind note follows)."""
    poses = (shown or {}).get("poses") or []
    if evt is None or evt.index is None or not 0 <= evt.index < len(poses):
        return gr.skip()
    return poses[evt.index]["path"]


@dataclasses.dataclass
class Galleries:
    """The components of the examples: their gallery and note, the real photo, the poll timer, the pose
    gallery, and what this page shows (a per-page gr.State, swapped when the fetch ends)."""

    examples: gr.Gallery
    note: gr.Markdown
    ground_truth: gr.Image
    timer: gr.Timer
    shown: gr.State
    poses: gr.Gallery | None = None

    @property
    def refreshed(self) -> list:
        return [self.examples, self.note, self.poses, self.shown, self.timer]


def build_examples(library: examples_module.ExampleLibrary) -> Galleries:
    """The examples gallery, its note, the real photo of a photo example, and the poll timer."""
    snapshot = library.snapshot()
    content = shown_content(snapshot)
    shown = gr.State(content)
    gallery = gr.Gallery(
        example_items(content), label="Examples · click one to fill the slots", columns=4, fit_columns=False,
        height=250, allow_preview=False, object_fit="contain", interactive=False, elem_id="examples", buttons=[])
    note = gr.Markdown(content["note"], elem_id="examples-note")
    ground_truth = gr.Image(label=GROUND_TRUTH_LABEL, interactive=False, visible=False, height=300,
                            elem_id="example-ground-truth", buttons=["fullscreen"])
    timer = gr.Timer(EXAMPLES_POLL_S, active=snapshot.state == examples_module.STATE_FETCHING)
    return Galleries(gallery, note, ground_truth, timer, shown)


def build_pose_gallery(galleries: Galleries) -> gr.Gallery:
    """Photo examples: DensePose maps of real test targets; else the drawn ones."""
    galleries.poses = gr.Gallery(
        pose_items(galleries.shown.value), label="Pose gallery · DensePose maps of real people, click one",
        columns=8, height=150, allow_preview=False, object_fit="contain", interactive=False,
        elem_id="pose-gallery", buttons=[])
    return galleries.poses


def wire_galleries(demo: gr.Blocks, galleries: Galleries, library: examples_module.ExampleLibrary,
                   slot_images: list[gr.Image], pose: gr.Image, prompt: gr.Textbox) -> None:
    """A click on an example fills the slots, the pose and the prompt; one on a pose fills the Pose slot;
    each page swaps in the photo examples when they are fetched."""
    quiet = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
    galleries.examples.select(make_example_loader(), galleries.shown,
                              slot_images + [pose, prompt, galleries.ground_truth], **quiet)
    galleries.poses.select(load_pose_from_gallery, galleries.shown, pose, **quiet)
    refresh = make_examples_refresh(library)
    demo.load(refresh, galleries.shown, galleries.refreshed, **quiet)
    galleries.timer.tick(refresh, galleries.shown, galleries.refreshed, **quiet)
