"""Shared mask-guided self-attention and the decoupled image cross-attention, as diffusers attention processors.

Data flow of one generation:

1. `ReferenceRecorder` (per call) runs through the reference UNet's self-attention processors and keeps,
   for every block of the fusion set, `mask ⊙ LayerNorm1(h)` of every reference (the "bank"), rounded
   to float16 as the official code does. It stops the reference UNet once the last block is recorded.
2. The result, `ReferenceFeatures`, can be cached: it depends only on (images, masks, labels, size,
   fusion set, model).
3. `SharedAttention` (per call) hands those features to the denoising UNet's self-attention
   processors: the rows of the batch that see references (the conditional half under guidance) attend
   over `[own tokens ; reference tokens]`; the other rows attend over their own tokens only. Reference
   keys/values are projected, and laid out behind the target's, once per call, not once per step.

All state travels in `cross_attention_kwargs["reference_context"]`, never in the processors, so one
loaded model can serve calls one after another without leaking anything between them.

Exactness of the fast path: a masked-out reference token is an exact zero vector; the projections have
no bias, so its key and value are zero too: it adds exp(0) to the softmax denominator and nothing to the
numerator. Dropping the D such tokens and adding ONE zero-value key whose logit is log(D) (an additive
bias) gives the same softmax, with far fewer keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn
from torch.nn import functional as F

#: Number of image tokens the decoupled cross-attention reads: the LAST this-many context tokens are
#: image tokens (one CLIP token per part, zero-padded), the rest are text. Fixed by the checkpoint.
NUM_IMAGE_TOKENS = 6

#: The official pipeline hands the recorded reference features to the denoising UNet in float16; keeping
#: them in float16 reproduces that rounding (and halves the cache).
BANK_DTYPE = torch.float16

#: Reference masks are dilated by one token (a 3x3 box sum, then clamped to [0, 1]) after nearest-neighbour
#: resampling to each block's grid, so a part's border tokens are kept.
MASK_DILATION_KERNEL = 3

FUSION_SETS = ("full", "midup")


def self_attention_blocks(unet: nn.Module, fusion: str = "full") -> list[str]:
    """Module paths of the self-attention layers (`...attn1`) in the fusion set, in forward order.

    "full": every transformer block (down, mid, up); "midup": the mid and up blocks only.
    """
    if fusion not in FUSION_SETS:
        raise ValueError(f"fusion_blocks must be one of {FUSION_SETS}, got {fusion!r}")
    names = [name for name, module in unet.named_modules() if name.endswith(".attn1") and isinstance(module, Attention)]
    if fusion == "midup":
        names = [name for name in names if name.startswith(("mid_block.", "up_blocks."))]
    return names


def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """The (rows, cols) grid of a block with `num_tokens` tokens for an image of height x width.

    Official rule: the block's down-sampling factor is the power of two s = 2**ceil(log2(H*W/n)/2) and
    the grid is (ceil(H/s), ceil(W/s)); this also covers latents whose sides are not divisible by 8.
    """
    factor = 2 ** math.ceil(math.log2(height * width / num_tokens) / 2)
    rows, cols = math.ceil(height / factor), math.ceil(width / factor)
    if rows * cols != num_tokens:
        raise ValueError(f"cannot map a {height}x{width} mask onto {num_tokens} tokens")
    return rows, cols


def mask_token_weights(masks: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Per-token weights (K, n) of full-resolution masks (K, 1, H, W) on a block's token grid.

    Nearest-neighbour resampling (PyTorch's "nearest": the top-left pixel of each cell), a one-cell
    dilation by 3x3 box sum with zero padding, clamped to [0, 1] (fractional values survive).
    """
    rows, cols = token_grid(masks.shape[-2], masks.shape[-1], num_tokens)
    grid = F.interpolate(masks, size=(rows, cols), mode="nearest")
    box = torch.ones(1, 1, MASK_DILATION_KERNEL, MASK_DILATION_KERNEL, dtype=grid.dtype, device=grid.device)
    dilated = F.conv2d(grid, box, padding=MASK_DILATION_KERNEL // 2).clamp(0.0, 1.0)
    return dilated.flatten(1)


@dataclass
class ReferenceFeatures:
    """What the reference encoder recorded for a set of references: per self-attention block path,
    the masked features (K, n, C) in `BANK_DTYPE` and the token weights (K, n) they were masked with."""

    features: dict[str, torch.Tensor]
    token_weights: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        tensors = list(self.features.values()) + list(self.token_weights.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> "ReferenceFeatures":
        return ReferenceFeatures(
            {k: v.to(device) for k, v in self.features.items()},
            {k: v.to(device) for k, v in self.token_weights.items()},
        )


class ReferenceRecordingComplete(Exception):
    """Raised by the recorder after the last fusion block: the rest of the reference UNet is not needed
    (and, in the official checkpoint, not even stored)."""


@dataclass
class ReferenceRecorder:
    """Per-call state of one reference-UNet forward: which blocks to record and with which masks."""

    blocks: list[str]
    masks: torch.Tensor  # (K, 1, H, W) in [0, 1]
    recorded: ReferenceFeatures = field(default_factory=lambda: ReferenceFeatures({}, {}))

    def record(self, block: str, normed_hidden_states: torch.Tensor) -> None:
        weights = mask_token_weights(self.masks.to(torch.float32), normed_hidden_states.shape[1])
        weights = weights.to(normed_hidden_states.device)
        masked = normed_hidden_states * weights.unsqueeze(-1).to(normed_hidden_states.dtype)
        self.recorded.features[block] = masked.to(BANK_DTYPE)
        self.recorded.token_weights[block] = weights
        if len(self.recorded.features) == len(self.blocks):
            raise ReferenceRecordingComplete


@dataclass
class SharedAttention:
    """Per-call state of the denoising UNet: the references every self-attention block attends to.

    Rows `[reference_rows_start:]` of each batch see the references (the conditional half under
    guidance, everything without guidance); rows before it attend to themselves only.
    `pack_masked_tokens=False` keeps every masked-out token as a zero key (the official, slower schedule).
    """

    references: ReferenceFeatures
    reference_rows_start: int
    pack_masked_tokens: bool = True
    _projected: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)
    _layouts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)

    def reference_keys_values(self, block: str, attn: Attention, dtype: torch.dtype):
        """(keys, values, logit bias or None) of the references for one block, projected once per call.

        Keys/values are (1, heads, M, head_dim). With packing, masked-out tokens are dropped and one
        zero key/value with logit bias log(count dropped) stands in for them.
        """
        if block in self._projected:
            return self._projected[block]
        if block not in self.references.features:
            return None
        features = self.references.features[block]
        tokens = features.flatten(0, 1)
        bias_value = None
        if self.pack_masked_tokens and attn.to_k.bias is None and attn.to_v.bias is None:
            kept = self.references.token_weights[block].flatten() > 0
            num_dropped = int(kept.numel() - kept.sum())
            tokens = tokens[kept.to(tokens.device)]
            if num_dropped:
                tokens = torch.cat([tokens, tokens.new_zeros(1, tokens.shape[-1])])
                bias_value = math.log(num_dropped)
        tokens = tokens.unsqueeze(0).to(dtype)
        keys = _split_heads(attn.to_k(tokens), attn.heads)
        values = _split_heads(attn.to_v(tokens), attn.heads)
        self._projected[block] = (keys, values, bias_value)
        return self._projected[block]

    def keys_values_with_references(self, block: str, attn: Attention, own_keys: torch.Tensor, own_values: torch.Tensor):
        """(keys, values, additive logit bias or None) over `[own ; references]` for the rows that see references.

        At inference the buffers are laid out once per call, reference part included, and each step only
        copies its own keys/values into the front: no per-step concatenation of the (much longer) reference
        part, no per-step bias tensor. With gradients on (training) it concatenates afresh instead, since
        an in-place write would clobber tensors saved for the backward pass. None: no references here.
        """
        projected = self.reference_keys_values(block, attn, own_keys.dtype)
        if projected is None:
            return None
        ref_keys, ref_values, bias_value = projected
        rows, heads, num_own, head_dim = own_keys.shape
        total = num_own + ref_keys.shape[2]
        if torch.is_grad_enabled():
            keys = torch.cat([own_keys, ref_keys.expand(rows, -1, -1, -1)], dim=2)
            values = torch.cat([own_values, ref_values.expand(rows, -1, -1, -1)], dim=2)
            return keys, values, _logit_bias(bias_value, total, own_keys)
        layout = self._layouts.get(block)
        if layout is None or layout[0].shape != (rows, heads, total, head_dim):
            keys = own_keys.new_empty(rows, heads, total, head_dim)
            values = own_values.new_empty(rows, heads, total, head_dim)
            keys[:, :, num_own:] = ref_keys
            values[:, :, num_own:] = ref_values
            layout = self._layouts[block] = (keys, values, _logit_bias(bias_value, total, own_keys))
            # The projected reference part now lives in the layout: keep views, not a second copy.
            self._projected[block] = (keys[:1, :, num_own:], values[:1, :, num_own:], bias_value)
        keys, values, bias = layout
        keys[:, :, :num_own] = own_keys
        values[:, :, :num_own] = own_values
        return layout


