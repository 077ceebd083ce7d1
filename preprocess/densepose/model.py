"""DensePose R-CNN (detectron2's ``densepose_rcnn_R_50_FPN_s1x``) in plain torch + torchvision.

Data flow of :meth:`DensePoseRCNN.forward` (one image, already resized and normalised, see
:mod:`preprocess.densepose.estimator`)::

    image (1, 3, H32, W32)  BGR minus the mean, zero-padded to a multiple of 32
      -> backbone.bottom_up   ResNet-50, Caffe2 style (stride in the first 1x1, frozen BN): res2..res5
      -> backbone (FPN)       lateral 1x1 + top-down nearest x2 + output 3x3 -> p2..p5; p6 = p5[::2, ::2]
      -> proposal_generator   RPN: 3 anchors per position on p2..p6, top 1000 per level, NMS 0.7 per
                              level, top 1000 overall (boxes in network-input pixels)
      -> roi_heads.box_*      RoIAlign 7x7 from the level the box size picks, 2 FC, person score +
                              box deltas; score > threshold, NMS 0.5, at most 100 detections
      -> roi_heads.decoder    p2..p5 -> one stride-4 map (3x3 convs, bilinear x2 upsamplings, sum, 1x1),
                              computed on a window around the boxes (the same values there)
      -> roi_heads.densepose_head / densepose_predictor
                              RoIAlign 28x28 of each detection, 8 x (3x3 conv 512 + ReLU),
                              ConvTranspose x2 then bilinear x2 -> 112x112 coarse (2), fine (25),
                              U (25), V (25) logits/values per detection

Module and parameter names are those of detectron2, so the model's ``state_dict`` has exactly the
names and shapes of the model-zoo checkpoint (``checkpoint_shapes.json``); weights load with a plain
strict ``load_state_dict``. Every number below is a named constant taken from the model's config
(``Base-DensePose-RCNN-FPN.yaml`` and detectron2's defaults); :class:`DensePoseConfig` only changes
channel widths and depths (the tiny stand-in uses the same code with small ones).

Nothing here keeps per-call state: one model serves concurrent calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from torch import nn
from torchvision.ops import batched_nms, roi_align

# --- constants of the model's configuration -------------------------------------------------------

#: FrozenBatchNorm2d epsilon (not stored in the checkpoint).
FROZEN_BN_EPS = 1e-5
#: FPN levels used by the RPN (p2..p6) and their strides.
RPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
LEVEL_STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
#: Levels the box head and the DensePose decoder read.
ROI_LEVELS = ("p2", "p3", "p4", "p5")
#: Anchor size (sqrt of area, network-input pixels) of each RPN level, and the aspect ratios h/w.
ANCHOR_SIZES = (32, 64, 128, 256, 512)
ANCHOR_ASPECT_RATIOS = (0.5, 1.0, 2.0)
#: Box regression weights (dx, dy, dw, dh) of the RPN and of the box head.
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
#: dw, dh are clamped here before exp: a box never grows more than 1000/16 times.
BOX_SCALE_CLAMP = math.log(1000.0 / 16)
#: RPN at test time: candidates kept per level before NMS, NMS IoU, proposals kept after NMS.
RPN_PRE_NMS_TOPK = 1000
RPN_NMS_THRESHOLD = 0.7
RPN_POST_NMS_TOPK = 1000
#: Boxes with a side of at most this many pixels are dropped (RPN and postprocess).
MIN_BOX_SIDE = 0.0
#: Box head: RoIAlign output side, bilinear samples per bin side, level assignment (a box of
#: ``CANONICAL_BOX_SIZE`` pixels reads ``CANONICAL_LEVEL``), detection NMS IoU and the cap.
BOX_POOLER_RESOLUTION = 7
POOLER_SAMPLING_RATIO = 2
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_ASSIGNMENT_EPS = 1e-8
DETECTION_NMS_THRESHOLD = 0.5
MAX_DETECTIONS = 100
#: Default minimum person score of a detection (apply_net's and DefaultPredictor-setups' 0.8).
DEFAULT_SCORE_THRESHOLD = 0.8
#: DensePose branch: decoder output stride, RoIAlign side, predictor kernel, final upsampling.
DECODER_COMMON_STRIDE = 4
DENSEPOSE_POOLER_RESOLUTION = 28
DENSEPOSE_DECONV_KERNEL = 4
DENSEPOSE_UP_SCALE = 2
#: p5 pixels the decoder window reaches beyond the boxes (a crop edge alters less than 3 of them).
DECODER_WINDOW_MARGIN = 4
#: Output channels: coarse segmentation (background / person) and the 24 body parts + background.
NUM_COARSE_SEGM_CHANNELS = 2
NUM_PATCHES = 24
#: RoIAlign in this model never uses the half-pixel shift (ROIAlign, not ROIAlignV2).
ROI_ALIGNED = False


@dataclass(frozen=True)
class DensePoseConfig:
    """Channel widths and depths; the defaults are the real model's."""

    stem_channels: int = 64
    #: Bottleneck width of res2; doubles each stage (res3 128, res4 256, res5 512).
    bottleneck_channels: int = 64
    #: Output channels of res2 (4 x its width); doubles each stage.
    res2_out_channels: int = 256
    blocks_per_stage: tuple[int, int, int, int] = (3, 4, 6, 3)
    fpn_channels: int = 256
    box_head_fc_dim: int = 1024
    decoder_channels: int = 256
    densepose_head_channels: int = 512
    densepose_head_convs: int = 8


