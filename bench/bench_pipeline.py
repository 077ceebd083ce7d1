"""Benchmark the Parts2Whole pipeline against a re-enactment of the official schedule, side by side.

Builds SD1.5-size components with random weights in code (speed does not depend on weight values, and
nothing is downloaded): the denoising and reference UNets from the SD1.5 config of the golden fixtures
(`sd15_state_dict_shapes.json`), the SD1.5 VAE, a CLIP ViT-L/14 text encoder (hidden 768, 12 layers) and a
CLIP ViT-L/14-size image encoder (hidden 1024, 24 layers, 16 heads, 224 px, patch 14) whose projection
gives the 768-d image token the decoupled cross-attention reads, and the SD1.5-size pose guider.

For 1, 3 and 6 references (the golden input images and masks, so masked-token packing has tokens to
drop) it runs, in one process and one after the other:

- project  : `encode_references` once, then `__call__(reference_encoding=...)` (the fast path);
- cached   : the same call again with the cached encoding (a re-generation with a new seed);
- plain    : every masked-out reference token kept (`pack_masked_tokens=False`), no cache;
- official : the official schedule, re-enacted here from its description (see `OfficialSchedule`);
- no refs  : the same UNet step without any reference (a plain SD1.5 step with guidance).

It checks that project, plain and official give the same image (atol 1e-4) before trusting any timing,
prints time before the loop, per denoising step, decode, peak memory, and the ratios of the targets, and
extrapolates the whole call to 50 steps from the measured phases. Single steps of every mode are also
timed in interleaved rounds, and each figure is the fastest observation. On a CPU the default clock is the
process CPU time: on a machine shared with other jobs, wall time is stretched several-fold and unevenly
(a default run under a load of 7 on 2 cores gave ratios of pure noise), CPU time is not.

It also prints the floor: the project's time before the loop + 50 plain UNet steps (no references) + decode,
the least any schedule giving this output could spend here, and (re-enacted official whole@50) / floor.
`--full-size` measures at the size people generate at, 768x512 with 6 references, where the official
step takes minutes on a CPU: each phase once and one UNet step of each schedule (parity checked on that
step's noise prediction), extrapolated to 50 steps the same way.

    .venv/bin/python bench/bench_pipeline.py                      # CPU defaults, a few minutes on 2 cores
    .venv/bin/python bench/bench_pipeline.py --full-size          # 768x512, 6 references, one step each (long)
    .venv/bin/python bench/bench_pipeline.py --device cuda --dtype float16 --height 768 --width 512 \\
        --steps 50 --refs 6                                       # on a GPU (see docs/performance.md)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusers import AutoencoderKL, DDIMScheduler  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from diffusers.models.attention_processor import Attention  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection,
)
from transformers.utils import logging as transformers_logging  # noqa: E402

from parts2whole import Parts2WholePipeline, ReferenceEncoding  # noqa: E402
from parts2whole.model.allocator import tune_cpu_allocator  # noqa: E402
from parts2whole.model.attention import (  # noqa: E402
    NUM_IMAGE_TOKENS, DecoupledCrossAttnProcessor, ReferenceFeatures, ReferenceRecorder, ReferenceRecordingComplete, SharedAttention,
    SharedSelfAttnProcessor, self_attention_blocks,
)
from parts2whole.model.image_processing import clip_pixels, reference_pixels_and_mask  # noqa: E402
from parts2whole.model.loading import build_reference_unet, build_unet  # noqa: E402
from parts2whole.model.models import PoseGuider  # noqa: E402
from parts2whole.model.performance import LATENT_FACTOR, estimate_peak_gpu_memory, optimize_pipeline  # noqa: E402
from parts2whole.model.pipeline import REFERENCE_TIMESTEP  # noqa: E402
from parts2whole.model.tiny import CLIP_MEAN, CLIP_STD, SCHEDULER_CONFIG, build_tiny_checkpoint  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN_ROOT = REPO_ROOT.parent / "shared" / "golden"
SD15_SHAPES = GOLDEN_ROOT / "sd15_state_dict_shapes.json"
GOLDEN_INPUTS = GOLDEN_ROOT / "inputs"

#: The order of the golden case G2 (all six parts); 1 and 3 references take its first entries.
PART_FILES = {
    "face": ("face.png", "face_mask.png"),
    "hair or headwear": ("hair_or_headwear.png", "hair_or_headwear_mask.png"),
    "upper body clothes": ("upper_body_clothes.png", "upper_body_clothes_mask.png"),
    "lower body clothes": ("lower_body_clothes.png", None),  # RGBA: its alpha is the mask
    "whole body clothes": ("whole_body_clothes.png", "whole_body_clothes_mask.png"),
    "shoes": ("shoes.png", "shoes_mask.png"),
}
PROMPT = "a person wearing shoes"
GUIDANCE_SCALE = 3.5
#: The whole-call comparison is extrapolated to the official default number of steps.
EXTRAPOLATED_STEPS = 50
PARITY_ATOL = 1e-4

# Targets of issue 6, checked at the largest reference count measured (6 by default).
TARGET_STEP_RATIO = 1.3  # step with references / the same step without
TARGET_SPEEDUP = 4.0  # official whole call / project whole call
TARGET_CACHED_FRACTION = 0.05  # cached time before the loop / uncached

# SD1.5-size encoders (the real checkpoint's text encoder is CLIP ViT-L/14's; the image token is 768-d).
CLIP_TEXT_CONFIG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
CLIP_VISION_CONFIG = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
SD15_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                       layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
                       down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
#: Biases are drawn with this spread around 0 (norm weights around 1), so no path is trivially zero.
BIAS_SPREAD = 0.02
#: How often the CPU memory sampler reads the resident set size, and the unit /proc/self/statm counts in.
RSS_SAMPLE_SECONDS = 0.005
PAGE_BYTES = resource.getpagesize()
#: Single-step timings use a mid-schedule timestep (the cost does not depend on it).
STEP_TIMER_TIMESTEP = 501
#: The configuration the 8 GB memory target is stated for.
MEMORY_HEIGHT, MEMORY_WIDTH, MEMORY_REFERENCES = 768, 512, 6
#: `--full-size`: the size people generate at (the app's and the official script's default), all six parts.
FULL_SIZE_HEIGHT, FULL_SIZE_WIDTH, FULL_SIZE_REFERENCES = 768, 512, 6


# ----------------------------------------------------------------------------------------- components

def _fill_random(module: nn.Module, generator: torch.Generator, dtype: torch.dtype) -> None:
    """Give every parameter (possibly on the meta device) real random values, uniform(+-1/sqrt(fan_in)) for
    weights, as PyTorch's default init, but in one fast fill instead of a per-layer initialisation."""
    for name, param in list(module.named_parameters()):
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        values = torch.empty(param.shape, dtype=torch.float32)
        if param.ndim == 1:
            values.normal_(0.0, BIAS_SPREAD, generator=generator)
            if leaf == "weight":
                values += 1.0
        else:
            bound = 1.0 / math.sqrt(param[0].numel())
            values.uniform_(-bound, bound, generator=generator)
        owner._parameters[leaf] = nn.Parameter(values.to(dtype), requires_grad=False)


