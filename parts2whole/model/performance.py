"""Speed and memory options for a loaded `Parts2WholePipeline`, and what they cost in GPU memory.

The exact savings of design.md ("Where the speed comes from", 1-5: target-only queries, shared attention
for the conditional half only, reference keys/values projected once per call, masked-token packing, one
batched and cacheable reference encoding) are always on in the core. This module adds the optional ones:

- `dtype=torch.float16` (or bfloat16): half precision on a GPU. About twice as fast and half the memory;
  NOT within the golden 1e-4 of float32 (half-precision rounding), so parity is checked in float32.
- `compile=True`: `torch.compile` of the denoising UNet (the only model that runs once per step), by
  region: its resnets, feed-forwards and resamplers. The attention processors stay eager: they carry
  per-call Python state (the reference cache) that would break the graph and force a recompile per block
  (compiling the whole UNet on CPU took 7.5 minutes for the TINY model and hit the recompile limit).
  It can pay off on a GPU over many steps; the first call compiles, a new image size may recompile.
- `vae_slicing=True`: the VAE decodes several images (`num_images_per_prompt` > 1) one at a time instead
  of as one batch. Same output. (The references always go through the VAE encoder one at a time: see
  `Parts2WholePipeline._encode_reference_latents`.)
- `vae_tiling=True`: the VAE works on overlapping tiles above its tile size (512 px for SD1.5). Needed only
  far above 768x512; the blended seams change the image slightly, so it is off by default.
- `cpu_offload=True`: model CPU offload (accelerate hooks): each model moves to the GPU only while it
  runs, so the GPU holds one model at a time (the UNet during the loop) instead of all of them. It costs
  one host-to-device copy per model and call (not per step). For GPUs with less than ~8 GB.

Attention slicing is not offered: diffusers' `enable_attention_slicing` would replace the Parts2Whole
attention processors (and silently drop the references), and the fused SDPA kernels already keep the
attention's memory linear in the number of tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.downsampling import Downsample2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .attention import BANK_DTYPE, self_attention_blocks

#: The VAE and the UNet work on latents 8 times smaller than the image in each direction.
LATENT_FACTOR = 8
#: A transformer block's feed-forward (GEGLU) projects C channels to 2 x 4C: the largest per-token tensor.
FEED_FORWARD_WIDTH = 8
#: Tensors of the widest shape alive at once in the peak layer of a model (input, normed, output, a spare).
LIVE_TENSORS_AT_PEAK = 4
#: Guidance doubles the denoising batch.
GUIDANCE_BATCH = 2
#: SD1.5 VAE: channels of the full-resolution encoder/decoder block and of the up-sampler feeding it.
VAE_FULL_RESOLUTION_CHANNELS = 128
VAE_UPSAMPLER_CHANNELS = 256
#: The UNet regions `compile=True` compiles: pure tensor code, repeated through the network.
COMPILED_REGIONS = (ResnetBlock2D, FeedForward, Downsample2D, Upsample2D)


def optimize_pipeline(pipe, *, dtype: torch.dtype | None = None, compile: bool = False, vae_tiling: bool = False,
                      vae_slicing: bool = False, cpu_offload: bool = False, offload_device: str = "cuda"):
    """Apply the optional speed/memory options (module docstring: when each helps) and return `pipe`.

    Everything but `dtype` (and the rounding of `vae_tiling` above the tile size) leaves the output
    unchanged. `cpu_offload` must come last among device moves: do not call `pipe.to(...)` afterwards.
    """
    if dtype is not None:
        pipe.to(dtype=dtype)
    if vae_slicing:
        pipe.vae.enable_slicing()
    if vae_tiling:
        pipe.vae.enable_tiling()
    if compile:
        # In place: every module keeps its type, config, device and attention processors.
        for module in pipe.unet.modules():
            if isinstance(module, COMPILED_REGIONS):
                module.compile()
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=offload_device)
    return pipe


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of an estimated GPU peak: resident weights, the per-call reference state, the largest
    activations of any phase (reference encoding, a denoising step, decoding)."""

    weights: int
    reference_state: int
    activations: int
    peak_phase: str

    @property
    def total(self) -> int:
        return self.weights + self.reference_state + self.activations

    def describe(self) -> str:
        gib = 2**30
        return (f"weights {self.weights / gib:.2f} + reference features and projected K/V {self.reference_state / gib:.2f} "
                f"+ activations {self.activations / gib:.2f} GiB (peak in {self.peak_phase})")