REAL_CONFIG = DensePoseConfig()


# --- building blocks -------------------------------------------------------------------------------


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics: y = x * s + (b - mean * s), s = w / sqrt(var + eps)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - FROZEN_BN_EPS)

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * (self.running_var + FROZEN_BN_EPS).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_and_shift()
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its frozen batch norm (``<name>.norm.*`` in the checkpoint)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # conv(x, W) * s + t == conv(x, W * s) + t: the norm costs a weight-sized multiply, not a
        # pass over the activations (the same function, rounded differently at float32 precision).
        scale, shift = self.norm.scale_and_shift()
        return functional.conv2d(x, self.weight * scale.view(-1, 1, 1, 1), shift, self.stride, self.padding)


class ConvReLU(nn.Conv2d):
    """A convolution with bias followed by ReLU (detectron2 keeps the activation inside the conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.relu(super().forward(x))


class BasicStem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU, then 3x3/2 max-pool: stride 4."""

    STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 7, 2, 3
    POOL_KERNEL, POOL_STRIDE, POOL_PADDING = 3, 2, 1

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, self.STEM_KERNEL, stride=self.STEM_STRIDE, padding=self.STEM_PADDING)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu(self.conv1(x))
        return functional.max_pool2d(x, kernel_size=self.POOL_KERNEL, stride=self.POOL_STRIDE, padding=self.POOL_PADDING)


class Bottleneck(nn.Module):
    """1x1 (carries the stride, Caffe2 style) -> 3x3 -> 1x1, plus the shortcut; ReLU of the sum."""

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if in_channels != out_channels:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, padding=1)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = functional.relu(self.conv1(x))
        branch = functional.relu(self.conv2(branch))
        branch = self.conv3(branch)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return functional.relu(branch + shortcut)


