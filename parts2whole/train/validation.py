"""Periodic validation images: the current weights generate a few held-out samples through the real
pipeline (the same code path users run), saved as one strip per sample:
[pose map | references ... | generated | ground truth]."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from PIL import Image

from ..model.pipeline import Parts2WholePipeline
from .dataset import PartsToWholeDataset


def generate_sample(pipe: Parts2WholePipeline, dataset: PartsToWholeDataset, index: int, *, num_inference_steps: int,
                    guidance_scale: float, seed: int, fusion_blocks: str = "full") -> tuple[Image.Image, Image.Image, Image.Image]:
    """(generated, ground-truth target, pose map) of sample `index`, at the dataset's resolution."""
    references, masks = dataset.references(index)
    target, structure = dataset.target_and_structure(index)
    size = (dataset.width, dataset.height)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn((1, pipe.unet.config.in_channels, dataset.height // 8, dataset.width // 8), generator=generator)
    generated = pipe(references=references, masks=masks, structure=structure, prompt=dataset.samples[index].get("caption", ""),
                     height=dataset.height, width=dataset.width, num_inference_steps=num_inference_steps,
                     guidance_scale=guidance_scale, latents=latents, fusion_blocks=fusion_blocks).images[0]
    return generated, target.resize(size, Image.Resampling.BICUBIC), structure.resize(size, Image.Resampling.LANCZOS)


def strip(images: list[Image.Image], height: int) -> Image.Image:
    """Images side by side, each scaled to `height`."""
    scaled = [image.convert("RGB").resize((max(1, round(image.width * height / image.height)), height)) for image in images]
    canvas = Image.new("RGB", (sum(image.width for image in scaled), height), "white")
    left = 0
    for image in scaled:
        canvas.paste(image, (left, 0))
        left += image.width
    return canvas


def save_validation_images(pipe: Parts2WholePipeline, dataset: PartsToWholeDataset, folder: Path, step: int, *,
                           num_samples: int, num_inference_steps: int, guidance_scale: float, seed: int,
                           fusion_blocks: str = "full") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = (index for index in range(len(dataset)) if dataset.has_structure(index))  # never a blank map
    for index in itertools.islice(shown, num_samples):
        generated, target, structure = generate_sample(pipe, dataset, index, num_inference_steps=num_inference_steps,
                                                       guidance_scale=guidance_scale, seed=seed, fusion_blocks=fusion_blocks)
        references = list(dataset.references(index)[0].values())
        path = folder / f"step-{step:07d}-sample-{index}.png"
        strip([structure, *references, generated, target], dataset.height).save(path)
        paths.append(path)
    return paths
