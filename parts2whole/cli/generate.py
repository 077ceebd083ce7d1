"""`python -m parts2whole generate`: portraits from part images and a pose map (or a photo to make it from).

The options become `studio.inputs.GenerationInputs`; `load_request` reads the files and validates the
request once, before the model loads; the same `Studio` as the web app generates; out.png (out_0.png, ...)
and out.json (every parameter, the input files) are written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import studio
from ..core.dataset_layout import WHOLE_OUTFIT_HINT, WHOLE_OUTFIT_LABEL
from ..core.errors import Parts2WholeInputError
from ..core.labels import PART_LABELS, UI_SLOT_NAMES
from ..studio.inputs import (SETTING_NAMES, GenerationInputs, load_request, output_parameters, output_paths,
                             with_pose_map)
from ..studio.preprocessing import PreprocessingService
from .common import EXIT_OK, cannot_write, check_writable_folder

DEFAULT_OUTPUT = "outputs/parts2whole.png"
OUTPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def option_name(label: str) -> str:
    """"upper body clothes" -> "upper-body-clothes" (the CLI option for that part)."""
    return label.replace(" ", "-")


#: Shorter spellings accepted next to the full option names: the aliases `canonical_label` takes (hair, top,
#: bottom, dress), so `--change top` and `--top shirt.png` name the same part.
OPTION_ALIASES = {"hair or headwear": ["--hair"], "upper body clothes": ["--top"], "lower body clothes": ["--bottom"],
                  "whole body clothes": ["--dress"]}

DESCRIPTION = """\
Generate a full-body portrait of a person from reference images of their parts.

Give at least one part (face, hair or headwear, upper-body clothes, lower-body clothes, whole-body
clothes, shoes) and a pose map (--pose): a DensePose rendering of the body, as the released model
expects, or a photo of someone in the pose to make it from (--pose-photo). Each part may come with a mask (white = use this area); without one, the image's transparency
is the mask, and an opaque image is used whole. Whole-body clothes (--dress for short) is the whole outfit
in one picture, as the model learned it: top and bottom together, or a dress or jumpsuit.
"""

EPILOG = """\
examples:
  %(prog)s --face face.png --upper-body-clothes shirt.png --pose pose.png \\
      --prompt "a woman in a red shirt" -o out.png
  %(prog)s --face face.jpg --mask-face face_mask.png --whole-body-clothes dress.jpg \\
      --pose densepose.png --seed 7 --steps 30 --num-images 2 -o results/dress.png
  %(prog)s --face face.png --pose-photo someone.jpg -o out.png   # writes out_pose.png too

Writes out.png (or out_0.png, out_1.png, ... for several images) and out.json with every parameter,
so a result can be reproduced. Weights: the official huanngzh/Parts2Whole from the Hugging Face Hub
(downloaded once); without a connection, a tiny random model (noise, for trying things out).
"""


# ----------------------------------------------------------------------------------------------- options


def add_parser(commands) -> argparse.ArgumentParser:
    """The `generate` subcommand, added to the CLI's subparsers."""
    parser = commands.add_parser(
        "generate", help="generate portrait(s) from part images and a pose map",
        usage="%(prog)s --PART IMAGE [--PART IMAGE ...] (--pose IMAGE | --pose-photo PHOTO) [--prompt TEXT] "
              "[-o OUT.png] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_part_options(parser)
    _add_pose_options(parser)
    _add_settings(parser)
    _add_output_options(parser)
    parser.set_defaults(handler=run)
    return parser


def _add_part_options(parser: argparse.ArgumentParser) -> None:
    parts = parser.add_argument_group("reference parts (at least one)")
    for label in PART_LABELS:
        parts.add_argument(f"--{option_name(label)}", *OPTION_ALIASES.get(label, []), dest=f"part_{label}",
                           metavar="IMAGE", help=f"{UI_SLOT_NAMES[label]} reference image"
                           + (f". {WHOLE_OUTFIT_HINT}" if label == WHOLE_OUTFIT_LABEL else ""))
    masks = parser.add_argument_group("masks (optional; white = use, black = ignore)")
    for label in PART_LABELS:
        masks.add_argument(f"--mask-{option_name(label)}", dest=f"mask_{label}", metavar="MASK",
                           help=f"mask for the {UI_SLOT_NAMES[label].lower()} image")


def _add_pose_options(parser: argparse.ArgumentParser) -> None:
    structure = parser.add_argument_group("pose (required: one of --pose, --pose-photo)")
    pose_source = structure.add_mutually_exclusive_group(required=True)
    pose_source.add_argument("--pose", "--structure", dest="pose", metavar="IMAGE",
                             help="pose map: a DensePose image of the body, coloured parts on black")
    pose_source.add_argument("--pose-photo", dest="pose_photo", metavar="PHOTO",
                             help="a photo of someone in the pose: the pose map is made from it, of the kind the "
                                  "model reads (DensePose; OpenPose-style for a checkpoint fine-tuned on those), "
                                  "fitted to the output size and written next to the output as OUT_pose.png")
    structure.add_argument("--densepose-weights", metavar="FILE", default=None,
                           help="with --pose-photo: a local DensePose checkpoint (detectron2 model-zoo .pkl, "
                                "densepose_rcnn_R_50_FPN_s1x) instead of the pinned Hub download")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    settings = parser.add_argument_group("settings")
    settings.add_argument("--prompt", default="", help='text describing the person, e.g. "a man in a red shirt"')
    settings.add_argument("--negative-prompt", default="", help="what to avoid, e.g. \"blurry, low quality\"")
    settings.add_argument("--seed", type=int, default=None, help="random seed (same seed + inputs = same image); "
                          "default: a random one, written to the JSON")
    settings.add_argument("--steps", type=int, default=studio.DEFAULT_STEPS,
                          help=f"denoising steps: more is slower, often finer (default {studio.DEFAULT_STEPS})")
    settings.add_argument("--guidance", type=float, default=studio.DEFAULT_GUIDANCE,
                          help=f"how strongly to follow the prompt (default {studio.DEFAULT_GUIDANCE})")
    settings.add_argument("--height", type=int, default=studio.DEFAULT_HEIGHT,
                          help=f"output height in pixels, a multiple of 8 (default {studio.DEFAULT_HEIGHT})")
    settings.add_argument("--width", type=int, default=studio.DEFAULT_WIDTH,
                          help=f"output width in pixels, a multiple of 8 (default {studio.DEFAULT_WIDTH})")
    settings.add_argument("--num-images", type=int, default=1, help="how many images to generate (default 1)")
    settings.add_argument("--fusion-blocks", choices=studio.FUSION_BLOCK_CHOICES, default=studio.DEFAULT_FUSION_BLOCKS,
                          help="UNet blocks that see the references: full (default, closest to the parts) or midup")
    settings.add_argument("--scheduler", default=studio.DEFAULT_SCHEDULER, metavar="NAME",
                          help=f"sampler: {', '.join(studio.SCHEDULER_NAMES)} (default {studio.DEFAULT_SCHEDULER}, the "
                               "official one; dpmpp_2m with --steps 20 is a fast choice)")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    output = parser.add_argument_group("output and model")
    output.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"where to write the image (PNG/JPEG/WebP by suffix; default {DEFAULT_OUTPUT})")
    output.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights)")
    output.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    output.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    output.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")


