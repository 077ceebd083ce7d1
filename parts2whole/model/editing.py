"""Parts2WholeEditPipeline: change some parts of a photo (or of a result) and keep every other pixel.

Why a sibling pipeline made with `from_pipe`, not new arguments on `Parts2WholePipeline`: diffusers keeps
inpainting beside text-to-image (`StableDiffusionInpaintPipeline` next to `StableDiffusionPipeline`), and
`Parts2WholeEditPipeline.from_pipe(pipe)` shares every loaded module with `pipe` (no second copy of the
weights), while the portrait pipeline's call, the one the golden fixtures pin, stays exactly as it is.
Both run the same denoising loop (`Parts2WholePipeline.denoise`); the edit adds one hook to it.

Method: training-free blended latent diffusion (the released model was trained for whole portraits,
never for inpainting). Data flow of one call:

1. The crop (diffusers' `padding_mask_crop`): a box around the region and the person (the structure
   map's drawn pixels), padded, grown to the model's aspect with `VaeImageProcessor.get_crop_region`.
   Source, region and structure are cut to it and resized to the working size (height x width).
2. The source crop is encoded with the VAE (posterior mean x scaling factor). One noise tensor is drawn
   from the generator, so a seed reproduces the edit.
3. `strength` picks the first timestep as diffusers' img2img does: 1 starts from pure noise inside the
   region, < 1 from the source noised to that timestep (`scheduler.add_noise`).
4. After every scheduler step the latents outside the region (its latent cells, feather band included)
   are replaced by the source latents noised to the next timestep (the clean source after the last).
5. The crop is decoded, resized back to the box, and composited over the full-resolution source with the
   region's edge feathered over `feather` pixels: alpha is 1 on the region, ramps to 0 across the band,
   and is exactly 0 beyond it, where every output pixel IS the source's pixel.
"""

from __future__ import annotations

from collections.abc import Callable
import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..core.errors import Parts2WholeInputError
from . import validation
from .edit_region import DEFAULT_FEATHER, CheckedEdit, check_edit, feathered_alpha  # noqa: F401 - re-exported
from .image_processing import to_pil
from .pipeline import Parts2WholePipeline, Parts2WholePipelineOutput, ReferenceEncoding

#: Pixels of context kept around the region and the person in the crop, as diffusers' `padding_mask_crop`.
DEFAULT_CROP_PADDING = 32
#: The VAE's down-sampling factor: one latent cell covers this many pixels per side.
LATENT_FACTOR = 8
#: Structure (pose map) pixels brighter than this are the person: DensePose and OpenPose-style maps are
#: drawn on black.
PERSON_THRESHOLD = 8


