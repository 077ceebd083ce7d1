"""Tiny preprocessing models in the real formats, built in code in seconds (no download).

They stand in for the real models when the weights cannot be had (Hub unreachable, or the app runs
with ``--weights tiny``), exactly like ``parts2whole.model.tiny`` does for the diffusion model: every
preprocessing tool still runs end to end through the real code paths, and results are rough
placeholders. The tests build their models from here too.

* Human parser: a 2-stage SegFormer with random (seeded) weights, saved with ``save_pretrained``.
* Segment Anything: a real ``Sam`` with a 1-block ViT on 64x64 inputs, random (seeded) weights.
* DWPose: ONNX files with the real signatures. The app's pair finds one person covering the picture
  and puts a fixed standing skeleton in it (:class:`WholePictureDetector`, :class:`TemplateSimccPose`);
  the tests' pair finds bright squares and puts every keypoint on the reddest spot.
* Background removal: a U^2-Net-signature ONNX model; the app's keeps what differs from the
  picture's border colour (:class:`BorderContrastSubjectNet`), the tests' what is redder than blue.

:func:`ensure_tiny_preprocessing` writes the app's set into one folder once (file lock, completion
marker) and :func:`load_tiny_models` loads it.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as functional
from PIL import Image

from .background import CUSTOM_MODEL_SESSION, BackgroundRemover
from .parsing import PARSER_CLASS_NAMES
from .pose import DETECTOR_FILE, NUM_KEYPOINTS, POSE_FILE
from .sam import SamSegmenter, load_sam_weights

FACE_CLASS = PARSER_CLASS_NAMES.index("Face")
#: Written last into the tiny folder, so a half-built folder is never used.
COMPLETE_MARKER = ".complete"
#: Bump when the tiny models change, so an old folder is rebuilt.
TINY_PREPROCESS_VERSION = "1"
PARSER_SUBFOLDER = "segformer"
SAM_FILE = "sam_tiny.safetensors"
DWPOSE_SUBFOLDER = "dwpose"
BACKGROUND_FILE = "background_tiny.onnx"


# --- SegFormer human parser ------------------------------------------------------------------------


def tiny_segformer(class_names=PARSER_CLASS_NAMES, constant_class: int | None = None, margin: float = 20.0, seed: int = 0):
    """A 2-stage SegFormer; with ``constant_class`` it sees that class everywhere (by ``margin``)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation  # heavy: imported on first use, keeps importing this package light

    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=len(class_names),
        id2label={index: name for index, name in enumerate(class_names)},
        label2id={name: index for index, name in enumerate(class_names)},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    if constant_class is not None:
        with torch.no_grad():
            model.decode_head.classifier.weight.zero_()
            model.decode_head.classifier.bias.fill_(0.0)
            model.decode_head.classifier.bias[constant_class] = margin
    return model


def save_tiny_parser(folder, class_names=PARSER_CLASS_NAMES, constant_class=None, margin=20.0, seed: int = 0):
    """Write a tiny parser in ``save_pretrained`` layout (what :class:`~preprocess.parsing.HumanParser` loads)."""
    from transformers import SegformerImageProcessor  # heavy: imported on first use, keeps importing this package light

    tiny_segformer(class_names, constant_class, margin, seed).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


# --- Segment Anything ------------------------------------------------------------------------------


TINY_IMAGE_SIZE = 64


def build_tiny_sam(seed: int = 0):
    """A real ``Sam`` with a 1-block ViT encoder on 64x64 inputs (embedding grid 4x4, masks 16x16)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer  # heavy: imported on first use, keeps importing this package light

    torch.manual_seed(seed)
    prompt_dim, patch = 32, 16
    grid = TINY_IMAGE_SIZE // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=TINY_IMAGE_SIZE, patch_size=patch, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0,
            out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=0, global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=16,
        ),
    )
    return sam.eval()


# --- DWPose -----------------------------------------------------------------------------------------


def export_onnx(module, example, path, input_name, output_names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=output_names,
                          dynamo=False)
    return path


def _yolox_levels(images, per_level):
    """YOLOX's raw (1, 8400, 85) output from ``per_level(stride, cells) -> (x, y, w, h, objectness)`` maps."""
    levels = []
    for stride in (8, 16, 32):
        cells = functional.avg_pool2d(images.mean(dim=1, keepdim=True), stride)
        x, y, w, h, objectness = per_level(stride, cells)
        classes = (cells * 0.0 - 10.0).repeat(1, 80, 1, 1)
        classes[:, 0] = 10.0  # person
        raw = torch.cat([x, y, w, h, torch.sigmoid(objectness), torch.sigmoid(classes)], dim=1)
        levels.append(raw.flatten(2).transpose(1, 2))
    return torch.cat(levels, dim=1)