def _parameter_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    return sum(p.numel() for p in module.parameters()) * torch.finfo(dtype).bits // 8


def _block_tokens_and_channels(unet: nn.Module, latent_height: int, latent_width: int):
    """(tokens, channels) of every shared self-attention layer: down block i works at 1/2**i of the latent
    grid, the mid block at the coarsest, up block j at 1/2**(levels-1-j)."""
    levels = len(unet.config.block_out_channels)
    for path in self_attention_blocks(unet, "full"):
        kind, _, rest = path.partition(".")
        if kind == "down_blocks":
            level = int(rest.split(".")[0])
        elif kind == "up_blocks":
            level = levels - 1 - int(rest.split(".")[0])
        else:
            level = levels - 1
        factor = 2**level
        tokens = math.ceil(latent_height / factor) * math.ceil(latent_width / factor)
        yield tokens, unet.get_submodule(path).to_q.in_features


def estimate_peak_gpu_memory(pipe, *, height: int, width: int, num_references: int, dtype: torch.dtype,
                             cpu_offload: bool = False) -> MemoryEstimate:
    """An estimate (no GPU needed) of the peak GPU memory of one call, from parameter counts and the
    sizes of the largest activations, assuming fused SDPA kernels (no attention score matrix is stored).

    With `cpu_offload` the largest model, the text encoder and the VAE are resident at worst. Allocator
    overhead and the CUDA context (a few hundred MB) come on top.
    """
    element = torch.finfo(dtype).bits // 8
    models = {name: module for name, module in pipe.components.items() if isinstance(module, nn.Module)}
    sizes = {name: _parameter_bytes(module, dtype) for name, module in models.items()}
    if cpu_offload:
        # The offload chain (vae -> text_encoder -> reference_unet -> image_encoder -> pose_guider -> unet)
        # unloads a model when the next one starts; the text encoder (prompt) and the VAE (decoding) run
        # again around the loop, so at worst they share the GPU with the largest UNet.
        weights = max(sizes.values()) + sizes.get("text_encoder", 0) + sizes.get("vae", 0)
    else:
        weights = sum(sizes.values())

    latent_height, latent_width = height // LATENT_FACTOR, width // LATENT_FACTOR
    blocks = list(_block_tokens_and_channels(pipe.unet, latent_height, latent_width))
    bank_element = torch.finfo(BANK_DTYPE).bits // 8
    bank = sum(tokens * channels for tokens, channels in blocks) * num_references * bank_element
    projected = 2 * sum(tokens * channels for tokens, channels in blocks) * num_references * element  # keys + values
    reference_state = bank + projected

    widest_tokens, widest_channels = max(blocks, key=lambda block: block[0] * block[1])
    step = GUIDANCE_BATCH * widest_tokens * widest_channels * FEED_FORWARD_WIDTH * element * LIVE_TENSORS_AT_PEAK // 2
    step += widest_tokens * (1 + num_references) * widest_channels * 2 * element  # keys/values of [target ; refs]
    pixels = height * width
    encode = VAE_FULL_RESOLUTION_CHANNELS * pixels * element * LIVE_TENSORS_AT_PEAK  # one reference at a time
    decode = (VAE_UPSAMPLER_CHANNELS + VAE_FULL_RESOLUTION_CHANNELS * (LIVE_TENSORS_AT_PEAK - 1)) * pixels * element
    phases = {"reference encoding (VAE)": encode, "a denoising step": step, "decoding": decode}
    peak_phase = max(phases, key=phases.get)
    return MemoryEstimate(weights, reference_state, phases[peak_phase], peak_phase)
