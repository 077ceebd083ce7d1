"""Parts2WholePipeline: reference parts + structure map + prompt -> full-body portrait.

`encode_references` runs once per set of references (all of them in one batched forward of the VAE,
the reference UNet and the CLIP image encoder); `__call__` then denoises with shared self-attention.
A caller may pass a cached `ReferenceEncoding` back in, so a new seed or prompt costs no reference work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import diffusers
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import schedulers as scheduler_table
from . import validation
from .allocator import tune_cpu_allocator
from .attention import (
    NUM_IMAGE_TOKENS, DecoupledCrossAttnProcessor, ReferenceFeatures, ReferenceRecorder, ReferenceRecordingComplete,
    SharedAttention, self_attention_blocks,
)
from ..core.errors import Parts2WholeInputError
from .image_processing import ClipImageSettings, clip_pixels, reference_pixels_and_mask, structure_pixels, to_pil
from .loading import DEFAULT_STRUCTURE_KIND, load_components, read_structure_kind, resolve_checkpoint
from .models import added_to_conv_in

logger = logging.getLogger(__name__)

#: The reference UNet encodes references as clean images: timestep 0.
REFERENCE_TIMESTEP = 0
#: Tensors a `callback_on_step_end` may ask for.
CALLBACK_TENSOR_INPUTS = {"latents", "noise_pred"}


@dataclass
class ReferenceEncoding:
    """Everything the denoising loop needs from the references; cacheable across generations."""

    labels: tuple[str, ...]
    height: int
    width: int
    fusion_blocks: str
    features: ReferenceFeatures
    image_tokens: torch.Tensor  # (K, D) CLIP image embeddings, one per reference

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.image_tokens.numel() * self.image_tokens.element_size()

    def split(self) -> list["ReferenceEncoding"]:
        """One encoding per reference, in order. Each reference's recorded features are independent of the
        others' (the reference UNet sees each batch row alone), so they can be cached one by one; each
        slice is copied, so an entry holds only its own bytes."""
        return [ReferenceEncoding(
            (label,), self.height, self.width, self.fusion_blocks,
            ReferenceFeatures({block: value[index:index + 1].clone() for block, value in self.features.features.items()},
                              {block: value[index:index + 1].clone() for block, value in self.features.token_weights.items()}),
            self.image_tokens[index:index + 1].clone()) for index, label in enumerate(self.labels)]

    @classmethod
    def combine(cls, parts: list["ReferenceEncoding"]) -> "ReferenceEncoding":
        """The encoding of several references from their single encodings (the inverse of `split`)."""
        first = parts[0]
        if any((part.height, part.width, part.fusion_blocks) != (first.height, first.width, first.fusion_blocks)
               for part in parts):
            raise ValueError("reference encodings of different sizes or fusion sets cannot be combined")
        blocks = first.features.features
        features = ReferenceFeatures(
            {block: torch.cat([part.features.features[block] for part in parts]) for block in blocks},
            {block: torch.cat([part.features.token_weights[block] for part in parts]) for block in blocks})
        labels = tuple(label for part in parts for label in part.labels)
        return cls(labels, first.height, first.width, first.fusion_blocks, features,
                   torch.cat([part.image_tokens for part in parts]))


@dataclass
class DenoisingRun:
    """What stays constant over the steps of one call (see `Parts2WholePipeline.prepare_denoising`)."""

    scheduler: object
    context: torch.Tensor
    pose_features: torch.Tensor
    shared: SharedAttention
    guidance_scale: float | None  # None: no classifier-free guidance (one batch half)
    step_kwargs: dict


@dataclass
class Parts2WholePipelineOutput(BaseOutput):
    images: list[Image.Image] | np.ndarray | torch.Tensor


class Parts2WholePipeline(DiffusionPipeline):
    """Generate a person from part references (see README). Load with `from_pretrained`.

    One call runs at a time per pipeline (a lock), because the pose features enter through a hook on
    the shared UNet's `conv_in`.
    """

    #: The order the models first run in a call (`enable_model_cpu_offload` unloads each model when the next
    #: one in this chain starts), so at most two large models share the GPU at any time.
    model_cpu_offload_seq = "vae->text_encoder->reference_unet->image_encoder->pose_guider->unet"

    def __init__(self, vae, text_encoder, tokenizer, image_encoder, feature_extractor, unet, reference_unet,
                 pose_guider, scheduler, structure_kind: str = DEFAULT_STRUCTURE_KIND):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
                              feature_extractor=feature_extractor, unet=unet, reference_unet=reference_unet,
                              pose_guider=pose_guider, scheduler=scheduler)
        self.register_to_config(structure_kind=structure_kind)
        self.clip_settings = ClipImageSettings.from_config(feature_extractor.to_dict())
        #: Keep only reference tokens with non-zero mask weight (exact; see attention.py). False runs the
        #: official schedule of keeping every masked-out token as a zero key (for benchmarks/tests).
        self.pack_masked_tokens = True
        self._call_lock = threading.Lock()
        tune_cpu_allocator()  # process-wide, once: see allocator.py

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, use_decoupled_cross_attn: bool = True,
                        torch_dtype: torch.dtype = torch.float32, revision: str | None = None,
                        vae: AutoencoderKL | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, structure_kind: str | None = None) -> "Parts2WholePipeline":
        """Load a checkpoint in the official layout from a local folder or a Hub id (e.g. "huanngzh/Parts2Whole").

        `structure_kind` (what the pose guider reads: "densepose" or "openpose") defaults to what the
        checkpoint declares in parts2whole.json, else "densepose" (the released checkpoint)."""
        folder = resolve_checkpoint(path_or_hub_id, revision=revision, use_decoupled_cross_attn=use_decoupled_cross_attn,
                                    with_vae=vae is None, cache_dir=cache_dir, local_files_only=local_files_only)
        components = load_components(folder, use_decoupled_cross_attn=use_decoupled_cross_attn, torch_dtype=torch_dtype, vae=vae)
        if vae is not None:
            components["vae"] = vae.to(dtype=torch_dtype)
        return cls(**components, structure_kind=structure_kind or read_structure_kind(folder))

    @property
    def structure_kind(self) -> str:
        return self.config.structure_kind

    @property
    def uses_decoupled_cross_attn(self) -> bool:
        return any(isinstance(p, DecoupledCrossAttnProcessor) for p in self.unet.attn_processors.values())

    @property
    def _compute_dtype(self) -> torch.dtype:
        return self.unet.dtype

    def prompt_truncation_note(self, prompt: str) -> str | None:
        """A note when the prompt is longer than the text encoder's context (it is cut, as CLIP always does)."""
        limit = self.tokenizer.model_max_length
        count = len(self.tokenizer(prompt or "", truncation=False).input_ids)
        if count > limit:
            return f"The prompt has {count - 2} tokens; only the first {limit - 2} are used. Shorten it to keep every word."
        return None

    # ------------------------------------------------------------------ encoders
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """CLIP text embeddings (len(texts), 77, D): padded and truncated to the tokenizer's context."""
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        ids = tokens.input_ids.to(self._execution_device)
        return self.text_encoder(ids).last_hidden_state

    def encode_references(self, references: Mapping[str, Image.Image], masks: Mapping[str, Image.Image] | None = None,
                          height: int = 768, width: int = 512, fusion_blocks: str = "full") -> ReferenceEncoding:
        """Check the references, size and fusion set once (`validation.normalise_references`, `check_size`,
        `check_fusion_blocks`), then encode them with `encode_checked`."""
        checked = validation.normalise_references(references, masks)
        height, width = validation.check_size(height, width)
        return self.encode_checked(checked, height, width, validation.check_fusion_blocks(fusion_blocks))

    @torch.no_grad()
    def encode_checked(self, references: validation.CheckedReferences, height: int, width: int,
                       fusion_blocks: str) -> ReferenceEncoding:
        """Encode references that were checked already (by `encode_references`, `validation.check_request` or
        the studio's validated request); nothing is checked again here, the empty-mask check included.

        VAE latents (one reference at a time) -> ONE batched reference-UNet pass at t=0 with each label's
        text, recording the masked self-attention inputs; batched CLIP image tokens."""
        images, given_masks = references.images, references.masks
        labels = references.labels
        pixels, subject_masks = [], []
        for label in labels:
            pixel, mask = reference_pixels_and_mask(images[label], given_masks.get(label), height, width)
            pixels.append(pixel)
            subject_masks.append(mask)
        device, dtype = self._execution_device, self._compute_dtype

        latents = torch.cat([self._encode_reference_latents(pixel.to(device=device, dtype=self.vae.dtype)) for pixel in pixels])
        label_embeds = self.encode_text(list(labels)).to(dtype)
        recorder = ReferenceRecorder(self_attention_blocks(self.reference_unet, fusion_blocks), torch.cat(subject_masks).to(device))
        try:
            self.reference_unet(latents.to(dtype), REFERENCE_TIMESTEP, encoder_hidden_states=label_embeds,
                                cross_attention_kwargs={"reference_context": recorder})
        except ReferenceRecordingComplete:
            pass
        else:
            raise RuntimeError("the reference UNet finished without recording every fusion block")

        clip_input = torch.cat([clip_pixels(images[label], self.clip_settings) for label in labels])
        image_tokens = self.image_encoder(clip_input.to(device=device, dtype=self.image_encoder.dtype)).image_embeds
        return ReferenceEncoding(labels, height, width, fusion_blocks, recorder.recorded, image_tokens.to(dtype))

    def _encode_reference_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior mean x scaling factor, for ONE reference at a time.

        The VAE encoder's full-resolution activations are the largest tensors of the call; batching six of
        them buys no speed (each is already big enough to keep every core or the GPU busy) but multiplies
        the peak memory, and on a CPU the fresh allocations cost page faults (SD1.5 VAE, 6 references at 384x256,
        2 cores: 27 CPU-seconds as one batch, 22 as six single encodes).
        """
        return self.vae.encode(pixels).latent_dist.mean * self.vae.config.scaling_factor

    # ------------------------------------------------------------------ generation
    def _context(self, encoding: ReferenceEncoding, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor | None,
                 num_images: int) -> torch.Tensor:
        """[text tokens ; image tokens] per batch row: uncond rows (if any) first, then cond rows.

        With decoupled attention the image tokens are zero-padded to exactly NUM_IMAGE_TOKENS; without it
        the K tokens are still appended and read as extra text tokens (the official behaviour).
        """
        image_tokens = encoding.image_tokens.unsqueeze(0)
        if self.uses_decoupled_cross_attn:
            padding = image_tokens.new_zeros(1, NUM_IMAGE_TOKENS - image_tokens.shape[1], image_tokens.shape[2])
            image_tokens = torch.cat([image_tokens, padding], dim=1)
        rows = [torch.cat([prompt_embeds, image_tokens], dim=1).expand(num_images, -1, -1)]
        if negative_embeds is not None:
            rows.insert(0, torch.cat([negative_embeds, torch.zeros_like(image_tokens)], dim=1).expand(num_images, -1, -1))
        return torch.cat(rows)

    def _initial_latents(self, latents, generator, num_images: int, height: int, width: int) -> torch.Tensor:
        shape = (num_images, self.unet.config.in_channels, height // 8, width // 8)
        if latents is None:
            return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=torch.float32)
        latents = torch.as_tensor(np.asarray(latents) if not isinstance(latents, torch.Tensor) else latents)
        if tuple(latents.shape) != shape:
            raise Parts2WholeInputError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
        return latents.to(device=self._execution_device, dtype=torch.float32)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents (N, 4, h, w) -> images: "np" float32 (N, H, W, 3) in [0, 1], or PIL images."""
        if output_type == "latent":
            return latents
        decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images = (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return images if output_type == "np" else to_pil(images)

    @torch.no_grad()
    def __call__(
        self,
        references: Mapping[str, Image.Image] | None = None,
        masks: Mapping[str, Image.Image] | None = None,
        structure: Image.Image | None = None,
        prompt: str = "",
        negative_prompt: str | None = None,
        height: int = 768,
        width: int = 512,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.5,
        latents: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        fusion_blocks: str = "full",
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        reference_encoding: ReferenceEncoding | None = None,
        scheduler: str | None = None,
        eta: float = 0.0,
    ) -> Parts2WholePipelineOutput:
        """Generate `num_images_per_prompt` images. See README for every argument.

        `scheduler`: a sampler name from `parts2whole.model.schedulers.SCHEDULER_NAMES` ("ddim", "dpmpp_2m",
        "dpmpp_2m_karras", "unipc", "euler_a"), built from `pipe.scheduler`'s config; None (the default)
        uses `pipe.scheduler` itself, which is DDIM, the official sampler, as loaded. Either way each call
        gets its own instance. `eta`: DDIM's noise weight (0, the official value, is deterministic).

        Every argument is checked once, here (`validation.check_request`: references normalised once,
        scheduler name canonicalised once); `generate_checked` then trusts the result.
        """
        request = validation.check_request(
            references=references, masks=masks, structure=structure, prompt=prompt, negative_prompt=negative_prompt,
            height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type, fusion_blocks=fusion_blocks,
            has_reference_encoding=reference_encoding is not None, scheduler=scheduler, eta=eta)
        unknown = set(callback_on_step_end_tensor_inputs) - CALLBACK_TENSOR_INPUTS
        if unknown:
            raise Parts2WholeInputError(f"callback_on_step_end_tensor_inputs may name {sorted(CALLBACK_TENSOR_INPUTS)}, not {sorted(unknown)}.")
        for note in (self.prompt_truncation_note(request.settings.prompt), validation.structure_note(structure, height, width)):
            if note:
                logger.warning(note)
        return self.generate_checked(request, reference_encoding=reference_encoding, latents=latents, generator=generator,
                                     callback_on_step_end=callback_on_step_end,
                                     callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)

    @torch.no_grad()
    def generate_checked(self, request: validation.CheckedRequest, *, reference_encoding: ReferenceEncoding | None = None,
                         latents: torch.Tensor | np.ndarray | None = None,
                         generator: torch.Generator | list[torch.Generator] | None = None,
                         callback_on_step_end: Callable | None = None,
                         callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",)) -> Parts2WholePipelineOutput:
        """Generate from arguments checked already (by `__call__` or the studio's validated request): nothing
        is checked again, except that a cached `reference_encoding` was made for this size and fusion set.
        Without an encoding, `request.references` are encoded first (`encode_checked`)."""
        with self._call_lock:
            encoding = reference_encoding
            if encoding is None:
                if request.references is None:
                    raise ValueError("generate_checked needs request.references or a reference_encoding")
                encoding = self.encode_checked(request.references, request.height, request.width, request.fusion_blocks)
            elif (encoding.height, encoding.width, encoding.fusion_blocks) != (request.height, request.width, request.fusion_blocks):
                raise Parts2WholeInputError("The cached reference encoding was made for another size or fusion set.")
            output = self._generate(encoding, request, latents, generator, callback_on_step_end,
                                    callback_on_step_end_tensor_inputs)
            self.maybe_free_model_hooks()  # with model CPU offload: every model back to the CPU after a call
            return output

    def _new_scheduler(self, name: str | None):
        """A fresh scheduler for one call (multistep solvers keep state on the instance; `self.scheduler` is
        only read, so calls with different samplers never share one). `name` is canonical already (checked
        by `validation.check_request` or the studio), so it is looked up, not canonicalised again."""
        if name is None:
            return type(self.scheduler).from_config(self.scheduler.config)
        choice = scheduler_table.SCHEDULERS[name]
        return getattr(diffusers, choice.class_name).from_config(dict(self.scheduler.config), **choice.overrides)

    def _generate(self, encoding, request: validation.CheckedRequest, latents, generator, callback, callback_inputs):
        settings, height, width = request.settings, request.height, request.width
        run = self.prepare_denoising(encoding, request, generator)
        # Noise at the first timestep's level: 1 for DDIM and the DPM/UniPC solvers, sigma_max-scaled for Euler.
        latents = self._initial_latents(latents, generator, settings.num_images_per_prompt, height, width) \
            * run.scheduler.init_noise_sigma
        latents = self.denoise(run, latents, run.scheduler.timesteps, callback, callback_inputs)
        return Parts2WholePipelineOutput(images=self.decode_latents(latents, settings.output_type))

    def prepare_denoising(self, encoding, request: validation.CheckedRequest, generator) -> "DenoisingRun":
        """Everything constant over the steps of one call: text/image context, pose features, a fresh
        scheduler with its timesteps set, the shared attention over the references."""
        settings, structure, height, width = request.settings, request.structure, request.height, request.width
        device, dtype = self._execution_device, self._compute_dtype
        guided = settings.guidance_scale > 1
        num_images = settings.num_images_per_prompt
        texts = [settings.negative_prompt, settings.prompt] if guided else [settings.prompt]
        text_embeds = self.encode_text(texts).to(dtype)
        negative_embeds, prompt_embeds = (text_embeds[:1], text_embeds[1:]) if guided else (None, text_embeds)
        context = self._context(encoding, prompt_embeds, negative_embeds, num_images)
        pose_features = self.pose_guider(structure_pixels(structure, height, width).to(device=device, dtype=dtype))

        scheduler = self._new_scheduler(request.scheduler)  # per call: no shared mutable state
        scheduler.set_timesteps(settings.num_inference_steps, device=device)
        shared = SharedAttention(encoding.features.to(device), reference_rows_start=num_images if guided else 0,
                                 pack_masked_tokens=self.pack_masked_tokens)
        return DenoisingRun(scheduler, context, pose_features, shared, settings.guidance_scale if guided else None,
                            scheduler_table.step_kwargs(scheduler, generator, request.eta))

    def denoise(self, run: "DenoisingRun", latents: torch.Tensor, timesteps, callback=None, callback_inputs=("latents",),
                after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The denoising loop over `timesteps`; `after_step(step_index, latents)` may replace the latents after
        each scheduler step (the edit pipeline blends the source back in there), before the callback."""
        dtype, scheduler = self._compute_dtype, run.scheduler
        with added_to_conv_in(self.unet, run.pose_features):
            for step_index, timestep in enumerate(self.progress_bar(timesteps)):
                model_input = torch.cat([latents, latents]) if run.guidance_scale is not None else latents
                model_input = scheduler.scale_model_input(model_input, timestep)  # identity for DDIM
                noise = self.unet(model_input.to(dtype), timestep, encoder_hidden_states=run.context,
                                  cross_attention_kwargs={"reference_context": run.shared}).sample.float()
                if run.guidance_scale is not None:
                    noise_uncond, noise_cond = noise.chunk(2)
                    noise = noise_uncond + run.guidance_scale * (noise_cond - noise_uncond)
                latents = scheduler.step(noise, timestep, latents, **run.step_kwargs).prev_sample
                if after_step is not None:
                    latents = after_step(step_index, latents)
                if callback is not None:
                    available = {"latents": latents, "noise_pred": noise}
                    returned = callback(self, step_index, timestep, {name: available[name] for name in callback_inputs}) or {}
                    latents = returned.get("latents", latents)
        return latents