def _logit_bias(bias_value: float | None, num_keys: int, like: torch.Tensor) -> torch.Tensor | None:
    """Additive logits (1, 1, 1, num_keys): 0 everywhere but the last key (the stand-in for the dropped tokens)."""
    if bias_value is None:
        return None
    bias = like.new_zeros(1, 1, 1, num_keys)
    bias[..., -1] = bias_value
    return bias


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, inner = x.shape
    return x.view(batch, length, heads, inner // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def _check_plain_layout(attn: Attention) -> None:
    """The processors below implement the SD1.5 attention layout; refuse anything else loudly."""
    if attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_cross or attn.residual_connection:
        raise NotImplementedError("Parts2Whole processors support the Stable Diffusion 1.x attention layout only")


def _output(attn: Attention, merged: torch.Tensor) -> torch.Tensor:
    out = attn.to_out[1](attn.to_out[0](merged))
    return out / attn.rescale_output_factor


class PlainAttnProcessor(AttnProcessor2_0):
    """The stock SDPA processor, accepting (and ignoring) the per-call reference context."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceRecorderProcessor(PlainAttnProcessor):
    """Reference-UNet self-attention: records its input (LayerNorm1 output) for the fusion set, then
    attends as usual."""

    def __init__(self, block: str):
        super().__init__()
        self.block = block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        if isinstance(reference_context, ReferenceRecorder) and self.block in reference_context.blocks:
            reference_context.record(self.block, hidden_states)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class SharedSelfAttnProcessor:
    """Denoising-UNet self-attention over [target ; references] for the rows that see references.

    Queries come from the target tokens only (the official code also computes query rows for the
    reference tokens and throws them away).
    """

    def __init__(self, block: str):
        self.block = block

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        _check_plain_layout(attn)
        query = _split_heads(attn.to_q(hidden_states), attn.heads)
        key = _split_heads(attn.to_k(hidden_states), attn.heads)
        value = _split_heads(attn.to_v(hidden_states), attn.heads)

        shared = None
        if isinstance(reference_context, SharedAttention):
            start = reference_context.reference_rows_start
            shared = reference_context.keys_values_with_references(self.block, attn, key[start:], value[start:])
        if shared is None:
            return _output(attn, _merge_heads(F.scaled_dot_product_attention(query, key, value)))

        keys, values, bias = shared
        with_refs = F.scaled_dot_product_attention(query[start:], keys, values, attn_mask=bias)
        if start:
            own_only = F.scaled_dot_product_attention(query[:start], key[:start], value[:start])
            with_refs = torch.cat([own_only, with_refs])
        return _output(attn, _merge_heads(with_refs))


class DecoupledCrossAttnProcessor(nn.Module):
    """Cross-attention whose last `NUM_IMAGE_TOKENS` context tokens are CLIP image tokens with their own
    key/value projections (`to_k_dc`, `to_v_dc`): text attention + image attention, summed before to_out.

    Zero image tokens (the unconditional half) give an image term of exactly 0, so it is only computed
    for the rows that carry references.
    """

    def __init__(self, hidden_size: int, cross_attention_dim: int, image_scale: float = 1.0):
        super().__init__()
        self.to_k_dc = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_dc = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.image_scale = image_scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        _check_plain_layout(attn)
        text = encoder_hidden_states[:, :-NUM_IMAGE_TOKENS]
        image = encoder_hidden_states[:, -NUM_IMAGE_TOKENS:]
        query = _split_heads(attn.to_q(hidden_states), attn.heads)
        text_out = F.scaled_dot_product_attention(
            query, _split_heads(attn.to_k(text), attn.heads), _split_heads(attn.to_v(text), attn.heads)
        )
        start = reference_context.reference_rows_start if isinstance(reference_context, SharedAttention) else 0
        image = image[start:].to(self.to_k_dc.weight.dtype)
        image_out = F.scaled_dot_product_attention(
            query[start:], _split_heads(self.to_k_dc(image), attn.heads), _split_heads(self.to_v_dc(image), attn.heads)
        )
        if start:
            image_out = torch.cat([torch.zeros_like(text_out[:start]), image_out])
        return _output(attn, _merge_heads(text_out + self.image_scale * image_out))


def install_reference_processors(reference_unet: nn.Module) -> None:
    """Self-attention layers record their input; everything else is plain attention."""
    processors = {}
    for name in reference_unet.attn_processors:
        module_path = name[: -len(".processor")]
        processors[name] = ReferenceRecorderProcessor(module_path) if module_path.endswith("attn1") else PlainAttnProcessor()
    reference_unet.set_attn_processor(processors)


def install_denoising_processors(unet: nn.Module, decoupled: bool) -> None:
    """Self-attention layers share attention with the references; cross-attention layers get the
    decoupled image projections (new, zero-initialised modules the loader fills) when `decoupled`."""
    processors = {}
    for name in unet.attn_processors:
        module_path = name[: -len(".processor")]
        attn = unet.get_submodule(module_path)
        if module_path.endswith("attn1"):
            processors[name] = SharedSelfAttnProcessor(module_path)
        elif decoupled:
            processor = DecoupledCrossAttnProcessor(attn.to_q.out_features, attn.to_k.in_features)
            processors[name] = processor.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
        else:
            processors[name] = PlainAttnProcessor()
    unet.set_attn_processor(processors)