# The tests' detector marks a stride-32 cell as a person when its 5x5-cell neighbourhood is bright,
# with a 5-cell box centred on that cell: a bright 160x160 square (at 640 px) gives exactly one box.
BOX_CELLS = 5
PERSON_BRIGHTNESS_THRESHOLD = 0.7
SHARPNESS = 50.0


class TinyYoloxDetector(torch.nn.Module):
    """YOLOX's ONNX signature: images (1, 3, 640, 640) raw pixels -> output (1, 8400, 85), no NMS."""

    def forward(self, images):
        def per_level(stride, cells):
            brightness = cells / 255.0
            if stride == 32:
                neighbourhood = functional.avg_pool2d(brightness, BOX_CELLS, stride=1, padding=BOX_CELLS // 2)
                objectness = SHARPNESS * (neighbourhood - PERSON_BRIGHTNESS_THRESHOLD)
            else:
                objectness = cells * 0.0 - 20.0
            centre, size = cells * 0.0 + 0.5, cells * 0.0 + math.log(BOX_CELLS)
            return centre, centre, size, size, objectness

        return _yolox_levels(images, per_level)


class TinySimccPose(torch.nn.Module):
    """DWPose-L's ONNX signature: input (1, 3, 384, 288) -> simcc_x (1, 133, 576), simcc_y (1, 133, 768).

    Every keypoint is predicted at the brightest column / row of the crop's FIRST channel (SimCC
    bins are half pixels), so a red dot is found only when the model is fed RGB.
    """

    def forward(self, input):
        brightness = input[:, 0]  # (1, 384, 288)
        columns = brightness.mean(dim=1, keepdim=True)  # (1, 1, 288)
        rows = brightness.mean(dim=2).unsqueeze(1)  # (1, 1, 384)
        simcc_x = functional.interpolate(columns, scale_factor=2.0, mode="nearest").expand(1, NUM_KEYPOINTS, 576)
        simcc_y = functional.interpolate(rows, scale_factor=2.0, mode="nearest").expand(1, NUM_KEYPOINTS, 768)
        return simcc_x, simcc_y


#: rtmlib pads the letterboxed detector input with this grey.
LETTERBOX_GREY = 114.0


class WholePictureDetector(torch.nn.Module):
    """YOLOX's ONNX signature; one person whose box covers the picture (the letterbox's non-grey part).

    Every cell predicts the same box, so NMS keeps exactly one.
    """

    def forward(self, images):
        content = ((images - LETTERBOX_GREY).abs() > 0.5).amax(dim=1)[0].float()  # (640, 640)
        height, width = images.shape[-2:]
        columns = torch.arange(1, width + 1, dtype=torch.float32)
        rows = torch.arange(1, height + 1, dtype=torch.float32)
        right = (content.amax(dim=0) * columns).amax().clamp(min=1.0)
        bottom = (content.amax(dim=1) * rows).amax().clamp(min=1.0)

        def per_level(stride, cells):
            grid_y = torch.arange(cells.shape[-2], dtype=torch.float32).view(1, 1, -1, 1)
            grid_x = torch.arange(cells.shape[-1], dtype=torch.float32).view(1, 1, 1, -1)
            zero = cells * 0.0
            x = zero + right / 2 / stride - grid_x
            y = zero + bottom / 2 / stride - grid_y
            w = zero + torch.log(0.9 * right / stride)
            h = zero + torch.log(0.96 * bottom / stride)
            return x, y, w, h, zero + 4.0

        return _yolox_levels(images, per_level)


def _template_keypoints() -> np.ndarray:
    """A person standing, facing the camera: 133 COCO-WholeBody (u, v) in a 0..1 crop (person's left = right)."""
    points = np.zeros((NUM_KEYPOINTS, 2), dtype=np.float32)
    body = [(0.50, 0.15), (0.52, 0.135), (0.48, 0.135), (0.545, 0.145), (0.455, 0.145), (0.61, 0.25), (0.39, 0.25),
            (0.66, 0.39), (0.34, 0.39), (0.68, 0.51), (0.32, 0.51), (0.57, 0.52), (0.43, 0.52), (0.58, 0.69),
            (0.42, 0.69), (0.585, 0.85), (0.415, 0.85)]
    feet = [(0.61, 0.875), (0.63, 0.87), (0.58, 0.865), (0.39, 0.875), (0.37, 0.87), (0.42, 0.865)]
    points[:17], points[17:23] = body, feet
    cx, cy, rx, ry = 0.5, 0.145, 0.04, 0.05
    face = []
    for i in range(17):  # jaw: left ear, under the chin (8), right ear
        angle = math.pi - math.pi * i / 16
        face.append((cx + rx * math.cos(angle), cy + ry * math.sin(angle)))
    face += [(cx - 0.8 * rx + 1.6 * rx * i / 9, cy - 0.55 * ry) for i in range(10)]  # brows
    face += [(cx, cy - 0.35 * ry + 0.08 * ry * i) for i in range(9)]  # nose
    for centre in (cx - 0.4 * rx, cx + 0.4 * rx):  # eyes
        face += [(centre + 0.2 * rx * math.cos(a), cy - 0.3 * ry + 0.08 * ry * math.sin(a))
                 for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    face += [(cx + 0.35 * rx * math.cos(a), cy + 0.45 * ry + 0.12 * ry * math.sin(a))
             for a in np.linspace(0, 2 * math.pi, 20, endpoint=False)]  # mouth
    points[23:91] = face
    for start, wrist, side in ((91, body[9], 1.0), (112, body[10], -1.0)):  # hands: fingers fan out downwards
        points[start] = wrist
        for finger in range(5):
            angle = math.radians(90 + side * (finger - 2) * 14)
            for joint in range(1, 5):
                points[start + 1 + finger * 4 + joint - 1] = (wrist[0] + 0.012 * joint * math.cos(angle),
                                                              wrist[1] + 0.012 * joint * math.sin(angle))
    return points


#: The template skeleton is shrunk around the crop's centre, so it stays inside wide pictures too.
TEMPLATE_SCALE = 0.75


class TemplateSimccPose(torch.nn.Module):
    """DWPose-L's ONNX signature, answering the same standing skeleton for every crop (score 1)."""

    def __init__(self):
        super().__init__()
        template = 0.5 + (torch.from_numpy(_template_keypoints()) - 0.5) * TEMPLATE_SCALE
        bins_x = (template[:, 0] * 576).round().long().clamp(0, 575)
        bins_y = (template[:, 1] * 768).round().long().clamp(0, 767)
        self.register_buffer("simcc_x", functional.one_hot(bins_x, 576).float()[None])
        self.register_buffer("simcc_y", functional.one_hot(bins_y, 768).float()[None])

    def forward(self, input):
        zero = input.mean() * 0.0
        return self.simcc_x + zero, self.simcc_y + zero


def export_tiny_dwpose(folder, *, template: bool = False):
    """Both DWPose files, tiny, under their real names in ``folder``: the tests' pair, or with
    ``template`` the app's (one person covering the picture, a standing skeleton)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    detector_model, pose_model = (WholePictureDetector(), TemplateSimccPose()) if template else (TinyYoloxDetector(), TinySimccPose())
    detector = export_onnx(detector_model, torch.zeros(1, 3, 640, 640), folder / DETECTOR_FILE, "images", ["output"])
    pose = export_onnx(pose_model, torch.zeros(1, 3, 384, 288), folder / POSE_FILE, "input", ["simcc_x", "simcc_y"])
    return detector, pose


def person_photo():
    """480x480: a grey 120 px 'person' square at 144..264 with a red dot at (204, 204)."""
    photo = np.zeros((480, 480, 3), dtype=np.uint8)
    photo[144:264, 144:264] = 200
    photo[202:207, 202:207] = (255, 0, 0)
    return Image.fromarray(photo)


# --- background removal (U^2-Net signature) ---------------------------------------------------------


U2NET_SIDE = 320
SIDE_OUTPUTS = 7


class TinyRedSubjectNet(torch.nn.Module):
    """U^2-Net's signature (1x3x320x320 -> seven 1x1x320x320 maps): the subject is what is redder than blue."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.refine = torch.nn.Conv2d(1, 1, kernel_size=3, padding=1)
        with torch.no_grad():  # a seeded smoothing kernel that keeps the sign of the red-blue contrast
            self.refine.weight.copy_(torch.rand(1, 1, 3, 3) + 0.5)
            self.refine.bias.zero_()

    def forward(self, image):
        contrast = image[:, 0:1] - image[:, 2:3]
        side = torch.sigmoid(3.0 * self.refine(contrast))
        return tuple(side for _ in range(SIDE_OUTPUTS))


class BorderContrastSubjectNet(torch.nn.Module):
    """U^2-Net's signature: the subject is what differs from the mean colour of the picture's border
    (right for product shots on a plain background), slightly smoothed."""

    def forward(self, image):
        border = torch.cat([image[..., :4, :].flatten(2), image[..., -4:, :].flatten(2),
                            image[..., :, :4].flatten(2), image[..., :, -4:].flatten(2)], dim=2).mean(dim=2)
        distance = (image - border[..., None, None]).pow(2).sum(dim=1, keepdim=True).sqrt()
        smooth = functional.avg_pool2d(distance, 5, stride=1, padding=2)
        side = torch.sigmoid(12.0 * (smooth - 0.35))
        return tuple(side for _ in range(SIDE_OUTPUTS))


def export_tiny_background(path, model: torch.nn.Module | None = None):
    """A U^2-Net-signature ONNX file (default: :class:`BorderContrastSubjectNet`) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return export_onnx(model or BorderContrastSubjectNet(), torch.zeros(1, 3, U2NET_SIDE, U2NET_SIDE), path, "input.1",
                       [f"d{i}" for i in range(SIDE_OUTPUTS)])


def tiny_background_remover(path):
    """A :class:`~preprocess.background.BackgroundRemover` running the ONNX file at ``path`` through
    rembg's custom U^2-Net session (without rembg's rule that such files live in ``$REMBG_HOME``)."""

    class _LocalFileRemover(BackgroundRemover):
        def _create_session(self):
            import onnxruntime  # heavy: imported on first use, keeps importing this package light
            from rembg.sessions.u2net_custom import U2netCustomSession  # optional dependency, loaded on first use

            class LocalFileSession(U2netCustomSession):
                @classmethod
                def download_models(cls, *args, **kwargs):
                    return str(kwargs["model_path"])

            return LocalFileSession(CUSTOM_MODEL_SESSION, onnxruntime.SessionOptions(), model_path=str(self.model_path),
                                    providers=["CPUExecutionProvider"])

    return _LocalFileRemover(model_path=path)


# --- the app's set, built once -------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyPreprocessFiles:
    folder: Path

    @property
    def parser(self) -> Path:
        return self.folder / PARSER_SUBFOLDER

    @property
    def sam(self) -> Path:
        return self.folder / SAM_FILE

    @property
    def detector(self) -> Path:
        return self.folder / DWPOSE_SUBFOLDER / DETECTOR_FILE

    @property
    def pose(self) -> Path:
        return self.folder / DWPOSE_SUBFOLDER / POSE_FILE

    @property
    def background(self) -> Path:
        return self.folder / BACKGROUND_FILE


_BUILD_LOCK = threading.Lock()


def build_tiny_preprocessing(folder: str | Path) -> TinyPreprocessFiles:
    """Write every tiny preprocessing model into ``folder`` (deterministic; a few seconds)."""
    from safetensors.torch import save_file  # heavy: imported on first use, keeps importing this package light

    files = TinyPreprocessFiles(Path(folder))
    files.folder.mkdir(parents=True, exist_ok=True)
    save_tiny_parser(files.parser)
    save_file({name: tensor.contiguous() for name, tensor in build_tiny_sam().state_dict().items()}, str(files.sam))
    export_tiny_dwpose(files.folder / DWPOSE_SUBFOLDER, template=True)
    export_tiny_background(files.background)
    return files


def ensure_tiny_preprocessing(folder: str | Path) -> TinyPreprocessFiles:
    """The tiny set in ``folder``, built on first use; safe across threads and processes."""
    from filelock import FileLock  # heavy: imported on first use, keeps importing this package light

    files = TinyPreprocessFiles(Path(folder))
    marker = files.folder / COMPLETE_MARKER
    if marker.is_file() and marker.read_text().strip() == TINY_PREPROCESS_VERSION:
        return files
    files.folder.parent.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK, FileLock(str(files.folder) + ".lock"):
        if not (marker.is_file() and marker.read_text().strip() == TINY_PREPROCESS_VERSION):
            build_tiny_preprocessing(files.folder)
            marker.write_text(TINY_PREPROCESS_VERSION + "\n")
    return files


def load_tiny_sam(path: str | Path, *, device: str = "cpu"):
    """A :class:`~preprocess.sam.SamSegmenter` on the tiny SAM saved at ``path``."""

    return SamSegmenter(load_sam_weights(build_tiny_sam(), path), device=device)
