"""Tiny models in the real formats, built in code with fixed seeds, shared by the preprocessing tests.

Not a pytest conftest (its name keeps it from being collected); test modules import from it.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
import torch
import torch.nn.functional as functional
from PIL import Image

from preprocess.parsing import PARSER_CLASS_NAMES
from preprocess.pose import NUM_KEYPOINTS

FACE_CLASS = PARSER_CLASS_NAMES.index("Face")


# --- SegFormer human parser ------------------------------------------------------------------------


def tiny_segformer(class_names, constant_class: int | None, margin: float = 20.0):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 1],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=len(class_names),
        id2label={index: name for index, name in enumerate(class_names)},
        label2id={name: index for index, name in enumerate(class_names)},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    if constant_class is not None:  # a parser that sees `constant_class` everywhere
        with torch.no_grad():
            model.decode_head.classifier.weight.zero_()
            model.decode_head.classifier.bias.fill_(0.0)
            model.decode_head.classifier.bias[constant_class] = margin
    return model


def save_tiny_parser(folder, class_names=PARSER_CLASS_NAMES, constant_class=None, margin=20.0):
    from transformers import SegformerImageProcessor

    tiny_segformer(class_names, constant_class, margin).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder



# --- Segment Anything ------------------------------------------------------------------------------


TINY_IMAGE_SIZE = 64


def build_tiny_sam(seed: int = 0):
    """A real ``Sam`` with a 1-block ViT encoder on 64x64 inputs (embedding grid 4x4, masks 16x16)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

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


# The tiny detector marks a stride-32 cell as a person when its 5x5-cell neighbourhood is bright,
# with a 5-cell box centred on that cell: a bright 160x160 square (at 640 px) gives exactly one box.
BOX_CELLS = 5
PERSON_BRIGHTNESS_THRESHOLD = 0.7
SHARPNESS = 50.0


class TinyYoloxDetector(torch.nn.Module):
    """YOLOX's ONNX signature: images (1, 3, 640, 640) raw pixels -> output (1, 8400, 85), no NMS."""

    def forward(self, images):
        brightness = images.mean(dim=1, keepdim=True) / 255.0
        levels = []
        for stride in (8, 16, 32):
            cells = functional.avg_pool2d(brightness, stride)
            if stride == 32:
                neighbourhood = functional.avg_pool2d(cells, BOX_CELLS, stride=1, padding=BOX_CELLS // 2)
                objectness = SHARPNESS * (neighbourhood - PERSON_BRIGHTNESS_THRESHOLD)
            else:
                objectness = cells * 0.0 - 20.0
            centre = cells * 0.0 + 0.5
            size = cells * 0.0 + math.log(BOX_CELLS)
            classes = (cells * 0.0 - 10.0).repeat(1, 80, 1, 1)
            classes[:, 0] = 10.0  # person
            raw = torch.cat([centre, centre, size, size, torch.sigmoid(objectness), torch.sigmoid(classes)], dim=1)
            levels.append(raw.flatten(2).transpose(1, 2))
        return torch.cat(levels, dim=1)


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


def export_onnx(module, example, path, input_name, output_names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=output_names, dynamo=False)
    return path


def export_tiny_dwpose(folder):
    """Both DWPose files, tiny, under their real names in ``folder``."""
    torch.manual_seed(0)
    detector = export_onnx(TinyYoloxDetector(), torch.zeros(1, 3, 640, 640), folder / "yolox_l.onnx", "images", ["output"])
    pose = export_onnx(TinySimccPose(), torch.zeros(1, 3, 384, 288), folder / "dw-ll_ucoco_384.onnx", "input", ["simcc_x", "simcc_y"])
    return detector, pose


def person_photo():
    """480x480: a grey 120 px 'person' square at 144..264 with a red dot at (204, 204)."""
    photo = np.zeros((480, 480, 3), dtype=np.uint8)
    photo[144:264, 144:264] = 200
    photo[202:207, 202:207] = (255, 0, 0)
    return Image.fromarray(photo)