def _random_model(factory, generator: torch.Generator, dtype: torch.dtype) -> nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = factory()
    _fill_random(model, generator, dtype)
    return model.eval()


def build_sd15_pipeline(dtype: torch.dtype, device: str, seed: int = 0) -> Parts2WholePipeline:
    """A Parts2WholePipeline with SD1.5-size components and random weights (no download)."""
    config = json.loads(SD15_SHAPES.read_text())
    generator = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder:  # only for a tokenizer: any CLIP BPE gives 77 tokens
        tokenizer = CLIPTokenizer.from_pretrained(build_tiny_checkpoint(Path(folder) / "tiny") / "tokenizer")
    unet = _random_model(lambda: build_unet(config["unet_config"], decoupled=True, empty=False), generator, dtype)
    reference_unet = _random_model(lambda: build_reference_unet(config["unet_config"], empty=False), generator, dtype)
    pose_guider = _random_model(lambda: PoseGuider(**config["pose_guider_config"]), generator, dtype)
    vae = _random_model(lambda: AutoencoderKL(**SD15_VAE_CONFIG), generator, dtype)
    special_ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = _random_model(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_TEXT_CONFIG, **special_ids)), generator, dtype)
    image_encoder = _random_model(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VISION_CONFIG)), generator, dtype)
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_VISION_CONFIG["image_size"]}, resample=3, do_center_crop=True,
        crop_size={"height": CLIP_VISION_CONFIG["image_size"], "width": CLIP_VISION_CONFIG["image_size"]},
        image_mean=CLIP_MEAN, image_std=CLIP_STD)
    pipe = Parts2WholePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
                               feature_extractor=feature_extractor, unet=unet, reference_unet=reference_unet,
                               pose_guider=pose_guider, scheduler=DDIMScheduler(**SCHEDULER_CONFIG))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def parameter_counts(pipe: Parts2WholePipeline) -> dict[str, int]:
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items() if isinstance(module, nn.Module)}


# ----------------------------------------------------------------------------------------- inputs

def _synthetic_part(index: int) -> tuple[Image.Image, Image.Image]:
    """A coloured rectangle with an elliptical mask, when the golden inputs are not next to the checkout."""
    image = Image.new("RGB", (80, 112), (40 * index % 255, 90, 200 - 20 * index))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).ellipse((12, 16 + 4 * index, 68, 96), fill=255)
    return image, mask