def crop_box(region_band: Image.Image, structure: Image.Image, width: int, height: int,
             padding: int | None) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) that is edited: the whole source without padding, else the region (with its
    feather band) and the person, padded and grown to the working aspect (diffusers' `get_crop_region`)."""
    if padding is None:
        return (0, 0, region_band.width, region_band.height)
    person = np.asarray(structure.convert("L").resize(region_band.size, Image.Resampling.NEAREST)) > PERSON_THRESHOLD
    keep = np.asarray(region_band) > 0
    if person.any():
        rows, cols = np.nonzero(person)
        keep[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    return VaeImageProcessor.get_crop_region(Image.fromarray(keep.astype(np.uint8) * 255), width, height, pad=padding)


def first_timestep_index(num_steps: int, strength: float, order: int = 1) -> int:
    """Where a `strength` edit starts in the scheduler's timesteps (diffusers' img2img rule)."""
    init_steps = min(int(num_steps * strength), num_steps)
    return max(num_steps - init_steps, 0) * order


class Parts2WholeEditPipeline(Parts2WholePipeline):
    """Change parts of `image` inside `mask_image`; build with `Parts2WholeEditPipeline.from_pipe(pipe)`."""

    @classmethod
    def from_pipe(cls, pipeline: Parts2WholePipeline, **kwargs) -> "Parts2WholeEditPipeline":
        """diffusers' `from_pipe`, sharing every loaded module of `pipeline` and its call lock (both run
        the same UNet, whose `conv_in` carries a call's pose features). The modules are passed by name:
        diffusers matches them by `__init__` annotations, which this pipeline's checkpoint-typed ones lack.
        The dtype is the pipeline's own: without one, diffusers' `from_pipe` casts the new pipeline, and so
        the shared modules of a float16 pipeline, to float32."""
        kwargs = {**pipeline.components, "structure_kind": pipeline.structure_kind, "dtype": pipeline.dtype,
                  **kwargs}
        edit = super().from_pipe(pipeline, **kwargs)
        edit._call_lock = pipeline._call_lock
        if hasattr(pipeline, "_progress_bar_config"):
            edit.set_progress_bar_config(**pipeline._progress_bar_config)
        return edit

    @torch.no_grad()
    def __call__(self, image: Image.Image | None = None, mask_image: Image.Image | None = None, references=None,
                 masks=None, structure: Image.Image | None = None, prompt: str = "", negative_prompt: str | None = None,
                 height: int = 768, width: int = 512, strength: float = 1.0,
                 padding_mask_crop: int | None = DEFAULT_CROP_PADDING, feather: int = DEFAULT_FEATHER,
                 num_inference_steps: int = 50, guidance_scale: float = 3.5, generator=None,
                 fusion_blocks: str = "full", num_images_per_prompt: int = 1, output_type: str = "pil",
                 reference_encoding: ReferenceEncoding | None = None, scheduler: str | None = None,
                 eta: float = 0.0, callback_on_step_end: Callable | None = None) -> Parts2WholePipelineOutput:
        """Edit `image` (any size): the parts in `references` are drawn inside `mask_image` (white = change),
        on the pose `structure` (a map aligned with `image`, e.g. its DensePose map). `height` x `width` is
        the working size of the crop; the output has the source's size. `output_type`: "pil" or "np"."""
        if output_type not in ("pil", "np"):
            raise Parts2WholeInputError(f"An edit's output_type is 'pil' or 'np', got {output_type!r}.")
        request = validation.check_request(
            references=references, masks=masks, structure=structure, prompt=prompt, negative_prompt=negative_prompt,
            height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type, fusion_blocks=fusion_blocks,
            has_reference_encoding=reference_encoding is not None, scheduler=scheduler, eta=eta)
        edit = check_edit(image, mask_image, strength, padding_mask_crop, feather)
        return self.edit_checked(request, edit, reference_encoding=reference_encoding, generator=generator,
                                 callback_on_step_end=callback_on_step_end)

    @torch.no_grad()
    def edit_checked(self, request: validation.CheckedRequest, edit: CheckedEdit, *,
                     reference_encoding: ReferenceEncoding | None = None, generator=None,
                     callback_on_step_end: Callable | None = None) -> Parts2WholePipelineOutput:
        """Edit from arguments checked already (by `__call__` or the studio). The structure map is aligned
        with the source (it is cut with the same box). With `strength` too small to run a single step, the
        output is the source itself."""
        settings = request.settings
        alpha = feathered_alpha(edit.region, edit.feather)
        box = crop_box(alpha, request.structure, request.width, request.height, edit.padding_mask_crop)
        num_images = settings.num_images_per_prompt
        scheduler = self._new_scheduler(request.scheduler)
        scheduler.set_timesteps(settings.num_inference_steps)
        start = first_timestep_index(settings.num_inference_steps, edit.strength, getattr(scheduler, "order", 1))
        if start >= len(scheduler.timesteps):
            return self._output([np.asarray(edit.image, dtype=np.float32) / 255.0] * num_images, settings.output_type)
        structure = request.structure.convert("RGB").resize(edit.image.size, Image.Resampling.NEAREST).crop(box)
        cropped = validation.CheckedRequest(request.references, structure, settings, request.height, request.width,
                                            request.fusion_blocks, request.scheduler, request.eta)
        with self._call_lock:
            encoding = reference_encoding
            if encoding is None:
                encoding = self.encode_checked(request.references, request.height, request.width, request.fusion_blocks)
            latents = self._edit_latents(cropped, edit.image.crop(box), alpha.crop(box), edit.strength, encoding,
                                         generator, callback_on_step_end)
            decoded = self.decode_latents(latents, "np")
            self.maybe_free_model_hooks()
        return self._output([self._paste(crop, edit.image, alpha, box) for crop in decoded], settings.output_type)

    def _edit_latents(self, request, source_crop, alpha_crop, strength, encoding, generator, callback):
        """Blended latent diffusion on the crop at the working size (steps 2-4 of the module docstring)."""
        device, height, width = self._execution_device, request.height, request.width
        num_images = request.settings.num_images_per_prompt
        processor = VaeImageProcessor(vae_scale_factor=LATENT_FACTOR)
        pixels = processor.preprocess(source_crop, height=height, width=width).to(device=device, dtype=self.vae.dtype)
        source = self._encode_reference_latents(pixels).float().expand(num_images, -1, -1, -1)
        # A latent cell takes part in the edit when any of its pixels does (region or feather band).
        band = torch.from_numpy(np.asarray(alpha_crop.resize((width, height), Image.Resampling.NEAREST)) > 0)
        inside = torch.nn.functional.max_pool2d(band[None, None].float(), LATENT_FACTOR).to(device)

        run = self.prepare_denoising(encoding, request, generator)
        scheduler = run.scheduler
        timesteps = scheduler.timesteps[first_timestep_index(len(scheduler.timesteps) // getattr(scheduler, "order", 1),
                                                             strength, getattr(scheduler, "order", 1)):]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
        noise = randn_tensor(source.shape, generator=generator, device=device, dtype=torch.float32)
        if strength >= 1:
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(source, noise, timesteps[:1])

        def keep_source_outside(step_index: int, latents: torch.Tensor) -> torch.Tensor:
            if step_index + 1 < len(timesteps):
                kept = scheduler.add_noise(source, noise, timesteps[step_index + 1:step_index + 2])
            else:
                kept = source
            return inside * latents + (1 - inside) * kept

        return self.denoise(run, latents, timesteps, callback, ("latents",), after_step=keep_source_outside)

    @staticmethod
    def _paste(crop: np.ndarray, source: Image.Image, alpha: Image.Image, box) -> np.ndarray:
        """The decoded crop back in the source at full resolution, blended by the feathered alpha; where
        alpha is 0 the source's own pixel values are kept exactly."""
        x0, y0, x1, y1 = box
        generated = np.asarray(to_pil(crop[None])[0].resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS),
                               dtype=np.float32)
        result = np.asarray(source, dtype=np.float32).copy()
        weight = np.asarray(alpha.crop(box), dtype=np.float32)[..., None] / 255.0
        window = result[y0:y1, x0:x1]
        result[y0:y1, x0:x1] = np.where(weight > 0, window + (generated - window) * weight, window)
        return result / 255.0

    @staticmethod
    def _output(images: list[np.ndarray], output_type: str) -> Parts2WholePipelineOutput:
        if output_type == "np":
            return Parts2WholePipelineOutput(images=np.stack(images))
        return Parts2WholePipelineOutput(images=[Image.fromarray(np.round(image * 255).astype(np.uint8)) for image in images])
