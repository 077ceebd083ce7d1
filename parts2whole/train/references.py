"""Shared attention with a different set of references for every sample of a training batch.

At inference one person's references are shared by the whole batch (`attention.SharedAttention`). In
training each sample brings its own parts, some of them absent or dropped, so:

- `TrainingReferenceRecorder` records the reference UNet's masked features in the compute dtype
  (no float16 rounding: gradients should see the exact features) and tolerates being re-run by
  gradient checkpointing.
- `PerSampleReferences` holds, per fusion block, features (B, K*n, C) and a key mask (B, K*n): tokens of
  absent or dropped parts are excluded with the mask, while masked-out tokens of present parts stay as
  zero keys, exactly as at inference (where packing them is an exact rewrite of keeping them).
- `PerSampleSharedSelfAttnProcessor` reads that context and otherwise behaves as the core processor, so
  the same UNet also runs the validation pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn
from torch.nn import functional as F

from ..model.attention import (
    ReferenceRecorder, ReferenceRecordingComplete, SharedSelfAttnProcessor, _check_plain_layout, _merge_heads, _output,
    _split_heads, mask_token_weights, self_attention_blocks,
)

#: The reference UNet sees clean references: timestep 0.
REFERENCE_TIMESTEP = 0


@dataclass
class TrainingReferenceRecorder(ReferenceRecorder):
    """Records `mask ⊙ LayerNorm1(h)` without rounding; stops the forward only the first time the last
    block is reached (a gradient-checkpointing recomputation must run through)."""

    finished: bool = False

    def record(self, block: str, normed_hidden_states: torch.Tensor) -> None:
        weights = mask_token_weights(self.masks.to(torch.float32), normed_hidden_states.shape[1])
        weights = weights.to(normed_hidden_states.device)
        self.recorded.features[block] = normed_hidden_states * weights.unsqueeze(-1).to(normed_hidden_states.dtype)
        self.recorded.token_weights[block] = weights
        if len(self.recorded.features) == len(self.blocks) and not self.finished:
            self.finished = True
            raise ReferenceRecordingComplete


@dataclass
class PerSampleReferences:
    """Per fusion block: reference tokens (B, K*n, C) and which of them exist (B, K*n)."""

    features: dict[str, torch.Tensor]
    key_mask: dict[str, torch.Tensor]


def record_references(reference_unet: nn.Module, latents: torch.Tensor, label_embeds: torch.Tensor,
                      masks: torch.Tensor, present: torch.Tensor, fusion_blocks: str) -> PerSampleReferences | None:
    """Run the reference UNet once over the present references and lay the features out per sample.

    present (B, K) bool says which part slots exist; latents (P, 4, h, w), label_embeds (P, 77, D) and
    masks (P, 1, H, W) hold the P present references in row-major (sample, slot) order.
    Returns None when no reference is present in the batch.
    """
    batch, slots = present.shape
    if not bool(present.any()):
        return None
    # Block names come from the bare model: a DDP wrapper would prefix them with "module.".
    recorder = TrainingReferenceRecorder(self_attention_blocks(extract_model_from_parallel(reference_unet), fusion_blocks), masks)
    timesteps = torch.full((latents.shape[0],), REFERENCE_TIMESTEP, device=latents.device, dtype=torch.long)
    try:
        reference_unet(latents, timesteps, encoder_hidden_states=label_embeds,
                       cross_attention_kwargs={"reference_context": recorder})
    except ReferenceRecordingComplete:
        pass
    else:
        raise RuntimeError("the reference UNet finished without recording every fusion block")
    rows = present.flatten().nonzero().squeeze(1)
    features, key_mask = {}, {}
    for block, recorded in recorder.recorded.features.items():
        tokens, channels = recorded.shape[1:]
        padded = recorded.new_zeros(batch * slots, tokens, channels).index_put((rows,), recorded)
        features[block] = padded.view(batch, slots * tokens, channels)
        key_mask[block] = present.unsqueeze(-1).expand(-1, -1, tokens).reshape(batch, slots * tokens)
    return PerSampleReferences(features, key_mask)


class PerSampleSharedSelfAttnProcessor(SharedSelfAttnProcessor):
    """Self-attention over [own tokens ; this sample's reference tokens] with a key mask."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        if not isinstance(reference_context, PerSampleReferences) or self.block not in reference_context.features:
            plain_context = None if isinstance(reference_context, PerSampleReferences) else reference_context
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, plain_context)
        _check_plain_layout(attn)
        tokens = reference_context.features[self.block].to(hidden_states.dtype)
        own = hidden_states.shape[1]
        query = _split_heads(attn.to_q(hidden_states), attn.heads)
        keys = _split_heads(attn.to_k(torch.cat([hidden_states, tokens], dim=1)), attn.heads)
        values = _split_heads(attn.to_v(torch.cat([hidden_states, tokens], dim=1)), attn.heads)
        reference_mask = reference_context.key_mask[self.block].to(hidden_states.device)
        attn_mask = None  # every part present in every sample: no mask, so fused kernels stay available
        if not bool(reference_mask.all()):
            own_keys = torch.ones(hidden_states.shape[0], own, dtype=torch.bool, device=hidden_states.device)
            attn_mask = torch.cat([own_keys, reference_mask], dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(query, keys, values, attn_mask=attn_mask)
        return _output(attn, _merge_heads(out))


def install_training_processors(unet: nn.Module) -> None:
    """Swap the denoising UNet's self-attention processors for per-sample ones; cross-attention
    processors (with their decoupled image projections) stay the same objects."""
    processors = {}
    for name, processor in unet.attn_processors.items():
        module_path = name[: -len(".processor")]
        processors[name] = PerSampleSharedSelfAttnProcessor(module_path) if module_path.endswith("attn1") else processor
    unet.set_attn_processor(processors)