def reference_inputs(count: int, height: int, width: int):
    """The first `count` golden parts with their masks (real-shaped partial masks), a structure map of the
    output's size, and where the masks came from."""
    references, masks = {}, {}
    golden = GOLDEN_INPUTS.is_dir()
    for index, (label, (image_file, mask_file)) in enumerate(list(PART_FILES.items())[:count]):
        if golden:
            references[label] = Image.open(GOLDEN_INPUTS / image_file)
            if mask_file:
                masks[label] = Image.open(GOLDEN_INPUTS / mask_file)
        else:
            references[label], masks[label] = _synthetic_part(index)
    structure = Image.open(GOLDEN_INPUTS / "densepose.png") if golden else Image.new("RGB", (96, 128), (30, 120, 200))
    return references, masks, structure.convert("RGB").resize((width, height)), \
        "golden input masks" if golden else "synthetic ellipse masks"


def kept_token_fraction(encoding: ReferenceEncoding) -> float:
    """Share of reference tokens with non-zero mask weight, over all blocks (what packing keeps)."""
    weights = encoding.features.token_weights.values()
    return sum(int((w > 0).sum()) for w in weights) / sum(w.numel() for w in weights)


# ----------------------------------------------------------------------------------------- official schedule

class OfficialSelfAttnProcessor:
    """The official shared self-attention, re-enacted from its description: queries AND keys over
    [target ; every reference token, masked-out ones as zero vectors] for the whole guidance batch, projected
    every step, the reference rows thrown away; then the unconditional half recomputed without references."""

    def __init__(self, block: str):
        self.block = block

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        batch, num_target, _ = hidden_states.shape
        bank = None
        if isinstance(reference_context, SharedAttention):
            bank = reference_context.references.features.get(self.block)
        if bank is None:
            return _plain_self_attention(attn, hidden_states)
        references = bank.to(hidden_states.dtype).flatten(0, 1).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([hidden_states, references], dim=1)
        shared = _plain_self_attention(attn, tokens)[:, :num_target]
        start = reference_context.reference_rows_start
        if start:
            shared = torch.cat([_plain_self_attention(attn, hidden_states[:start]), shared[start:]])
        return shared


def _plain_self_attention(attn: Attention, tokens: torch.Tensor) -> torch.Tensor:
    batch, length, _ = tokens.shape

    def heads(x):
        return x.view(batch, length, attn.heads, -1).transpose(1, 2)

    attended = F.scaled_dot_product_attention(heads(attn.to_q(tokens)), heads(attn.to_k(tokens)), heads(attn.to_v(tokens)))
    merged = attended.transpose(1, 2).reshape(batch, length, -1)
    return attn.to_out[1](attn.to_out[0](merged)) / attn.rescale_output_factor


class OfficialDecoupledCrossAttnProcessor(DecoupledCrossAttnProcessor):
    """The official decoupled cross-attention computes the image term for both guidance halves (the
    unconditional half's all-zero image tokens give exactly 0): the project's processor without its skip.
    It shares the project processor's image projections (and is one, so the pipeline still pads to 6 tokens)."""

    def __init__(self, processor: DecoupledCrossAttnProcessor):
        super().__init__(processor.to_k_dc.out_features, processor.to_k_dc.in_features, processor.image_scale)
        self.to_k_dc, self.to_v_dc = processor.to_k_dc, processor.to_v_dc

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference_context=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, reference_context=None)


@contextmanager
def official_schedule(pipe: Parts2WholePipeline):
    """Swap the denoising UNet's processors for the official schedule while the block runs."""
    project = pipe.unet.attn_processors
    official = {}
    for name, processor in project.items():
        if isinstance(processor, SharedSelfAttnProcessor):
            official[name] = OfficialSelfAttnProcessor(processor.block)
        elif isinstance(processor, DecoupledCrossAttnProcessor):
            official[name] = OfficialDecoupledCrossAttnProcessor(processor)
        else:
            official[name] = processor
    pipe.unet.set_attn_processor(official)
    try:
        yield
    finally:
        pipe.unet.set_attn_processor(project)


