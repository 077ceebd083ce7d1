"""The speed/memory options of `parts2whole.model.performance` keep the output, and the benchmark's re-enactment
of the official schedule computes the golden function (so its timings compare like with like)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import case_kwargs, load_case
from parts2whole import Parts2WholePipeline
from parts2whole.model.attention import SharedSelfAttnProcessor
from parts2whole.model.loading import build_reference_unet, build_unet
from parts2whole.model.performance import COMPILED_REGIONS, estimate_peak_gpu_memory, is_compiled, optimize_pipeline

PARITY_ATOL = 1e-4
#: bfloat16 keeps 8 mantissa bits: on the tiny random model the image moves by ~1e-3 on average and a few
#: 1e-2 at worst, while every output value lies in [0, 1].
HALF_PRECISION_MEAN_ATOL = 1e-2
HALF_PRECISION_MAX_ATOL = 0.15
GIB = 2**30


@pytest.fixture
def fresh_pipe(tiny_checkpoint):
    """A pipeline of its own: options change the pipeline in place, so never the shared `tiny_pipe`."""
    pipe = Parts2WholePipeline.from_pretrained(tiny_checkpoint)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def two_parts():
    face = Image.new("RGB", (40, 48), (220, 170, 140))
    top = Image.new("RGBA", (50, 60), (30, 60, 200, 255))
    mask = Image.new("L", (50, 60), 0)
    mask.paste(255, (10, 10, 40, 50))
    return {"face": face, "upper body clothes": top}, {"upper body clothes": mask}


def generate(pipe, parts, height=96, width=64, **overrides):
    """One guided step is enough: every option acts on the reference encoding, the UNet or the VAE."""
    references, masks = parts
    kwargs = dict(references=references, masks=masks, structure=Image.new("RGB", (width, height), (10, 200, 30)),
                  prompt="a person", height=height, width=width, num_inference_steps=1, output_type="np",
                  latents=np.full((1, 4, height // 8, width // 8), 0.1, np.float32))
    return pipe(**(kwargs | overrides)).images


@pytest.fixture(scope="module")
def baseline(tiny_pipe, two_parts):
    return generate(tiny_pipe, two_parts)


def test_vae_slicing_keeps_the_output(fresh_pipe, tiny_pipe, two_parts):
    """Two images per prompt make a decoding batch of 2, which slicing decodes one at a time."""
    two_images = dict(num_images_per_prompt=2, latents=np.linspace(-1, 1, 2 * 4 * 12 * 8, dtype=np.float32).reshape(2, 4, 12, 8))
    baseline = generate(tiny_pipe, two_parts, **two_images)
    optimize_pipeline(fresh_pipe, vae_slicing=True)
    assert fresh_pipe.vae.use_slicing
    np.testing.assert_allclose(generate(fresh_pipe, two_parts, **two_images), baseline, atol=PARITY_ATOL, rtol=0)


def test_references_are_encoded_one_at_a_time_with_the_batched_result(tiny_pipe, two_parts):
    """One VAE encode per reference (lower peak memory, fewer CPU page faults) gives the latents of one batch."""
    from parts2whole.model.image_processing import reference_pixels_and_mask

    references, masks = two_parts
    batch_sizes = []
    hook = tiny_pipe.vae.encoder.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
    try:
        tiny_pipe.encode_references(references, masks, 96, 64)
    finally:
        hook.remove()
    assert batch_sizes == [1, 1]
    pixels = torch.cat([reference_pixels_and_mask(references[label], masks.get(label), 96, 64)[0] for label in references])
    with torch.no_grad():
        batched = tiny_pipe.vae.encode(pixels).latent_dist.mean * tiny_pipe.vae.config.scaling_factor
        single = torch.cat([tiny_pipe._encode_reference_latents(row[None]) for row in pixels])
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=0)


def test_vae_tiling_is_exact_up_to_the_tile_size(fresh_pipe, tiny_pipe, two_parts):
    """Tiling only acts above the VAE's tile size (tiny: 64 px, SD1.5: 512 px); up to it the output is the
    same. Above it the blended seams change the image, which is why the option is off by default."""
    tile = fresh_pipe.vae.config.sample_size
    baseline = generate(tiny_pipe, two_parts, height=tile, width=tile)
    optimize_pipeline(fresh_pipe, vae_tiling=True)
    assert fresh_pipe.vae.use_tiling
    np.testing.assert_allclose(generate(fresh_pipe, two_parts, height=tile, width=tile), baseline, atol=PARITY_ATOL, rtol=0)
    above = generate(fresh_pipe, two_parts, height=tile + 32, width=tile)
    assert above.shape == (1, tile + 32, tile, 3) and np.isfinite(above).all()


def test_model_cpu_offload_keeps_the_output(fresh_pipe, baseline, two_parts):
    """Offload to the CPU itself (no GPU here) runs every accelerate hook and device decision of the option."""
    optimize_pipeline(fresh_pipe, cpu_offload=True, offload_device="cpu")
    assert hasattr(fresh_pipe.unet, "_hf_hook") and hasattr(fresh_pipe.reference_unet, "_hf_hook")
    np.testing.assert_allclose(generate(fresh_pipe, two_parts), baseline, atol=PARITY_ATOL, rtol=0)


def test_half_precision_runs_close_to_float32(fresh_pipe, baseline, two_parts):
    """bfloat16 stands in for float16 on this CPU: every model, processor and bank path runs in half precision."""
    optimize_pipeline(fresh_pipe, dtype=torch.bfloat16)
    dtypes = {p.dtype for name in ("unet", "reference_unet", "vae", "text_encoder", "image_encoder", "pose_guider")
              for p in getattr(fresh_pipe, name).parameters()}
    assert dtypes == {torch.bfloat16}  # includes the decoupled processors' projections
    image = generate(fresh_pipe, two_parts)
    assert np.isfinite(image).all()
    difference = np.abs(image - baseline)
    assert 0 < difference.mean() <= HALF_PRECISION_MEAN_ATOL and difference.max() <= HALF_PRECISION_MAX_ATOL


def test_compile_is_wired_without_touching_the_attention_processors(fresh_pipe):
    """Compiling on this CPU takes minutes, so only the wiring is checked: the UNet's resnets and
    feed-forwards are compiled in place, while the Parts2Whole processors (per-call Python state) stay eager."""
    processors = fresh_pipe.unet.attn_processors
    optimize_pipeline(fresh_pipe, compile=True)
    compiled = [module for module in fresh_pipe.unet.modules() if is_compiled(module)]
    regions = [module for module in fresh_pipe.unet.modules() if isinstance(module, COMPILED_REGIONS)]
    assert len(compiled) == len(regions) > 0 and all(isinstance(module, COMPILED_REGIONS) for module in compiled)
    assert fresh_pipe.unet.attn_processors == processors
    assert not is_compiled(fresh_pipe.reference_unet)


def test_default_options_change_nothing(fresh_pipe):
    optimize_pipeline(fresh_pipe)
    assert not fresh_pipe.vae.use_slicing and not fresh_pipe.vae.use_tiling
    assert not any(is_compiled(module) for module in fresh_pipe.unet.modules())
    assert not hasattr(fresh_pipe.unet, "_hf_hook")
    assert fresh_pipe.unet.dtype == torch.float32


# --- memory estimate --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd15_components(golden_root):
    """SD1.5-size models on the meta device (parameter counts without memory), duck-typed as a pipeline."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from parts2whole.model.models import PoseGuider

    config = json.loads((golden_root / "sd15_state_dict_shapes.json").read_text())
    unet = build_unet(config["unet_config"], decoupled=True)
    with init_empty_weights():
        components = dict(
            unet=unet, reference_unet=build_reference_unet(config["unet_config"]),
            pose_guider=PoseGuider(**config["pose_guider_config"]),
            vae=AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
            text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, projection_dim=768)),
            image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
                patch_size=14, projection_dim=768)))
    return SimpleNamespace(components=components, unet=unet)