def inputs_from_args(args: argparse.Namespace) -> GenerationInputs:
    """The `generate` options as GenerationInputs (the option combinations that make no sense refused here)."""
    for label in PART_LABELS:
        if getattr(args, f"mask_{label}") and not getattr(args, f"part_{label}"):
            raise Parts2WholeInputError(f"--mask-{option_name(label)} was given without --{option_name(label)}.")
    if args.densepose_weights and not args.pose_photo:
        raise Parts2WholeInputError("--densepose-weights is for --pose-photo (a pose map made from a photo).")
    parts = {label: getattr(args, f"part_{label}") for label in PART_LABELS if getattr(args, f"part_{label}")}
    masks = {label: getattr(args, f"mask_{label}") for label in PART_LABELS if getattr(args, f"mask_{label}")}
    settings = {name: getattr(args, name) for name in SETTING_NAMES}
    return GenerationInputs(parts=parts, masks=masks, pose=args.pose, pose_photo=args.pose_photo, **settings)


# ----------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Check the options and files, generate, write the images, the pose map (--pose-photo) and the JSON."""
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise Parts2WholeInputError(f"-o {output}: use a .png, .jpg or .webp file name.")
    check_writable_folder(output)  # before the long model load, not after
    inputs = inputs_from_args(args)
    request = load_request(inputs)  # validated once, before the long model load; nothing checks it again
    generator = studio.Studio(args.weights, device=args.device, dtype=args.dtype)
    made_pose = None
    if inputs.pose_photo:
        made_pose = _pose_from_photo(generator, request, args)
        request = with_pose_map(request, made_pose.pose_map)
    if not args.quiet:
        print(f"Model: {generator.weights.name} on {generator.device_choice.device} "
              f"({generator.device_choice.dtype_name})", file=sys.stderr)
        if generator.is_tiny:
            print("Note: the tiny random model draws noise, not portraits.", file=sys.stderr)
    result = generator.generate(request, progress=_progress_printer(args.quiet))
    for path in _write_outputs(output, result, inputs, made_pose):
        print(path)
    return EXIT_OK


def _write_outputs(output: Path, result, inputs: GenerationInputs, made_pose) -> list[Path]:
    """Write the images, the pose map made from the photo (if any) and the JSON; the paths written."""
    paths = output_paths(output, len(result.images))
    parameters = output_parameters(result, paths, inputs)
    json_path = output.with_suffix(".json")
    pose_path = output.with_name(f"{output.stem}_pose.png")
    if made_pose is not None:
        parameters["pose_map"] = made_pose.details | {"file": pose_path.name, "photo": str(inputs.pose_photo),
                                                      "note": made_pose.note}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for image, path in zip(result.images, paths):
            image.save(path)
        if made_pose is not None:
            made_pose.pose_map.save(pose_path)
            paths.append(pose_path)
        json_path.write_text(studio.parameters_json(parameters))
    except OSError as error:
        raise cannot_write(output, error) from None
    return [*paths, json_path]


def _progress_printer(quiet: bool):
    if quiet:
        return None
    last = {"text": None}

    def show(update) -> None:
        if update.text != last["text"]:
            last["text"] = update.text
            print(f"[{update.fraction:4.0%}] {update.text}", file=sys.stderr, flush=True)

    return show


def _pose_from_photo(generator: studio.Studio, request: studio.GenerationRequest, args: argparse.Namespace):
    """`--pose-photo`: the kind of map this studio's model reads, at the output size (the app's rule).

    The request's structure is still the photo (see `studio.inputs.load_request`).
    """
    service = PreprocessingService(generator, densepose_weights=args.densepose_weights)
    made = service.pose_from_photo(request.structure, (request.height, request.width))
    if not args.quiet:
        print(f"Pose map: {made.details['tool']} from {args.pose_photo} ({made.kind}"
              + (f", {made.note}" if made.note else "") + ")", file=sys.stderr)
        fallback = service.fallback_note(made.details["tool"])
        if fallback:
            print(f"Note: {fallback}", file=sys.stderr)
    return made
