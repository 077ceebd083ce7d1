"""Image metrics of the paper, each generated image compared with ITS OWN ground truth only.

(The official DINOv2 script takes, for every generated image, the best match among all ground truths
of its batch; that rewards matching the wrong person and depends on the batch size, so it is not
repeated here.)

- CLIP image similarity: cosine of CLIP ViT-B/32 image embeddings (the official script reports it
  times CLIP's logit scale, 100).
- DINOv2 similarity: cosine of the mean of DINOv2-base's last hidden states.
- LPIPS (AlexNet) and DreamSim distances: through their own packages (`pip install lpips dreamsim`).
- FID: Fréchet distance of Inception features (`pip install "torchmetrics[image]"` for the standard
  FID Inception weights); needs thousands of images to mean much.

Models load lazily from the Hub on first use; tests build tiny random ones in code.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

CLIP_MODEL_ID = "openai/clip-vit-base-patch32"
DINOV2_MODEL_ID = "facebook/dinov2-base"
#: Side of the square images LPIPS and the FID feature extractor compare.
DISTANCE_IMAGE_SIZE = 256


class PairedMetric(Protocol):
    name: str
    higher_is_better: bool

    def score_pairs(self, generated: Sequence[Image.Image], ground_truth: Sequence[Image.Image]) -> list[float]: ...


def _check_pairs(generated, ground_truth) -> None:
    if len(generated) != len(ground_truth):
        raise ValueError(f"{len(generated)} generated images but {len(ground_truth)} ground truths")


def _cosine_of_pairs(first: torch.Tensor, second: torch.Tensor) -> list[float]:
    return torch.nn.functional.cosine_similarity(first.float(), second.float(), dim=-1).tolist()


class ClipImageSimilarity:
    """Cosine similarity of CLIP image embeddings, pair by pair."""

    name, higher_is_better = "clip_image_similarity", True

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @classmethod
    def from_pretrained(cls, model_id: str = CLIP_MODEL_ID, device: str = "cpu") -> "ClipImageSimilarity":
        # transformers only when this metric is built: the others and `--help` stay light.
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        return cls(CLIPVisionModelWithProjection.from_pretrained(model_id), CLIPImageProcessor.from_pretrained(model_id), device)

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        return self.model(pixel_values=inputs.pixel_values.to(self.device)).image_embeds

    def score_pairs(self, generated, ground_truth) -> list[float]:
        _check_pairs(generated, ground_truth)
        return _cosine_of_pairs(self.embed(generated), self.embed(ground_truth))


class DinoV2Similarity:
    """Cosine similarity of DINOv2 features (mean over all output tokens), pair by pair."""

    name, higher_is_better = "dinov2_similarity", True

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.to(device).eval(), processor, device

    @classmethod
    def from_pretrained(cls, model_id: str = DINOV2_MODEL_ID, device: str = "cpu") -> "DinoV2Similarity":
        # transformers only when this metric is built: the others and `--help` stay light.
        from transformers import AutoImageProcessor, AutoModel

        return cls(AutoModel.from_pretrained(model_id), AutoImageProcessor.from_pretrained(model_id), device)

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        return self.model(pixel_values=inputs.pixel_values.to(self.device)).last_hidden_state.mean(dim=1)

    def score_pairs(self, generated, ground_truth) -> list[float]:
        _check_pairs(generated, ground_truth)
        return _cosine_of_pairs(self.embed(generated), self.embed(ground_truth))


def _to_tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1]."""
    arrays = [np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


class LpipsDistance:
    """LPIPS (AlexNet) between each generated image and its ground truth; lower is better."""

    name, higher_is_better = "lpips", False

    def __init__(self, network: torch.nn.Module, device: str = "cpu"):
        self.network, self.device = network.to(device).eval(), device

    @classmethod
    def from_pretrained(cls, device: str = "cpu") -> "LpipsDistance":
        try:  # lpips is an optional dependency
            import lpips
        except ImportError as error:
            raise ImportError("LPIPS needs the lpips package: pip install lpips") from error
        return cls(lpips.LPIPS(net="alex", verbose=False), device)

    @torch.no_grad()
    def score_pairs(self, generated, ground_truth) -> list[float]:
        _check_pairs(generated, ground_truth)
        first = _to_tensor(generated, DISTANCE_IMAGE_SIZE).to(self.device)
        second = _to_tensor(ground_truth, DISTANCE_IMAGE_SIZE).to(self.device)
        return self.network(first, second).flatten().tolist()


class DreamSimDistance:
    """DreamSim distance between each generated image and its ground truth; lower is better."""

    name, higher_is_better = "dreamsim", False

    def __init__(self, model, preprocess: Callable[[Image.Image], torch.Tensor], device: str = "cpu"):
        self.model, self.preprocess, self.device = model, preprocess, device

    @classmethod
    def from_pretrained(cls, device: str = "cpu") -> "DreamSimDistance":
        try:  # dreamsim is an optional dependency
            from dreamsim import dreamsim
        except ImportError as error:
            raise ImportError("DreamSim needs the dreamsim package: pip install dreamsim") from error
        model, preprocess = dreamsim(pretrained=True, device=device)
        return cls(model, preprocess, device)

    @torch.no_grad()
    def score_pairs(self, generated, ground_truth) -> list[float]:
        _check_pairs(generated, ground_truth)
        first = torch.cat([self.preprocess(image.convert("RGB")) for image in generated]).to(self.device)
        second = torch.cat([self.preprocess(image.convert("RGB")) for image in ground_truth]).to(self.device)
        return self.model(first, second).flatten().tolist()


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D):
    |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2), with symmetric square roots."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    mean_gap = first.mean(0) - second.mean(0)
    cov_first, cov_second = np.atleast_2d(np.cov(first, rowvar=False)), np.atleast_2d(np.cov(second, rowvar=False))

    def sqrt_psd(matrix):
        values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
        return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T

    root_first = sqrt_psd(cov_first)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_first @ cov_second @ root_first), 0, None)).sum()
    return float(mean_gap @ mean_gap + np.trace(cov_first) + np.trace(cov_second) - 2 * cross)


class FrechetInceptionDistance:
    """FID between the generated set and the ground-truth set (a set metric, not per pair)."""

    name, higher_is_better = "fid", False

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], device: str = "cpu"):
        #: uint8 images (N, 3, H, W) -> features (N, D)
        self.features, self.device = features, device

    @classmethod
    def from_pretrained(cls, device: str = "cpu") -> "FrechetInceptionDistance":
        try:  # torchmetrics is an optional dependency
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as error:
            raise ImportError('FID needs torchmetrics with the FID Inception weights: pip install "torchmetrics[image]"') from error
        network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).to(device).eval()
        return cls(network, device)

    @torch.no_grad()
    def _features(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = ((_to_tensor(images, DISTANCE_IMAGE_SIZE) + 1) * 127.5).round().to(torch.uint8)
        return torch.cat([self.features(chunk.to(self.device)).reshape(len(chunk), -1).cpu() for chunk in pixels.split(32)]).numpy()

    def score_sets(self, generated, ground_truth) -> float:
        return frechet_distance(self._features(generated), self._features(ground_truth))


PAIRED_METRICS = {
    "clip": ClipImageSimilarity.from_pretrained,
    "dinov2": DinoV2Similarity.from_pretrained,
    "lpips": LpipsDistance.from_pretrained,
    "dreamsim": DreamSimDistance.from_pretrained,
}
SET_METRICS = {"fid": FrechetInceptionDistance.from_pretrained}
