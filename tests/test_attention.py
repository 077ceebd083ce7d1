"""Shared self-attention on a small attention layer: the packed fast path equals the official softmax over
every reference token (masked-out ones as zero keys), and the per-call key/value layout is reused across
steps without changing a result."""

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention

from parts2whole.model.attention import BANK_DTYPE, ReferenceFeatures, SharedAttention, SharedSelfAttnProcessor

BLOCK = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
CHANNELS, HEADS, OWN_TOKENS, REF_TOKENS, NUM_REFS = 16, 2, 12, 10, 3


@pytest.fixture(scope="module")
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS, bias=False).eval()


@pytest.fixture(scope="module")
def references():
    """Three references whose masks keep some tokens, scale some (fractional) and drop the rest (zeros)."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.rand(NUM_REFS, REF_TOKENS, generator=generator)
    weights[weights < 0.4] = 0.0
    features = torch.randn(NUM_REFS, REF_TOKENS, CHANNELS, generator=generator) * weights[..., None]
    return ReferenceFeatures({BLOCK: features.to(BANK_DTYPE)}, {BLOCK: weights})


def official_attention(attn, hidden_states, references, start):
    """Explicit softmax: rows from `start` attend over [own ; every reference token], zero tokens included."""
    bank = references.features[BLOCK].float().flatten(0, 1)
    outputs = []
    for row in range(hidden_states.shape[0]):
        tokens = hidden_states[row]
        context = torch.cat([tokens, bank]) if row >= start else tokens
        q = attn.to_q(tokens).view(-1, HEADS, CHANNELS // HEADS).transpose(0, 1)
        k = attn.to_k(context).view(-1, HEADS, CHANNELS // HEADS).transpose(0, 1)
        v = attn.to_v(context).view(-1, HEADS, CHANNELS // HEADS).transpose(0, 1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(CHANNELS // HEADS), dim=-1)
        outputs.append(attn.to_out[0]((weights @ v).transpose(0, 1).reshape(-1, CHANNELS)))
    return torch.stack(outputs)


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("start", [0, 1])
def test_shared_attention_equals_the_explicit_official_softmax(attn, references, pack, start):
    hidden_states = torch.randn(2, OWN_TOKENS, CHANNELS, generator=torch.Generator().manual_seed(2))
    context = SharedAttention(references, reference_rows_start=start, pack_masked_tokens=pack)
    processor = SharedSelfAttnProcessor(BLOCK)
    with torch.no_grad():
        fast = processor(attn, hidden_states, reference_context=context)
        expected = official_attention(attn, hidden_states, references, start)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)


def test_packing_drops_the_zero_tokens_behind_one_biased_key(attn, references):
    context = SharedAttention(references, reference_rows_start=1)
    keys, _, bias = context.reference_keys_values(BLOCK, attn, torch.float32)
    kept = int((references.token_weights[BLOCK] > 0).sum())
    dropped = NUM_REFS * REF_TOKENS - kept
    assert keys.shape[2] == kept + 1
    assert bias == pytest.approx(math.log(dropped))


def test_the_layout_is_built_once_per_call_and_matches_concatenation(attn, references):
    """Inference writes each step's own keys into one buffer laid out at the first step; with gradients on
    it concatenates afresh (an in-place write would break the backward pass). Both give the same keys."""
    context = SharedAttention(references, reference_rows_start=0)
    generator = torch.Generator().manual_seed(3)
    for step in range(3):
        own_keys = torch.randn(1, HEADS, OWN_TOKENS, CHANNELS // HEADS, generator=generator)
        own_values = torch.randn(1, HEADS, OWN_TOKENS, CHANNELS // HEADS, generator=generator)
        with torch.no_grad():
            keys, values, bias = context.keys_values_with_references(BLOCK, attn, own_keys, own_values)
        if step == 0:
            buffer_address = keys.data_ptr()
        assert keys.data_ptr() == buffer_address  # the same buffer every step
        fresh_keys, fresh_values, fresh_bias = context.keys_values_with_references(BLOCK, attn, own_keys, own_values)
        assert fresh_keys.data_ptr() != buffer_address
        torch.testing.assert_close(keys, fresh_keys, atol=0, rtol=0)
        torch.testing.assert_close(values, fresh_values, atol=0, rtol=0)
        torch.testing.assert_close(bias, fresh_bias, atol=0, rtol=0)
    projected_keys = context.reference_keys_values(BLOCK, attn, torch.float32)[0]
    assert projected_keys.untyped_storage().data_ptr() == keys.untyped_storage().data_ptr()  # no second copy