def test_memory_estimate_counts_every_weight(sd15_components):
    estimate = estimate_peak_gpu_memory(sd15_components, height=768, width=512, num_references=6, dtype=torch.float16)
    parameters = sum(p.numel() for m in sd15_components.components.values() for p in m.parameters())
    assert estimate.weights == 2 * parameters
    assert 2.2e9 < parameters < 2.4e9  # two SD1.5 UNets, VAE, CLIP-L text and ViT-L vision


def test_sd15_at_768x512_with_6_references_fits_8_gb_in_float16(sd15_components):
    """The issue's memory target, by estimate: fp16 fits with no option; offload leaves ample room."""
    def total(**options):
        return estimate_peak_gpu_memory(sd15_components, height=768, width=512, num_references=6,
                                        dtype=torch.float16, **options).total

    assert total() <= 8 * GIB
    assert total(cpu_offload=True) < total() - 2 * GIB
    assert total() < estimate_peak_gpu_memory(sd15_components, height=768, width=512, num_references=6,
                                              dtype=torch.float32).total


# --- the benchmark's official-schedule baseline ------------------------------------------------------------

def test_official_schedule_reenactment_reproduces_the_golden_output(golden_pipe, golden_root):
    """The benchmark times its official-schedule baseline only because it computes the same function:
    the official encoding (per reference, batch 2) and processors reproduce golden case G2 (six parts)."""
    from bench.bench_pipeline import official_encode_references, official_schedule

    loaded = load_case(golden_root, "G2")
    kwargs = case_kwargs(loaded) | dict(output_type="np")
    encoding = official_encode_references(golden_pipe, loaded["references"], loaded["masks"], kwargs["height"], kwargs["width"])
    kwargs.pop("references"), kwargs.pop("masks")
    with official_schedule(golden_pipe):
        assert not any(isinstance(p, SharedSelfAttnProcessor) for p in golden_pipe.unet.attn_processors.values())
        image = golden_pipe(**kwargs, reference_encoding=encoding).images
    assert any(isinstance(p, SharedSelfAttnProcessor) for p in golden_pipe.unet.attn_processors.values())
    np.testing.assert_allclose(image, np.load(golden_root / "G2" / "expected.npy"), atol=PARITY_ATOL, rtol=0)
