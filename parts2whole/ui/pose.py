"""The Pose slot: its components, which kind of map it holds (against what the model reads), a map made
from a photo, what the bundle records about the map, and the wiring of its events."""

from __future__ import annotations

import dataclasses
import json

import gradio as gr
from PIL import Image

from parts2whole import examples as examples_module
from parts2whole.studio.preprocessing import POSE_TOOLS, PreprocessingService
from preprocess.images import pixel_hash

from .feedback import friendly_errors
from .settings import DEFAULT_SIZE, PREPROCESS_CONCURRENCY, SIZE_PRESETS
from .uploads import POSE, POSE_PHOTO, Uploads, file_path

#: Pose maps made from photos are at least this long (the pipeline scales them to the output).
POSE_MAP_MIN_SIDE = 768
PHOTO_KINDS = {None: "the kind of pose map the loaded model reads", "densepose": "a DensePose map",
               "openpose": "an OpenPose-style DWPose skeleton map"}


def new_pose_state() -> dict:
    """Per-user: how the current pose map was made (the kind, and for a map made from a photo how: the
    DensePose box, score and weights, or the DWPose keypoints), for the kind note and the bundle."""
    return {"from_photo": False, "map_key": None, "keypoints": None, "kind": None, "details": None}


def pose_map_size(size: str | None) -> tuple[int, int]:
    """A pose map made from a photo matches the chosen output's shape, at least POSE_MAP_MIN_SIDE long."""
    height, width = SIZE_PRESETS.get(size or "", SIZE_PRESETS[DEFAULT_SIZE])
    scale = max(1.0, POSE_MAP_MIN_SIDE / max(height, width))
    return round(height * scale), round(width * scale)


def dataset_pose_note(pose_map: Image.Image) -> str | None:
    """For a DensePose map of the dataset (the pose gallery): which test sample it is."""
    source = examples_module.dataset_source(pose_map)
    if not source or "DensePose" not in source.get("role", ""):
        return None
    return (f"✓ **DensePose map** of a real person (test sample `{source['sample']}` of the dataset): "
            "the kind of map the released model reads.")


def hidden() -> dict:
    return gr.update(value=None, visible=False)


class PoseTools:
    """The Pose slot's handlers: say which kind of map it holds; turn a photo into the kind of map the model
    reads (a DensePose map for the released model, an OpenPose-style DWPose skeleton for an OpenPose
    checkpoint). Each takes the session's `Uploads` last: a file is decoded once."""

    def __init__(self, service: PreprocessingService):
        self.service = service

    def kind_note(self, pose_map: Image.Image, from_photo: bool) -> dict:
        kind = self.service.structure_kind_of(pose_map)
        return gr.update(value=self.service.structure_note(kind, from_photo=from_photo), visible=True)

    def from_photo(self, photo: Image.Image, size: str | None, kind: str | None = None):
        made = self.service.pose_from_photo(photo, pose_map_size(size), kind)
        state = {"from_photo": True, "map_key": pixel_hash(made.pose_map), "keypoints": made.keypoints,
                 "kind": made.kind, "details": made.details}
        tool = POSE_TOOLS[made.kind]
        preview = gr.update(value=made.preview, visible=True,
                            label=f"Detected pose ({tool}) · the map above is what the model gets")
        notes = [self.service.structure_note(made.kind, from_photo=True), made.note, self.service.fallback_note(tool)]
        return made.pose_map, preview, gr.update(value="  \n".join(n for n in notes if n), visible=True), state

    def on_pose_kind(self, pose_path: str | None, pose_state: dict | None, uploads: Uploads | None = None):
        """Which kind of map the Pose slot holds, compared with what the model reads."""
        if not pose_path:
            return gr.update(value="", visible=False), hidden(), new_pose_state()
        pose_map = Uploads.of(uploads).image(POSE, pose_path, what="pose map")
        state = dict(pose_state or new_pose_state())
        if state.get("from_photo") and state.get("map_key") == pixel_hash(pose_map):
            note = self.service.structure_note(state.get("kind") or "openpose", from_photo=True)
            return gr.update(value=note, visible=True), gr.skip(), state
        dataset_note = dataset_pose_note(pose_map)
        if dataset_note:
            return gr.update(value=dataset_note, visible=True), hidden(), new_pose_state()
        return self.kind_note(pose_map, False), hidden(), new_pose_state()

    def on_pose_upload(self, pose_path: str | None, size: str | None, uploads: Uploads | None = None):
        """An upload into the Pose slot: a map is kept; a photo (not a map) becomes the kind of map the model
        reads (see `from_photo`)."""
        if not pose_path:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        image = Uploads.of(uploads).image(POSE, pose_path, what="pose picture")
        if self.service.structure_kind_of(image) != "unknown":
            return gr.skip(), hidden(), self.kind_note(image, False), new_pose_state()
        return self.from_photo(image, size)

    def photo_handler(self, kind: str | None):
        """`/pose_from_photo` (kind None: what the model reads) or one kind's endpoint."""

        def on_pose_from_photo(photo, size: str | None = None, uploads: Uploads | None = None):
            if not photo:
                raise gr.Error("Choose a photo of a person first.", print_exception=False)
            image = Uploads.of(uploads).image(POSE_PHOTO, file_path(photo), what="photo")
            return self.from_photo(image, size, kind)

        on_pose_from_photo.__doc__ = (f"A photo of a person -> {PHOTO_KINDS[kind]} (the most confident person for "
                                      "DensePose, everyone for DWPose), fitted to the output size, and a preview "
                                      "over the photo.")
        return on_pose_from_photo