class ResNet(nn.Module):
    """ResNet-50 bottom-up: stem, then res2 (stride 4) .. res5 (stride 32); returns res2..res5."""

    STAGES = ("res2", "res3", "res4", "res5")

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        self.stem = BasicStem(config.stem_channels)
        in_channels = config.stem_channels
        width, out_channels = config.bottleneck_channels, config.res2_out_channels
        for index, (name, blocks) in enumerate(zip(self.STAGES, config.blocks_per_stage)):
            first_stride = 1 if index == 0 else 2
            stage = [Bottleneck(in_channels, width, out_channels, first_stride)]
            stage += [Bottleneck(out_channels, width, out_channels, 1) for _ in range(blocks - 1)]
            self.add_module(name, nn.Sequential(*stage))
            in_channels, width, out_channels = out_channels, width * 2, out_channels * 2
        self.out_channels = [config.res2_out_channels * 2**index for index in range(len(self.STAGES))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.STAGES:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs


class FPN(nn.Module):
    """Feature pyramid on res2..res5 -> p2..p5 (``fpn_lateral{2..5}``, ``fpn_output{2..5}``), plus p6."""

    #: p6 = max-pool of p5 with kernel 1, stride 2 (detectron2's LastLevelMaxPool).
    P6_POOL_KERNEL, P6_POOL_STRIDE = 1, 2

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        self.bottom_up = ResNet(config)
        channels = config.fpn_channels
        for level, in_channels in zip((2, 3, 4, 5), self.bottom_up.out_channels):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(in_channels, channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.bottom_up(x)
        previous = self.fpn_lateral5(res[3])
        outputs = {"p5": self.fpn_output5(previous)}
        for level in (4, 3, 2):
            top_down = functional.interpolate(previous, scale_factor=2.0, mode="nearest")
            previous = getattr(self, f"fpn_lateral{level}")(res[level - 2]) + top_down
            outputs[f"p{level}"] = getattr(self, f"fpn_output{level}")(previous)
        outputs["p6"] = functional.max_pool2d(outputs["p5"], kernel_size=self.P6_POOL_KERNEL, stride=self.P6_POOL_STRIDE)
        return outputs


# --- boxes -----------------------------------------------------------------------------------------


def cell_anchors(size: float, aspect_ratios=ANCHOR_ASPECT_RATIOS) -> torch.Tensor:
    """(A, 4) anchors centred on 0 for one size: w = sqrt(size^2 / r), h = r * w, not rounded."""
    anchors = []
    area = float(size) ** 2
    for ratio in aspect_ratios:
        width = math.sqrt(area / ratio)
        height = ratio * width
        anchors.append([-width / 2.0, -height / 2.0, width / 2.0, height / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(cells: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """(H * W * A, 4) anchors of one level, in (y, x, anchor) order, centred at (x * stride, y * stride)."""
    device = cells.device
    shift_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    shift_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
    grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)
    shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, float, float, float]) -> torch.Tensor:
    """Decode (N, 4) deltas (dx, dy, dw, dh) against (N, 4) boxes x0, y0, x1, y1 (width = x1 - x0)."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    centre_x = boxes[:, 0] + 0.5 * widths
    centre_y = boxes[:, 1] + 0.5 * heights
    weight_x, weight_y, weight_w, weight_h = weights
    dx = deltas[:, 0] / weight_x
    dy = deltas[:, 1] / weight_y
    dw = torch.clamp(deltas[:, 2] / weight_w, max=BOX_SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3] / weight_h, max=BOX_SCALE_CLAMP)
    predicted_x = dx * widths + centre_x
    predicted_y = dy * heights + centre_y
    predicted_w = torch.exp(dw) * widths
    predicted_h = torch.exp(dh) * heights
    return torch.stack(
        (predicted_x - 0.5 * predicted_w, predicted_y - 0.5 * predicted_h,
         predicted_x + 0.5 * predicted_w, predicted_y + 0.5 * predicted_h),
        dim=1,
    )


def clip_boxes(boxes: torch.Tensor, height: int | float, width: int | float) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]."""
    return torch.stack(
        (boxes[:, 0].clamp(min=0, max=width), boxes[:, 1].clamp(min=0, max=height),
         boxes[:, 2].clamp(min=0, max=width), boxes[:, 3].clamp(min=0, max=height)),
        dim=1,
    )


def nonempty(boxes: torch.Tensor, threshold: float = MIN_BOX_SIDE) -> torch.Tensor:
    """Mask of boxes whose width and height both exceed ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def as_rois(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 5) RoIs (batch index 0, x0, y0, x1, y1) for ``torchvision.ops.roi_align``."""
    return torch.cat((boxes.new_zeros((len(boxes), 1)), boxes), dim=1)


# --- RPN -------------------------------------------------------------------------------------------


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then per anchor one objectness logit and 4 deltas."""

    def __init__(self, channels: int, anchors_per_position: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, anchors_per_position, 1)
        self.anchor_deltas = nn.Conv2d(channels, anchors_per_position * 4, 1)


class RPN(nn.Module):
    """Region proposals on p2..p6 (see the module docstring for the selection rules)."""

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        self.rpn_head = RPNHead(config.fpn_channels, len(ANCHOR_ASPECT_RATIOS))

    def forward(self, features: dict[str, torch.Tensor], image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposals (P, 4) in network-input pixels and their objectness logits (P,), best first."""
        head = self.rpn_head
        boxes_per_level, logits_per_level, level_ids = [], [], []
        for level_id, (level, size) in enumerate(zip(RPN_LEVELS, ANCHOR_SIZES)):
            feature = features[level]
            hidden = functional.relu(head.conv(feature))
            logits = head.objectness_logits(hidden)[0]  # (A, H, W)
            deltas = head.anchor_deltas(hidden)[0]  # (A * 4, H, W), anchor-major
            anchors_per_position, height, width = logits.shape
            logits = logits.permute(1, 2, 0).reshape(-1)  # (y, x, anchor)
            deltas = deltas.view(anchors_per_position, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
            anchors = grid_anchors(cell_anchors(size).to(feature.device), height, width, LEVEL_STRIDES[level])
            count = min(RPN_PRE_NMS_TOPK, logits.numel())
            top_logits, top_index = logits.topk(count)
            boxes_per_level.append(apply_deltas(deltas[top_index], anchors[top_index], RPN_BOX_WEIGHTS))
            logits_per_level.append(top_logits)
            level_ids.append(torch.full((count,), level_id, dtype=torch.int64, device=feature.device))
        boxes = clip_boxes(torch.cat(boxes_per_level), *image_size)
        logits = torch.cat(logits_per_level)
        levels = torch.cat(level_ids)
        keep = nonempty(boxes)
        boxes, logits, levels = boxes[keep], logits[keep], levels[keep]
        keep = batched_nms(boxes, logits, levels, RPN_NMS_THRESHOLD)[:RPN_POST_NMS_TOPK]
        return boxes[keep], logits[keep]


# --- RoI heads -------------------------------------------------------------------------------------


class BoxHead(nn.Module):
    """Flattened 7x7 RoI features -> fc1 + ReLU -> fc2 + ReLU."""

    def __init__(self, in_features: int, fc_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu(self.fc1(x.flatten(1)))
        return functional.relu(self.fc2(x))


class BoxPredictor(nn.Module):
    """Class logits (row 0 = person, row 1 = background) and class-agnostic box deltas."""

    NUM_CLASSES = 1

    def __init__(self, fc_dim: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(fc_dim, self.NUM_CLASSES + 1)
        self.bbox_pred = nn.Linear(fc_dim, self.NUM_CLASSES * 4)


class Decoder(nn.Module):
    """p2..p5 -> one stride-4 map: per level ``max(1, log2(stride / 4))`` x (3x3 conv + ReLU, bilinear
    x2 unless the level is p2), summed, then a 1x1 conv (``predictor``) without activation."""

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        in_channels, channels = config.fpn_channels, config.decoder_channels
        for level in ROI_LEVELS:
            steps = max(1, int(math.log2(LEVEL_STRIDES[level] / DECODER_COMMON_STRIDE)))
            layers: list[nn.Module] = []
            for step in range(steps):
                layers.append(ConvReLU(in_channels if step == 0 else channels, channels, 3, padding=1))
                if LEVEL_STRIDES[level] != DECODER_COMMON_STRIDE:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(level, nn.Sequential(*layers))
        self.predictor = nn.Conv2d(channels, channels, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for level in ROI_LEVELS:
            scaled = getattr(self, level)(features[level])
            x = scaled if x is None else x + scaled
        return self.predictor(x)


class DensePoseHead(nn.Module):
    """``densepose_head_convs`` x (3x3 conv + ReLU) named ``body_conv_fcn1..N``."""

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        self.num_convs = config.densepose_head_convs
        in_channels = config.decoder_channels
        for index in range(1, self.num_convs + 1):
            self.add_module(f"body_conv_fcn{index}", ConvReLU(in_channels, config.densepose_head_channels, 3, padding=1))
            in_channels = config.densepose_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.num_convs + 1):
            x = getattr(self, f"body_conv_fcn{index}")(x)
        return x


@dataclass(frozen=True)
class ChartOutputs:
    """Per-detection predictor outputs on the 112x112 RoI grid."""

    coarse_segm: torch.Tensor  # (N, 2, S, S)
    fine_segm: torch.Tensor  # (N, 25, S, S)
    u: torch.Tensor  # (N, 25, S, S)
    v: torch.Tensor  # (N, 25, S, S)


class DensePosePredictor(nn.Module):
    """ConvTranspose2d(k 4, stride 2, padding 1) for coarse, fine, U, V, then bilinear x2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        padding = DENSEPOSE_DECONV_KERNEL // 2 - 1
        kernel = DENSEPOSE_DECONV_KERNEL

        def deconv(out_channels: int) -> nn.ConvTranspose2d:
            return nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=padding)

        self.ann_index_lowres = deconv(NUM_COARSE_SEGM_CHANNELS)
        self.index_uv_lowres = deconv(NUM_PATCHES + 1)
        self.u_lowres = deconv(NUM_PATCHES + 1)
        self.v_lowres = deconv(NUM_PATCHES + 1)

    def forward(self, x: torch.Tensor) -> ChartOutputs:
        def up(tensor: torch.Tensor) -> torch.Tensor:
            return functional.interpolate(tensor, scale_factor=DENSEPOSE_UP_SCALE, mode="bilinear", align_corners=False)

        return ChartOutputs(
            coarse_segm=up(self.ann_index_lowres(x)), fine_segm=up(self.index_uv_lowres(x)),
            u=up(self.u_lowres(x)), v=up(self.v_lowres(x)),
        )


def assign_levels(boxes: torch.Tensor) -> torch.Tensor:
    """Index into :data:`ROI_LEVELS` per box: floor(4 + log2(sqrt(area) / 224 + 1e-8)), clamped to p2..p5."""
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE + LEVEL_ASSIGNMENT_EPS))
    first = int(ROI_LEVELS[0][1:])
    return (torch.clamp(levels, min=first, max=int(ROI_LEVELS[-1][1:])) - first).to(torch.int64)


def multilevel_roi_align(features: dict[str, torch.Tensor], boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """RoIAlign of each box from the level its size picks (box head pooler)."""
    levels = assign_levels(boxes)
    reference = features[ROI_LEVELS[0]]
    output = reference.new_zeros((len(boxes), reference.shape[1], resolution, resolution))
    rois = as_rois(boxes)
    for index, level in enumerate(ROI_LEVELS):
        selected = torch.nonzero(levels == index).squeeze(1)
        if selected.numel() == 0:
            continue
        output[selected] = roi_align(
            features[level], rois[selected], resolution, spatial_scale=1.0 / LEVEL_STRIDES[level],
            sampling_ratio=POOLER_SAMPLING_RATIO, aligned=ROI_ALIGNED,
        )
    return output


def decoder_window(boxes: torch.Tensor, coarse_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rows top..bottom and columns left..right (p5 pixels, end exclusive) the decoder must cover.

    The boxes' extent on p5 plus :data:`DECODER_WINDOW_MARGIN` p5 pixels on each side, clipped to
    the map. Inside the window the decoder's values equal those of the whole map: a crop edge
    alters at most 3 p5 pixels next to it (the p5 branch: 3 convs and 3 bilinear x2 steps reach
    21 stride-4 pixels = 2.6 p5 pixels); on a side where the window meets the map's own border
    nothing is altered at all (same zero padding, same edge clamping). Window starts are whole p5
    pixels, so every level's grid, and every upsampling, lines up with the full map's.
    """
    stride = LEVEL_STRIDES[ROI_LEVELS[-1]]
    height, width = int(coarse_size[0]), int(coarse_size[1])
    x0, y0 = boxes[:, 0].min().item(), boxes[:, 1].min().item()
    x1, y1 = boxes[:, 2].max().item(), boxes[:, 3].max().item()
    top = max(0, math.floor(y0 / stride) - DECODER_WINDOW_MARGIN)
    left = max(0, math.floor(x0 / stride) - DECODER_WINDOW_MARGIN)
    bottom = min(height, math.ceil(y1 / stride) + 1 + DECODER_WINDOW_MARGIN)
    right = min(width, math.ceil(x1 / stride) + 1 + DECODER_WINDOW_MARGIN)
    return top, bottom, left, right


@dataclass(frozen=True)
class Detections:
    """Person detections in network-input pixels, best first."""

    boxes: torch.Tensor  # (N, 4)
    scores: torch.Tensor  # (N,)


class ROIHeads(nn.Module):
    """Box head + predictor on the proposals, then the DensePose branch on the detections."""

    def __init__(self, config: DensePoseConfig) -> None:
        super().__init__()
        pooled = config.fpn_channels * BOX_POOLER_RESOLUTION**2
        self.box_head = BoxHead(pooled, config.box_head_fc_dim)
        self.box_predictor = BoxPredictor(config.box_head_fc_dim)
        self.decoder = Decoder(config)
        self.densepose_head = DensePoseHead(config)
        self.densepose_predictor = DensePosePredictor(config.densepose_head_channels)

    def detect(self, features: dict[str, torch.Tensor], proposals: torch.Tensor, image_size: tuple[int, int],
               score_threshold: float) -> Detections:
        """Score and refine the proposals; keep person score > threshold, NMS 0.5, at most 100."""
        pooled = multilevel_roi_align(features, proposals, BOX_POOLER_RESOLUTION)
        hidden = self.box_head(pooled)
        scores = functional.softmax(self.box_predictor.cls_score(hidden), dim=-1)[:, 0]
        boxes = apply_deltas(self.box_predictor.bbox_pred(hidden), proposals, ROI_BOX_WEIGHTS)
        boxes = clip_boxes(boxes, *image_size)
        keep = scores > score_threshold
        boxes, scores = boxes[keep], scores[keep]
        classes = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
        keep = batched_nms(boxes, scores, classes, DETECTION_NMS_THRESHOLD)[:MAX_DETECTIONS]
        return Detections(boxes[keep], scores[keep])

    def densepose(self, features: dict[str, torch.Tensor], boxes: torch.Tensor, *, crop: bool = True) -> ChartOutputs:
        """The chart predictor's 112x112 outputs for each box (network-input pixels).

        detectron2 decodes the whole stride-4 map; RoIAlign then reads it only inside the boxes. With
        ``crop`` the decoder runs on a window around the boxes instead (see :func:`decoder_window`),
        which gives the same values there and skips the rest of the picture.
        """
        offset = boxes.new_zeros(4)
        if crop and len(boxes):
            (top, bottom, left, right) = decoder_window(boxes, features[ROI_LEVELS[-1]].shape[-2:])
            coarsest = LEVEL_STRIDES[ROI_LEVELS[-1]]
            windowed = {}
            for level in ROI_LEVELS:
                factor = coarsest // LEVEL_STRIDES[level]
                windowed[level] = features[level][..., top * factor : bottom * factor, left * factor : right * factor]
            features = windowed
            offset = boxes.new_tensor([left * coarsest, top * coarsest] * 2)
        decoded = self.decoder(features)
        pooled = roi_align(
            decoded, as_rois(boxes - offset), DENSEPOSE_POOLER_RESOLUTION, spatial_scale=1.0 / DECODER_COMMON_STRIDE,
            sampling_ratio=POOLER_SAMPLING_RATIO, aligned=ROI_ALIGNED,
        )
        return self.densepose_predictor(self.densepose_head(pooled))


@dataclass(frozen=True)
class RawOutputs:
    """Everything one forward pass yields, in network-input pixels (see :meth:`DensePoseRCNN.forward`)."""

    proposals: torch.Tensor
    proposal_logits: torch.Tensor
    detections: Detections
    charts: ChartOutputs | None  # for ``densepose_boxes`` detections, or None when there are none


class DensePoseRCNN(nn.Module):
    """``backbone`` (ResNet-50 + FPN), ``proposal_generator`` (RPN) and ``roi_heads``."""

    def __init__(self, config: DensePoseConfig = REAL_CONFIG) -> None:
        super().__init__()
        self.config = config
        self.backbone = FPN(config)
        self.proposal_generator = RPN(config)
        self.roi_heads = ROIHeads(config)

    def forward(self, image: torch.Tensor, image_size: tuple[int, int], *, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                densepose_top: int | None = 1) -> RawOutputs:
        """Run on a (1, 3, H32, W32) normalised, padded image whose unpadded size is ``image_size`` (h, w).

        The DensePose branch runs on the ``densepose_top`` best detections (all with ``None``): each
        detection's charts depend only on its own box, so skipping the others changes nothing.
        """
        features = self.backbone(image)
        proposals, logits = self.proposal_generator(features, image_size)
        detections = self.roi_heads.detect(features, proposals, image_size, score_threshold)
        boxes = detections.boxes if densepose_top is None else detections.boxes[:densepose_top]
        charts = self.roi_heads.densepose(features, boxes) if len(boxes) else None
        return RawOutputs(proposals, logits, detections, charts)
