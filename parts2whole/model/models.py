"""The two modules Parts2Whole adds around stock diffusers UNets: the pose guider and the reference encoder.

Both UNets are the stock `diffusers.UNet2DConditionModel`. The reference encoder only differs by the
modules the official checkpoint does not store (its output is never read, so the tail after the last
recorded layer was dropped); attention behaviour is added with attention processors (`attention.py`)
and the pose features with a forward hook on the denoising UNet's `conv_in` (`added_to_conv_in`).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

#: Path of the reference UNet's last transformer block. Its first LayerNorm is the last feature any
#: fusion set reads, so everything after it (and its own attention/FF weights) is absent from the
#: official checkpoint.
REFERENCE_UNET_LAST_ATTENTION = "up_blocks.3.attentions.2"


class PoseGuider(ModelMixin, ConfigMixin):
    """Small CNN turning a structure map (DensePose/OpenPose image in [0, 1]) into features added to the
    denoising UNet right after `conv_in` (same channels, 1/8 resolution)."""

    @register_to_config
    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: Sequence[int] = (16, 32, 96, 256),
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for channels_in, channels_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(channels_in, channels_in, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1)

    def forward(self, structure: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.conv_in(structure))
        for block in self.blocks:
            hidden = F.silu(block(hidden))
        return self.conv_out(hidden)


class ReferenceUNet2DConditionModel(UNet2DConditionModel):
    """The appearance encoder: a stock `UNet2DConditionModel` without the modules the official
    checkpoint leaves out (final norm/conv and the last transformer block's attention, FF and proj_out).

    It is only run until its last recorded self-attention input (see `attention.ReferenceRecorder`),
    so the missing modules are never needed. `forward` is the stock one.
    """

    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._drop_unused_tail()

    def _drop_unused_tail(self) -> None:
        self.conv_norm_out = None
        self.conv_out = None
        last_attention = self.get_submodule(REFERENCE_UNET_LAST_ATTENTION)
        last_attention.proj_out = None
        block = last_attention.transformer_blocks[0]
        for name in ("to_q", "to_k", "to_v", "to_out"):
            setattr(block.attn1, name, None)
        block.norm2 = block.attn2 = block.norm3 = block.ff = None


@contextmanager
def added_to_conv_in(unet: UNet2DConditionModel, features: torch.Tensor) -> Iterator[None]:
    """Add `features` to the output of `unet.conv_in` while the block runs (the pose guider's entry point).

    A forward hook is diffusers' documented way to change one module's output without touching
    `forward`; the hook lives only for one generation call.
    """
    handle = unet.conv_in.register_forward_hook(lambda _module, _inputs, output: output + features)
    try:
        yield
    finally:
        handle.remove()