@torch.no_grad()
def official_encode_references(pipe: Parts2WholePipeline, references, masks, height: int, width: int) -> ReferenceEncoding:
    """The official reference encoding: per reference one VAE encode, one CLIP image encode, the label and
    negative texts, and one reference-UNet forward at batch 2 ([unconditional ; conditional]) whose
    unconditional half nothing reads. Features are the same as `encode_references`'s, at far more work."""
    device, dtype = pipe._execution_device, pipe.unet.dtype
    blocks = self_attention_blocks(pipe.reference_unet, "full")
    features: dict[str, list[torch.Tensor]] = {block: [] for block in blocks}
    token_weights: dict[str, list[torch.Tensor]] = {block: [] for block in blocks}
    image_tokens = []
    for label, image in references.items():
        pixels, mask = reference_pixels_and_mask(image, masks.get(label), height, width)
        latent = pipe.vae.encode(pixels.to(device=device, dtype=pipe.vae.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
        texts = pipe.encode_text(["", label]).to(dtype)
        recorder = ReferenceRecorder(blocks, torch.cat([mask, mask]).to(device))
        try:
            pipe.reference_unet(torch.cat([latent, latent]).to(dtype), REFERENCE_TIMESTEP, encoder_hidden_states=texts,
                                cross_attention_kwargs={"reference_context": recorder})
        except ReferenceRecordingComplete:
            pass
        for block in blocks:
            features[block].append(recorder.recorded.features[block][1:])  # the conditional row only
            token_weights[block].append(recorder.recorded.token_weights[block][1:])
        clip_input = clip_pixels(image, pipe.clip_settings).to(device=device, dtype=pipe.image_encoder.dtype)
        image_tokens.append(pipe.image_encoder(clip_input).image_embeds)
    bank = ReferenceFeatures({b: torch.cat(v) for b, v in features.items()}, {b: torch.cat(v) for b, v in token_weights.items()})
    return ReferenceEncoding(tuple(references), height, width, "full", bank, torch.cat(image_tokens).to(dtype))


# ----------------------------------------------------------------------------------------- measuring

class PeakMemory:
    """Peak memory over a block: GPU bytes allocated on CUDA, else the process's resident set size (sampled)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES

    def _sample(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_bytes = self.rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self.rss_bytes())


#: What the phases are timed with. "cpu" (process CPU seconds, all threads) is the default on a CPU: on a
#: shared machine, other load stretches wall time several-fold and unevenly, while the CPU time a
#: computation needs stays put. "wall" is what a user waits on an idle machine (and on a GPU).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock_name = "wall"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Stopwatch:
    """Time of a block on the chosen clock (and its wall time), with the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        _sync(self.device)
        self._start = CLOCKS[_clock_name]()
        self._wall_start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.seconds = CLOCKS[_clock_name]() - self._start
        self.wall_seconds = time.perf_counter() - self._wall_start  # kept beside the chosen clock (--full-size)


@dataclass
class CallRecord:
    """One generation call split into phases (seconds), its peak memory and its image."""

    encode: float  # reference encoding (0 for a cached encoding)
    setup: float  # the rest before the loop: prompt text, pose features, scheduler
    steps: list[float]  # wall time of each denoising step (UNet forward at guidance batch 2 + scheduler step)
    decode: float
    peak_bytes: int
    image: np.ndarray = field(repr=False)

    @property
    def before_loop(self) -> float:
        return self.encode + self.setup


def generation_call(pipe: Parts2WholePipeline, inputs: "Inputs", args, latents, encoder=None,
                    encoding: ReferenceEncoding | None = None) -> CallRecord:
    """Run one call with output_type="latent", then decode, timing each phase. The references are encoded
    by `encoder` before the call (timed), taken from `encoding` (cached), or, with neither, inside the call
    (the time before the first UNet forward)."""
    device = pipe._execution_device
    call = dict(structure=inputs.structure, prompt=PROMPT, height=args.height, width=args.width,
                num_inference_steps=args.steps, guidance_scale=GUIDANCE_SCALE, latents=latents, output_type="latent")
    step_starts, step_ends = [], []

    def on_unet_start(_module, _args):
        _sync(device)
        step_starts.append(CLOCKS[_clock_name]())

    def on_step_end(_pipe, _index, _timestep, tensors):
        _sync(device)
        step_ends.append(CLOCKS[_clock_name]())
        return tensors

    encode_seconds = 0.0
    with PeakMemory(device) as memory:
        if encoder is not None:
            with Stopwatch(device) as watch:
                encoding = encoder(pipe, inputs.references, inputs.masks, args.height, args.width)
            encode_seconds = watch.seconds
        if encoding is None:
            call.update(references=inputs.references, masks=inputs.masks)
        else:
            call.update(reference_encoding=encoding)
        handle = pipe.unet.register_forward_pre_hook(on_unet_start)
        try:
            start = CLOCKS[_clock_name]()
            latents_out = pipe(**call, callback_on_step_end=on_step_end).images
        finally:
            handle.remove()
        with Stopwatch(device) as decode:
            image = pipe.decode_latents(latents_out, output_type="np")
    before_first_step = step_starts[0] - start
    if encoding is None:  # encoded inside the call: count it as encoding, the rest is not separable
        encode_seconds, before_first_step = before_first_step, 0.0
    steps = [end - begin for begin, end in zip(step_starts, step_ends)]
    return CallRecord(encode_seconds, before_first_step, steps, decode.seconds, memory.peak_bytes, image)


@dataclass
class Inputs:
    references: dict[str, Image.Image]
    masks: dict[str, Image.Image]
    structure: Image.Image


class StepTimer:
    """Times single denoising-UNet forwards (guidance batch 2) of each schedule with the same inputs, so
    the modes can be measured in interleaved rounds (on a shared CPU, load changes minute to minute)."""

    def __init__(self, pipe: Parts2WholePipeline, project_encoding: ReferenceEncoding, official_encoding: ReferenceEncoding,
                 args):
        self.pipe = pipe
        self.device, dtype = pipe._execution_device, pipe.unet.dtype
        self.project_encoding, self.official_encoding = project_encoding, official_encoding
        text = pipe.encode_text(["", PROMPT]).to(dtype)
        tokens = torch.zeros(2, NUM_IMAGE_TOKENS, text.shape[-1], device=self.device, dtype=dtype)
        tokens[1, : project_encoding.image_tokens.shape[0]] = project_encoding.image_tokens
        self.context = torch.cat([text, tokens], dim=1)
        noise = torch.randn(1, 4, args.height // LATENT_FACTOR, args.width // LATENT_FACTOR, generator=torch.Generator().manual_seed(1))
        self.latents = noise.repeat(2, 1, 1, 1).to(self.device, dtype)
        self.project_context = self._shared(project_encoding, pack=True)
        self.plain_context = self._shared(project_encoding, pack=False)
        self.timestep = torch.tensor(STEP_TIMER_TIMESTEP, device=self.device)

    def _shared(self, encoding: ReferenceEncoding | None, pack: bool) -> SharedAttention:
        features = encoding.features.to(self.device) if encoding is not None else ReferenceFeatures({}, {})
        return SharedAttention(features, reference_rows_start=1, pack_masked_tokens=pack)

    @torch.no_grad()
    def _forward(self, context: SharedAttention) -> float:
        with Stopwatch(self.device) as watch:
            self.last_output = self.pipe.unet(self.latents, self.timestep, encoder_hidden_states=self.context,
                                              cross_attention_kwargs={"reference_context": context}).sample
        self.last_wall_seconds = watch.wall_seconds
        return watch.seconds

    @torch.no_grad()
    def projection(self) -> float:
        """The one-off work of a call's first step: projecting reference keys/values for every block."""
        context = self._shared(self.project_encoding, pack=True)
        with Stopwatch(self.device) as watch:
            for block in context.references.features:
                context.reference_keys_values(block, self.pipe.unet.get_submodule(block), self.pipe.unet.dtype)
        return watch.seconds

    def without_references(self) -> float:
        return self._forward(self._shared(None, pack=True))

    def project(self) -> float:
        return self._forward(self.project_context)

    def plain(self) -> float:
        return self._forward(self.plain_context)

    def official(self) -> float:
        with official_schedule(self.pipe):
            return self._forward(self._shared(self.official_encoding, pack=False))


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@dataclass
class ModeResult:
    """A mode's phases for the table: the fastest observation of each (the least disturbed by other load)."""

    before_loop: float
    step: float
    decode: float
    peak_bytes: int
    one_off: float = 0.0  # work of the first step only (reference K/V projection)

    def whole(self, num_steps: int) -> float:
        return self.before_loop + self.one_off + num_steps * self.step + self.decode


@dataclass
class CountResult:
    count: int
    kept_fraction: float
    modes: dict[str, ModeResult]
    step_without_references: float
    plain_vs_project: float
    official_vs_project: float

    def ratio(self, slow: str, fast: str, num_steps: int = EXTRAPOLATED_STEPS) -> float:
        return self.modes[slow].whole(num_steps) / self.modes[fast].whole(num_steps)


def measure_reference_count(pipe: Parts2WholePipeline, count: int, args, latents) -> CountResult:
    references, masks, structure, _ = reference_inputs(count, args.height, args.width)
    inputs = Inputs(references, masks, structure)
    device = pipe._execution_device
    encode_times = []
    for _ in range(args.rounds):
        with Stopwatch(device) as watch:
            encoding = pipe.encode_references(references, masks, args.height, args.width)
        encode_times.append(watch.seconds)
    cached = generation_call(pipe, inputs, args, latents, encoding=encoding)
    pipe.pack_masked_tokens = False
    try:
        plain = generation_call(pipe, inputs, args, latents)
    finally:
        pipe.pack_masked_tokens = True
    official_encoding = {}

    def official_encoder(*encoder_args):
        official_encoding["value"] = official_encode_references(*encoder_args)
        return official_encoding["value"]

    with official_schedule(pipe):
        official = generation_call(pipe, inputs, args, latents, encoder=official_encoder)

    timer = StepTimer(pipe, encoding, official_encoding["value"], args)
    rounds = {"no refs": [], "project": [], "plain": [], "official": []}
    for _ in range(args.rounds):  # the two modes of the step-ratio target twice per round, around the others
        for mode, measure in (("no refs", timer.without_references), ("project", timer.project), ("plain", timer.plain),
                              ("official", timer.official), ("project", timer.project), ("no refs", timer.without_references)):
            rounds[mode].append(measure())
    projection = min(timer.projection() for _ in range(args.rounds))
    # A call's first step also projects the reference keys/values (counted as `one_off`), so the cached
    # and plain calls contribute their later steps only.
    project_step = min(rounds["project"] + cached.steps[1:])
    setup = cached.setup
    decode = min(call.decode for call in (cached, plain, official))  # the same VAE work in every mode
    modes = {
        "official": ModeResult(official.encode + setup, min(rounds["official"] + official.steps), decode, official.peak_bytes),
        "plain": ModeResult(plain.encode, min(rounds["plain"] + plain.steps[1:]), decode, plain.peak_bytes, projection),
        "project": ModeResult(min(encode_times) + setup, project_step, decode, cached.peak_bytes, projection),
        "cached": ModeResult(setup, project_step, decode, cached.peak_bytes, projection),
    }
    return CountResult(count, kept_token_fraction(encoding), modes, min(rounds["no refs"]),
                       max_difference(plain.image, cached.image), max_difference(official.image, cached.image))


@dataclass
class StepClock:
    """One mode's single step on both clocks (the 768x512 run prints wall time beside the chosen clock)."""

    seconds: float
    wall_seconds: float


def measure_single_steps(pipe: Parts2WholePipeline, count: int, args, latents) -> tuple[CountResult, dict[str, StepClock]]:
    """The lean measurement of `--full-size`: each phase once (args.rounds times for the steps).

    Before the loop: the project's batched encode, the official encode, and the rest (text, pose features,
    scheduler) from one cached 1-step call, which also gives the decode. Then one UNet step of each schedule
    (guidance batch 2, the same inputs), the parity check on those steps' noise predictions instead of
    whole images (a whole official call at this size would take hours on a CPU), and the reference K/V
    projection of the first step. Extrapolated to EXTRAPOLATED_STEPS exactly like the default run.
    """
    references, masks, structure, _ = reference_inputs(count, args.height, args.width)
    inputs = Inputs(references, masks, structure)
    device = pipe._execution_device
    with Stopwatch(device) as watch:
        encoding = pipe.encode_references(references, masks, args.height, args.width)
    encode_seconds = watch.seconds
    print(f"    project encode: {encode_seconds:.1f} s", flush=True)
    with Stopwatch(device) as watch:
        official_encoding = official_encode_references(pipe, references, masks, args.height, args.width)
    official_encode_seconds = watch.seconds
    print(f"    official encode: {official_encode_seconds:.1f} s", flush=True)
    # Right before the single steps, so the allocator holds memory of a step's sizes when they are timed.
    cached = generation_call(pipe, inputs, args, latents, encoding=encoding)
    print(f"    cached 1-step call: setup {cached.setup:.2f} s, decode {cached.decode:.1f} s", flush=True)

    timer = StepTimer(pipe, encoding, official_encoding, args)
    steps: dict[str, list[float]] = {"no refs": [], "project": [], "plain": [], "official": []}
    walls: dict[str, list[float]] = {mode: [] for mode in steps}
    outputs, peaks = {}, {}
    for _ in range(args.rounds):
        for mode, measure in (("project", timer.project), ("no refs", timer.without_references),
                              ("plain", timer.plain), ("official", timer.official)):
            with PeakMemory(device) as memory:
                steps[mode].append(measure())
            walls[mode].append(timer.last_wall_seconds)
            outputs[mode] = timer.last_output.float().cpu().numpy()
            peaks[mode] = max(peaks.get(mode, 0), memory.peak_bytes)
            print(f"    {mode} step: {steps[mode][-1]:.1f} s ({_clock_name}), {walls[mode][-1]:.1f} s wall", flush=True)
    projection = min(timer.projection() for _ in range(args.rounds))
    setup, decode = cached.setup, cached.decode
    project_step = min(steps["project"])
    modes = {
        "official": ModeResult(official_encode_seconds + setup, min(steps["official"]), decode, peaks["official"]),
        "plain": ModeResult(encode_seconds + setup, min(steps["plain"]), decode, peaks["plain"], projection),
        "project": ModeResult(encode_seconds + setup, project_step, decode, cached.peak_bytes, projection),
        "cached": ModeResult(setup, project_step, decode, cached.peak_bytes, projection),
    }
    clocks = {mode: StepClock(min(steps[mode]), min(walls[mode])) for mode in steps}
    result = CountResult(count, kept_token_fraction(encoding), modes, min(steps["no refs"]),
                         max_difference(outputs["plain"], outputs["project"]),
                         max_difference(outputs["official"], outputs["project"]))
    return result, clocks


# ----------------------------------------------------------------------------------------- reporting

def _seconds(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


MODE_NOTES = {
    "official": "official schedule, re-enacted",
    "plain": "every reference token kept, no cache",
    "project": "fast path: one batched reference pass + packed tokens",
    "cached": "fast path, references cached (re-generation)",
}


def print_table(results: list[CountResult]) -> None:
    n = EXTRAPOLATED_STEPS
    columns = f"{'refs':>4}  {'mode':<8} {'before loop':>11} {'step':>7} {'decode':>7} {f'whole@{n}':>9} {'peak GiB':>8}"
    print(columns + f"   ({_clock_name} seconds; peak = GPU allocated on CUDA, process RSS on CPU)")
    print("-" * len(columns))
    for result in results:
        for name, mode in result.modes.items():
            print(f"{result.count:>4}  {name:<8} {_seconds(mode.before_loop):>11} {_seconds(mode.step):>7} "
                  f"{_seconds(mode.decode):>7} {mode.whole(n):9.1f} {mode.peak_bytes / 2**30:8.2f}   {MODE_NOTES[name]}")
        print(f"{result.count:>4}  {'no refs':<8} {'':>11} {_seconds(result.step_without_references):>7}"
              f"{'':>27}   the same UNet step without references")
    print()
    columns = (f"{'refs':>4} {'kept tokens':>11} {'step/no-refs':>12} {'official step/no-refs':>21} "
               f"{f'official/project@{n}':>20} {'cached/uncached':>15} {'|plain-fast|':>12} {'|official-fast|':>15}")
    print(columns)
    print("-" * len(columns))
    for r in results:
        project, official, cached = r.modes["project"], r.modes["official"], r.modes["cached"]
        print(f"{r.count:>4} {r.kept_fraction:11.0%} {project.step / r.step_without_references:11.2f}x "
              f"{official.step / r.step_without_references:20.2f}x {r.ratio('official', 'project'):19.2f}x "
              f"{cached.before_loop / project.before_loop:15.1%} {r.plain_vs_project:12.1e} {r.official_vs_project:15.1e}")


def check_targets(results: list[CountResult]) -> bool:
    """Print each target of issue 6 as met or missed; the ratio targets are read at the largest count."""
    largest = max(results, key=lambda r: r.count)
    step_ratio = largest.modes["project"].step / largest.step_without_references
    speedup = largest.ratio("official", "project")
    cached_fraction = largest.modes["cached"].before_loop / largest.modes["project"].before_loop
    plain_gap = max(r.plain_vs_project for r in results)
    official_gap = max(r.official_vs_project for r in results)
    checks = [
        (f"one step with {largest.count} references / the same step without <= {TARGET_STEP_RATIO}x",
         f"{step_ratio:.2f}x", step_ratio <= TARGET_STEP_RATIO),
        (f"whole call at {EXTRAPOLATED_STEPS} steps, official / project >= {TARGET_SPEEDUP}x ({largest.count} references)",
         f"{speedup:.2f}x", speedup >= TARGET_SPEEDUP),
        (f"re-generation: cached time before the loop <= {TARGET_CACHED_FRACTION:.0%} of uncached ({largest.count} references)",
         f"{cached_fraction:.1%}", cached_fraction <= TARGET_CACHED_FRACTION),
        (f"fast path vs plain path, max |difference| <= {PARITY_ATOL:g} (every count)", f"{plain_gap:.1e}", plain_gap <= PARITY_ATOL),
        (f"fast path vs official schedule, max |difference| <= {PARITY_ATOL:g} (every count)",
         f"{official_gap:.1e}", official_gap <= PARITY_ATOL),
    ]
    print("\nTargets:")
    for text, shown, met in checks:
        print(f"  [{'met' if met else 'MISSED'}] {text}: {shown}")
    return all(met for *_, met in checks)


def floor_whole(result: CountResult, num_steps: int = EXTRAPOLATED_STEPS) -> float:
    """The identical-output floor on this machine: the project's time before the loop (its references must
    be encoded), `num_steps` plain UNet steps (no reference can cost less than none) and the decode."""
    project = result.modes["project"]
    return project.before_loop + num_steps * result.step_without_references + project.decode


def print_floor(results: list[CountResult]) -> None:
    """(re-enacted official whole@N) / floor: the largest speed-up any schedule with this output could show
    here, next to what the project shows; their quotient is how close the project is to the floor."""
    n = EXTRAPOLATED_STEPS
    print(f"\nFloor: before loop (project) + {n} x no-refs step + decode ({_clock_name} seconds)")
    for r in results:
        floor = floor_whole(r, n)
        official, project = r.modes["official"].whole(n), r.modes["project"].whole(n)
        print(f"  {r.count} refs: floor {floor:.1f} s; official/floor {official / floor:.2f}x; official/project "
              f"{official / project:.2f}x; the project reaches {floor / project:.1%} of the floor's speed")


def print_step_clocks(clocks: dict[str, StepClock]) -> None:
    print(f"\nOne step on both clocks ({_clock_name} seconds / wall seconds; wall time is stretched by other load "
          "on a shared machine, and the quotient is the cores a step kept busy):")
    for mode, clock in clocks.items():
        print(f"  {mode:<8} {clock.seconds:8.1f} {clock.wall_seconds:8.1f}   {clock.seconds / clock.wall_seconds:4.2f} cores")


def print_memory_estimate(pipe: Parts2WholePipeline) -> None:
    print(f"\nEstimated peak GPU memory at {MEMORY_HEIGHT}x{MEMORY_WIDTH}, {MEMORY_REFERENCES} references, float16 "
          f"(from parameter counts and activation sizes; no GPU here):")
    for cpu_offload in (False, True):
        estimate = estimate_peak_gpu_memory(pipe, height=MEMORY_HEIGHT, width=MEMORY_WIDTH, num_references=MEMORY_REFERENCES,
                                            dtype=torch.float16, cpu_offload=cpu_offload)
        options = "model CPU offload" if cpu_offload else "default"
        print(f"  {options:<20} {estimate.total / 2**30:5.2f} GiB = {estimate.describe()}")


# ----------------------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps each timed call runs")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of the single-step timings")
    parser.add_argument("--refs", type=int, nargs="+", default=[1, 3, 6], help="reference counts (1 to 6)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default=None,
                        help="cpu = process CPU seconds (default on CPU: robust to other load), wall = elapsed seconds "
                             "(default on GPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU (0 = torch's default)")
    parser.add_argument("--vae-slicing", action="store_true", help="decode several images one at a time in the VAE")
    parser.add_argument("--cpu-offload", action="store_true", help="model CPU offload (GPU only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoising UNet")
    parser.add_argument("--full-size", action="store_true",
                        help=f"the default output size: {FULL_SIZE_HEIGHT}x{FULL_SIZE_WIDTH}, {FULL_SIZE_REFERENCES} "
                             "references, one UNet step of each schedule and each phase once, extrapolated to "
                             f"{EXTRAPOLATED_STEPS} steps (long on a CPU: the official step alone takes minutes)")
    args = parser.parse_args(argv)
    if args.full_size:
        given = set(argv if argv is not None else sys.argv[1:])
        args.height, args.width, args.refs, args.steps = FULL_SIZE_HEIGHT, FULL_SIZE_WIDTH, [FULL_SIZE_REFERENCES], 1
        if "--rounds" not in given:
            args.rounds = 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    global _clock_name
    _clock_name = args.clock or ("cpu" if args.device == "cpu" else "wall")
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    dtype = getattr(torch, args.dtype)
    allocator = ("tuned (parts2whole.model.allocator; P2W_KEEP_MALLOC_DEFAULTS=1 to compare)" if tune_cpu_allocator()
                 else "the C library's defaults")
    build_start = time.perf_counter()
    pipe = build_sd15_pipeline(dtype, "cpu" if args.cpu_offload else args.device)
    optimize_pipeline(pipe, vae_slicing=args.vae_slicing, cpu_offload=args.cpu_offload, compile=args.compile,
                      offload_device=args.device)
    *_, mask_source = reference_inputs(1, args.height, args.width)
    print(f"Parts2Whole pipeline benchmark: {args.height}x{args.width}, guidance {GUIDANCE_SCALE}, {args.dtype}, "
          f"{args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {mask_source}")
    print(f"CPU allocator: {allocator}; the official re-enactment runs in this process with the same setting.")
    print(f"Clock: {_clock_name} ({'process CPU seconds, all threads' if _clock_name == 'cpu' else 'elapsed seconds'}). "
          f"Calls run {args.steps} steps; single steps timed in {args.rounds} interleaved rounds; each figure is the "
          f"fastest observation; 'whole@{EXTRAPOLATED_STEPS}' = before loop + first-step K/V projection + "
          f"{EXTRAPOLATED_STEPS} x step + decode.")
    print("SD1.5-size components, random weights (M parameters): "
          + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in parameter_counts(pipe).items())
          + f"; built in {time.perf_counter() - build_start:.0f} s")
    latents = torch.randn(1, 4, args.height // LATENT_FACTOR, args.width // LATENT_FACTOR, generator=torch.Generator().manual_seed(0))
    warm_up = reference_inputs(1, args.height, args.width)
    pipe(references=warm_up[0], masks=warm_up[1], structure=warm_up[2], height=args.height, width=args.width,
         num_inference_steps=1, latents=latents, output_type="latent")
    results, clocks = [], None
    for count in args.refs:
        started = time.perf_counter()
        if args.full_size:
            result, clocks = measure_single_steps(pipe, count, args, latents)
            results.append(result)
        else:
            results.append(measure_reference_count(pipe, count, args, latents))
        print(f"  measured {count} reference(s) in {time.perf_counter() - started:.0f} s", flush=True)
    print()
    print_table(results)
    if args.full_size:
        print("(--full-size: |plain-fast| and |official-fast| compare one step's noise prediction, not whole images)")
    print_floor(results)
    if clocks:
        print_step_clocks(clocks)
    met = check_targets(results)
    print_memory_estimate(pipe)
    print(f"Process peak RSS over the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
