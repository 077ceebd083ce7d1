"""The training objective: epsilon prediction on the checkpoint's linear-beta schedule, conditioned
exactly as the pipeline conditions generation, with per-sample dropping for classifier-free guidance.

One call of `diffusion_loss` is one training step's forward:
target latents + noise at a uniform timestep -> reference UNet at t=0 with each part's label text
(masked features, per sample) -> denoising UNet with [caption ; CLIP image tokens] as context and the
pose guider's features added after conv_in -> MSE against the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from torch import nn
from torch.nn import functional as F

from ..model.attention import NUM_IMAGE_TOKENS
from ..core.labels import PART_LABELS
from ..model.models import added_to_conv_in
from .config import DropoutConfig
from .references import record_references

#: References and targets go through the VAE encoder in chunks of this many images (peak memory).
VAE_ENCODE_CHUNK = 8


@dataclass
class TrainingModels:
    """Everything the objective runs. `unet`, `reference_unet` and `pose_guider` may be wrapped by
    accelerate (DDP); `unet_module` is the bare UNet whose conv_in receives the pose features."""

    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    image_encoder: nn.Module
    unet: nn.Module
    unet_module: nn.Module
    reference_unet: nn.Module
    pose_guider: nn.Module
    noise_scheduler: DDIMScheduler
    train_reference_unet: bool


@torch.no_grad()
def encode_text(models: TrainingModels, texts: list[str]) -> torch.Tensor:
    """CLIP text embeddings (N, 77, D), padded and truncated like the pipeline."""
    tokens = models.tokenizer(texts, padding="max_length", max_length=models.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt")
    return models.text_encoder(tokens.input_ids.to(models.text_encoder.device)).last_hidden_state


@torch.no_grad()
def _vae_latents(vae: nn.Module, pixels: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Scaled VAE latents: a posterior sample for targets (standard diffusion training), the posterior
    mean for references (what the pipeline uses at inference)."""
    chunks = []
    for chunk in pixels.split(VAE_ENCODE_CHUNK):
        posterior = vae.encode(chunk.to(device=vae.device, dtype=vae.dtype)).latent_dist
        chunks.append(posterior.sample(generator) if sample else posterior.mean)
    return torch.cat(chunks) * vae.config.scaling_factor


@dataclass
class DropDecisions:
    """Which conditions each sample loses this step (True = dropped)."""

    text: torch.Tensor        # (B,) prompt, image tokens and all references: the unconditional branch
    pose: torch.Tensor        # (B,)
    references: torch.Tensor  # (B, K)

    @classmethod
    def sample(cls, batch: int, slots: int, config: DropoutConfig, device, generator: torch.Generator | None = None):
        def coin(shape, probability):
            return torch.rand(shape, generator=generator, device=device) < probability

        text = coin((batch,), config.text)
        all_references = coin((batch,), config.all_references)
        references = coin((batch, slots), config.reference) | all_references[:, None] | text[:, None]
        return cls(text=text, pose=coin((batch,), config.pose), references=references)

    @classmethod
    def none(cls, batch: int, slots: int, device):
        return cls(torch.zeros(batch, dtype=torch.bool, device=device), torch.zeros(batch, dtype=torch.bool, device=device),
                   torch.zeros(batch, slots, dtype=torch.bool, device=device))


def _packed_image_tokens(tokens: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, NUM_IMAGE_TOKENS, D): each sample's present parts' CLIP tokens first, in slot order, then
    zeros, as the pipeline pads them."""
    batch = present.shape[0]
    packed = tokens.new_zeros(batch, NUM_IMAGE_TOKENS, tokens.shape[-1])
    if tokens.shape[0]:
        sample_index, _slot = present.nonzero(as_tuple=True)
        position = (present.cumsum(dim=1) - 1)[present]
        packed = packed.index_put((sample_index, position), tokens)
    return packed


def diffusion_loss(models: TrainingModels, batch: dict, drops: DropDecisions, label_embeds: torch.Tensor,
                   fusion_blocks: str = "full", generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true noise for one batch.

    `label_embeds` (K, 77, D) are the text embeddings of the K part labels (constant, computed once).
    """
    device = models.unet_module.device
    target = batch["target"].to(device)
    latents = _vae_latents(models.vae, target, sample=True, generator=generator).float()
    noise = torch.randn(latents.shape, generator=generator, device=device)
    num_train_timesteps = models.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator, device=device)
    noisy_latents = models.noise_scheduler.add_noise(latents, noise, timesteps)

    present = batch["present"].to(device) & ~drops.references
    reference_latents = _vae_latents(models.vae, batch["reference_pixels"].to(device)[present], sample=False, generator=None)
    slot_labels = torch.arange(len(PART_LABELS), device=device).expand_as(present)[present]
    with torch.set_grad_enabled(models.train_reference_unet and torch.is_grad_enabled()):
        references = record_references(models.reference_unet, reference_latents, label_embeds[slot_labels],
                                       batch["reference_masks"].to(device)[present], present, fusion_blocks)

    captions = ["" if dropped else caption for caption, dropped in zip(batch["caption"], drops.text.tolist())]
    with torch.no_grad():
        clip_input = batch["clip_pixels"].to(device)[present]
        image_tokens = models.image_encoder(clip_input.to(models.image_encoder.dtype)).image_embeds if clip_input.shape[0] \
            else clip_input.new_zeros(0, models.image_encoder.config.projection_dim)
    context = torch.cat([encode_text(models, captions), _packed_image_tokens(image_tokens, present)], dim=1)

    keep = ~drops.pose  # a blank map (DensePose found nobody) is no pose: dropped as pose dropout drops one
    if "structure_present" in batch:
        keep = keep & batch["structure_present"].to(device)
    keep_pose = keep.to(latents.dtype)[:, None, None, None]
    pose_features = models.pose_guider(batch["structure"].to(device)) * keep_pose
    with added_to_conv_in(models.unet_module, pose_features):
        prediction = models.unet(noisy_latents, timesteps, encoder_hidden_states=context,
                                 cross_attention_kwargs={"reference_context": references}).sample
    if models.noise_scheduler.config.prediction_type != "epsilon":
        raise ValueError("the Parts2Whole checkpoint predicts epsilon; other prediction types are not supported")
    return F.mse_loss(prediction.float(), noise.float())