def make_pose_handlers(service: PreprocessingService) -> dict:
    """The Pose slot's handlers by name: kind, upload, from_photo, densepose_from_photo, openpose_from_photo."""
    tools = PoseTools(service)
    handlers = dict(kind=tools.on_pose_kind, upload=tools.on_pose_upload, from_photo=tools.photo_handler(None),
                    densepose_from_photo=tools.photo_handler("densepose"),
                    openpose_from_photo=tools.photo_handler("openpose"))
    return {name: friendly_errors(handler) for name, handler in handlers.items()}


def pose_details(service: PreprocessingService | None, structure: Image.Image | None, pose_state: dict | None):
    """(parameters, files) the bundle gets about the pose map: its kind, the expected kind, how it was made
    (`pose_map`: kind, from_photo and, for a map made from a photo, the tool, weights, people found, and the
    DensePose box in photo pixels and its score), and DWPose keypoints."""
    if service is None or structure is None:
        return {}, {}
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


@dataclasses.dataclass
class PoseSlot:
    """The Pose slot's components: the map, its kind note, the detected-pose preview, the photo button and
    the per-user state of how the map was made."""

    image: gr.Image
    kind: gr.Markdown
    preview: gr.Image
    photo: gr.UploadButton
    state: gr.State

    @property
    def outputs(self) -> list:
        return [self.image, self.preview, self.kind, self.state]


def build_pose_slot() -> PoseSlot:
    image = gr.Image(label="Pose", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                     height=260, elem_id="pose-image", buttons=["fullscreen"], format="png")
    kind = gr.Markdown("", label="Pose map kind", visible=False, elem_id="pose-kind")
    preview = gr.Image(label="Detected pose", interactive=False, visible=False, height=200,
                       format="png", elem_id="pose-preview", buttons=["fullscreen"])
    photo = gr.UploadButton("Make a pose map from a photo", file_types=["image"], size="sm", elem_id="pose-from-photo")
    return PoseSlot(image, kind, preview, photo, gr.State(new_pose_state()))


def wire_pose(pose: PoseSlot, size: gr.Dropdown, uploads: gr.State, service: PreprocessingService) -> None:
    """The kind note on every change, a photo dropped in the slot or given to the button, and one API
    endpoint per kind of map."""
    tools = make_pose_handlers(service)
    preprocess = dict(concurrency_limit=PREPROCESS_CONCURRENCY, concurrency_id="preprocess",
                      show_progress="minimal", show_progress_on=[pose.image])
    pose.image.change(tools["kind"], [pose.image, pose.state, uploads], [pose.kind, pose.preview, pose.state],
                      api_name="pose_kind", concurrency_limit=None, show_progress="hidden")
    pose.image.upload(tools["upload"], [pose.image, size, uploads], pose.outputs, api_name="pose_upload", **preprocess)
    photo_inputs = [pose.photo, size, uploads]
    pose.photo.upload(tools["from_photo"], photo_inputs, pose.outputs, api_name="pose_from_photo", **preprocess)
    for kind in ("densepose", "openpose"):  # API only: one endpoint per kind, whatever the model reads
        gr.Button(visible=False).click(tools[f"{kind}_from_photo"], photo_inputs, pose.outputs,
                                       api_name=f"pose_{kind}_from_photo", **preprocess)
