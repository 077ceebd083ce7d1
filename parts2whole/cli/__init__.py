"""Command line: `python -m parts2whole generate --face F.png --pose P.png --prompt "..." -o out.png`,
and `python -m parts2whole pose PHOTO -o MAP.png` (a DensePose or OpenPose-style map made from a photo).

It drives the same `Studio` as the web app, so the defaults, checks and parameters JSON are the same.
Input a person can fix ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from ..core.errors import CheckpointError, Parts2WholeInputError
from ..core.labels import PART_LABELS, UI_SLOT_NAMES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: Set to 1 to get the full traceback of an unexpected failure (by default: one line).
DEBUG_ENV = "P2W_DEBUG"
DEFAULT_OUTPUT = "outputs/parts2whole.png"
PROG = "python -m parts2whole"


def option_name(label: str) -> str:
    """"upper body clothes" -> "upper-body-clothes" (the CLI option for that part)."""
    return label.replace(" ", "-")


#: Shorter spellings accepted next to the full option names.
OPTION_ALIASES = {"hair or headwear": ["--hair"], "whole body clothes": ["--dress"]}

DESCRIPTION = """\
Generate a full-body portrait of a person from reference images of their parts.

Give at least one part (face, hair or headwear, upper-body clothes, lower-body clothes, whole-body
clothes, shoes) and a pose map (--pose): a DensePose rendering of the body, as the released model
expects, or a photo of someone in the pose to make it from (--pose-photo). Each part may come with a mask (white = use this area); without one, the image's transparency
is the mask, and an opaque image is used whole.
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


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a single line on stderr (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import studio

    parser = _OneLineErrorParser(
        prog=PROG, description="Parts2Whole: full-body portraits from reference images of a person's parts.",
        epilog=f"Start with: {PROG} generate --help   (the web app: python app.py)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineErrorParser)
    generate = commands.add_parser(
        "generate", help="generate portrait(s) from part images and a pose map",
        usage="%(prog)s --PART IMAGE [--PART IMAGE ...] (--pose IMAGE | --pose-photo PHOTO) [--prompt TEXT] "
              "[-o OUT.png] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

    parts = generate.add_argument_group("reference parts (at least one)")
    for label in PART_LABELS:
        parts.add_argument(f"--{option_name(label)}", *OPTION_ALIASES.get(label, []), dest=f"part_{label}",
                           metavar="IMAGE", help=f"{UI_SLOT_NAMES[label]} reference image")
    masks = generate.add_argument_group("masks (optional; white = use, black = ignore)")
    for label in PART_LABELS:
        masks.add_argument(f"--mask-{option_name(label)}", dest=f"mask_{label}", metavar="MASK",
                           help=f"mask for the {UI_SLOT_NAMES[label].lower()} image")
    structure = generate.add_argument_group("pose (required: one of --pose, --pose-photo)")
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

    settings = generate.add_argument_group("settings")
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

    output = generate.add_argument_group("output and model")
    output.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"where to write the image (PNG/JPEG/WebP by suffix; default {DEFAULT_OUTPUT})")
    output.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights)")
    output.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    output.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    output.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")
    add_pose_command(commands)
    add_examples_commands(commands)

    from .. import batch

    batch.add_parser(commands)
    return parser


POSE_DESCRIPTION = """\
Make a pose map from a photo of one person, for --pose of `generate` (or the app's Pose slot).

--kind densepose (default; what the released model was trained on): the DensePose R50-FPN model
(detectron2's densepose_rcnn_R_50_FPN_s1x, in plain PyTorch) draws the most confident person as an
IUV map in the training data's encoding (blue = body part, green = U, red = V, black background).
--kind openpose: DWPose keypoints of everyone, drawn as an OpenPose-style skeleton (for checkpoints
fine-tuned on OpenPose maps).

Writes MAP.png (photo-sized, or fitted into --height x --width with the aspect kept) and MAP.json:
the kind, the person's box as x0, y0, x1, y1 in photo pixels and its score (DensePose), the number
of people found, and the weights used.
"""

POSE_EPILOG = """\
examples:
  %(prog)s photo.jpg -o pose.png
  %(prog)s photo.jpg -o pose.png --densepose-weights model_final_162be9.pkl
  %(prog)s photo.jpg -o skeleton.png --kind openpose --height 768 --width 512
"""


def add_pose_command(commands) -> None:
    pose = commands.add_parser(
        "pose", help="make a pose map (DensePose or OpenPose-style) from a photo of a person",
        usage="%(prog)s PHOTO -o MAP.png [--kind densepose|openpose] [--densepose-weights FILE] [options]",
        description=POSE_DESCRIPTION, epilog=POSE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pose.add_argument("photo", metavar="PHOTO", help="a photo of one person (JPEG, PNG, WebP...)")
    pose.add_argument("-o", "--output", required=True, metavar="MAP.png",
                      help="where to write the map (PNG: lossless, so the part indices survive); MAP.json goes beside it")
    pose.add_argument("--kind", choices=("densepose", "openpose"), default="densepose",
                      help="densepose (default: what the released model reads) or openpose (DWPose skeleton)")
    pose.add_argument("--densepose-weights", metavar="FILE", default=None,
                      help="a local DensePose checkpoint (detectron2 model-zoo .pkl) instead of the pinned Hub download")
    pose.add_argument("--height", type=int, default=None, help="fit the map into this height (with --width)")
    pose.add_argument("--width", type=int, default=None, help="fit the map into this width (with --height)")
    pose.add_argument("--weights", default=None, metavar="tiny",
                      help="'tiny': tiny random stand-ins, offline (placeholder maps, for trying things out); "
                           "default: the real preprocessing weights, downloaded once into weights/")
    pose.add_argument("--device", default=None, help="cuda or cpu for DensePose (default: cuda when available)")
    pose.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")


def output_paths(output: Path, count: int) -> list[Path]:
    """out.png for one image; out_0.png, out_1.png, ... for several."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{index}{output.suffix}") for index in range(count)]


def _progress_printer(quiet: bool):
    if quiet:
        return None
    last = {"text": None}

    def show(update) -> None:
        if update.text != last["text"]:
            last["text"] = update.text
            print(f"[{update.fraction:4.0%}] {update.text}", file=sys.stderr, flush=True)

    return show


def load_request(args: argparse.Namespace):
    """The `generate` options (part, mask and pose files, settings) as a studio GenerationRequest.

    Files are opened and checked here; the settings are checked by `GenerationRequest.validated()`.
    `python -m parts2whole batch` builds the same options from each manifest line and calls this too.
    """
    from preprocess.images import load_image, load_mask

    from .. import studio as studio_module

    references, masks = {}, {}
    for label in PART_LABELS:
        path = getattr(args, f"part_{label}")
        mask_path = getattr(args, f"mask_{label}")
        if path:
            references[label] = load_image(path, what=f"{UI_SLOT_NAMES[label].lower()} image ({path})")
        if mask_path:
            if not path:
                raise Parts2WholeInputError(
                    f"--mask-{option_name(label)} was given without --{option_name(label)}.")
            masks[label] = load_mask(mask_path, references[label].size, what=f"mask {mask_path}").mask
    if args.densepose_weights and not args.pose_photo:
        raise Parts2WholeInputError("--densepose-weights is for --pose-photo (a pose map made from a photo).")
    if args.pose_photo:  # the photo stands in for the map until run_generate makes the map from it
        pose = load_image(args.pose_photo, what=f"photo ({args.pose_photo})")
    else:
        pose = load_image(args.pose, what=f"pose map ({args.pose})").convert("RGB")
    return studio_module.GenerationRequest(
        references=references, masks=masks, structure=pose, prompt=args.prompt, negative_prompt=args.negative_prompt,
        seed=args.seed, steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width,
        num_images=args.num_images, fusion_blocks=args.fusion_blocks, scheduler=args.scheduler)


def output_parameters(result, paths: list[Path], args: argparse.Namespace) -> dict:
    """What out.json holds: the studio's parameters, the images written and the input files they came from."""
    return result.parameters | {"outputs": [path.name for path in paths], "inputs": _input_record(args)}


def run_generate(args: argparse.Namespace) -> int:
    from .. import studio as studio_module

    output = Path(args.output)
    if output.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp"}:
        raise Parts2WholeInputError(f"-o {output}: use a .png, .jpg or .webp file name.")
    _check_writable_folder(output)  # before the long model load, not after
    request = load_request(args)
    pose_photo = request.structure if args.pose_photo else None
    studio = studio_module.Studio(args.weights, device=args.device, dtype=args.dtype)
    request.validated()  # fail on bad settings before a long model load
    made_pose = None
    if pose_photo is not None:
        made_pose = _pose_from_photo_for(studio, pose_photo, args)
        request = dataclasses.replace(request, structure=made_pose.pose_map)
    if not args.quiet:
        print(f"Model: {studio.weights.name} on {studio.device_choice.device} ({studio.device_choice.dtype_name})",
              file=sys.stderr)
        if studio.is_tiny:
            print("Note: the tiny random model draws noise, not portraits.", file=sys.stderr)
    result = studio.generate(request, progress=_progress_printer(args.quiet))

    paths = output_paths(output, len(result.images))
    parameters = output_parameters(result, paths, args)
    json_path = output.with_suffix(".json")
    pose_path = output.with_name(f"{output.stem}_pose.png")
    if made_pose is not None:
        parameters["pose_map"] = made_pose.details | {"file": pose_path.name, "photo": str(args.pose_photo),
                                                      "note": made_pose.note}
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for image, path in zip(result.images, paths):
            image.save(path)
        if made_pose is not None:
            made_pose.pose_map.save(pose_path)
            paths.append(pose_path)
        json_path.write_text(studio_module.parameters_json(parameters))
    except OSError as error:
        raise Parts2WholeInputError(f"Cannot write {output} ({error.strerror or error}); choose another -o path.") from None
    for path in [*paths, json_path]:
        print(path)
    return EXIT_OK


def _check_writable_folder(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Parts2WholeInputError(f"Cannot write {output} ({error.strerror or error}); choose another -o path.") from None
    if not os.access(output.parent, os.W_OK):
        raise Parts2WholeInputError(f"Cannot write into {output.parent} (no permission); choose another -o path.")


def _input_record(args: argparse.Namespace) -> dict[str, str]:
    """The input files given, by part (and mask), so the JSON says what the result was made from."""
    record = {}
    for label in PART_LABELS:
        for prefix, name in (("part_", label), ("mask_", f"mask {label}")):
            value = getattr(args, f"{prefix}{label}")
            if value:
                record[name] = str(value)
    if getattr(args, "pose_photo", None):
        record["pose photo"] = str(args.pose_photo)
    else:
        record["pose"] = str(args.pose)
    return record


def _pose_from_photo_for(studio, photo, args: argparse.Namespace):
    """`generate --pose-photo`: the kind of map this studio's model reads, at the output size (the app's rule)."""
    from ..studio.preprocessing import PreprocessingService

    service = PreprocessingService(studio, densepose_weights=args.densepose_weights)
    made = service.pose_from_photo(photo, (args.height, args.width))
    if not args.quiet:
        print(f"Pose map: {made.details['tool']} from {args.pose_photo} ({made.kind}"
              + (f", {made.note}" if made.note else "") + ")", file=sys.stderr)
        fallback = service.fallback_note(made.details["tool"])
        if fallback:
            print(f"Note: {fallback}", file=sys.stderr)
    return made


def _pose_estimators(args: argparse.Namespace) -> dict:
    """The estimator `pose --kind` needs: tiny stand-ins (--weights tiny), a local DensePose file, or the
    pinned downloads (a failed download is an error here, never a silent placeholder)."""
    from ..studio.preprocessing import TINY_PREPROCESS_DIR_NAME
    from ..core.weights import weights_dir  # where the app's service builds its tiny stand-ins too

    weights = args.weights or os.environ.get("P2W_WEIGHTS")
    tiny = (weights or "").strip().lower() == "tiny"
    if args.weights and not tiny:
        raise Parts2WholeInputError(f"pose --weights {args.weights!r}: only 'tiny' (the tiny stand-ins) is taken here; "
                                    "leave it out for the real models, or give --densepose-weights FILE.")
    if args.kind == "densepose":
        from preprocess.densepose import load_densepose, load_tiny_densepose

        if args.densepose_weights:
            return {"densepose": load_densepose(args.densepose_weights, device=args.device)}
        if tiny:
            return {"densepose": load_tiny_densepose(weights_dir() / TINY_PREPROCESS_DIR_NAME)}
        return {"densepose": load_densepose(device=args.device)}
    if args.densepose_weights:
        raise Parts2WholeInputError("--densepose-weights is for --kind densepose.")
    from preprocess.pose import WholeBodyPoseEstimator

    if tiny:
        from preprocess.tiny import ensure_tiny_preprocessing

        files = ensure_tiny_preprocessing(weights_dir() / TINY_PREPROCESS_DIR_NAME)
        return {"dwpose": WholeBodyPoseEstimator(files.detector, files.pose), "dwpose_weights": "tiny"}
    return {"dwpose": WholeBodyPoseEstimator.from_hub()}


def run_pose(args: argparse.Namespace) -> int:
    """`pose PHOTO -o MAP.png`: the map and MAP.json (kind, box, score, people found, weights)."""
    from preprocess.images import load_image

    from .. import studio as studio_module
    from ..studio.preprocessing import make_pose_map

    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise Parts2WholeInputError(f"-o {output}: use a .png file name (a pose map must be lossless).")
    if (args.height is None) != (args.width is None):
        raise Parts2WholeInputError("Give both --height and --width to fit the map, or neither (photo-sized).")
    size = None
    if args.height is not None:
        if not (8 <= args.height <= 8192 and 8 <= args.width <= 8192):
            raise Parts2WholeInputError(f"--height and --width must be 8 to 8192 pixels, got {args.height}x{args.width}.")
        size = (args.height, args.width)
    _check_writable_folder(output)
    photo = load_image(args.photo, what=f"photo ({args.photo})")
    if size is None and args.kind == "openpose":
        size = (photo.height, photo.width)  # photo-sized like a DensePose map (whose pixels match the box)
    made = make_pose_map(photo, args.kind, size, **_pose_estimators(args))
    record = made.details | {"photo": str(args.photo), "map": output.name, "note": made.note}
    if made.keypoints is not None:
        record["keypoints"] = made.keypoints
    json_path = output.with_suffix(".json")
    try:
        made.pose_map.save(output)
        json_path.write_text(studio_module.parameters_json(record))
    except OSError as error:
        raise Parts2WholeInputError(f"Cannot write {output} ({error.strerror or error}); choose another -o path.") from None
    if made.note and not args.quiet:
        print(f"Note: {made.note}", file=sys.stderr)
    for path in (output, json_path):
        print(path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s")
    try:
        # `batch` sets its own handler; the others are looked up by name.
        handler = getattr(args, "handler", None) or {"generate": run_generate, "pose": run_pose,
                                                      "examples": run_examples}[args.command]
        return handler(args)
    except (Parts2WholeInputError, CheckpointError) as error:
        print(f"{PROG} {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug or an environment problem: one line, the traceback on request
        if os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}:
            raise
        print(f"{PROG} {args.command}: failed ({type(error).__name__}): {_one_line(error)[:500]} "
              f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILED


# ----------------------------------------------------------------------------- examples (parts2whole.examples)


def add_examples_commands(commands) -> None:
    """`examples fetch [--count N]` and `examples list`: the app's photo examples, prefetched or shown."""
    from .. import examples

    group = commands.add_parser(
        "examples", help="fetch or list the photo examples (test samples of the Parts2Whole dataset)",
        description=f"Photo examples for the app: {examples.DEFAULT_EXAMPLE_COUNT} test samples of {examples.DATASET_ID} "
                    f"(parts, masks, DensePose map, caption, real photo) and {examples.DEFAULT_POSE_COUNT} DensePose "
                    "maps for the pose gallery, read member by member from the dataset's zip archives and cached "
                    "under <weights>/examples (P2W_WEIGHTS_DIR, or P2W_EXAMPLES_DIR).")
    actions = group.add_subparsers(dest="examples_command", metavar="ACTION", parser_class=_OneLineErrorParser,
                                   required=True)
    fetch = actions.add_parser("fetch", help="fetch the selection into the cache (prepares offline machines, images)")
    fetch.add_argument("--count", type=int, default=examples.DEFAULT_EXAMPLE_COUNT,
                       help=f"examples (default {examples.DEFAULT_EXAMPLE_COUNT})")
    fetch.add_argument("--poses", type=int, default=examples.DEFAULT_POSE_COUNT,
                       help=f"pose gallery maps (default {examples.DEFAULT_POSE_COUNT})")
    fetch.add_argument("--source", default=None, metavar="DIR",
                       help="read a local copy of the dataset (a folder with test.jsonl and the zips) instead of the Hub")
    listing = actions.add_parser("list", help="print what is cached")
    for action in (fetch, listing):
        action.add_argument("--revision", default=examples.DATASET_REVISION,
                            help=f"dataset commit (default: the pinned {examples.DATASET_REVISION[:12]})")
        action.add_argument("--cache", default=None, help="cache folder (default: <weights>/examples)")


def run_examples(args: argparse.Namespace) -> int:
    from .. import examples

    cache_root = Path(args.cache) if args.cache else None
    if args.examples_command == "fetch":
        if args.count < 1 or args.poses < 0:
            raise Parts2WholeInputError("--count must be at least 1 and --poses at least 0.")
        fs, root = None, None
        if args.source:
            if not Path(args.source).is_dir():
                raise Parts2WholeInputError(f"--source {args.source}: no such folder.")
            fs, root = examples.local_file_system(args.source)
        try:
            manifest = examples.fetch_examples(fs, root, revision=args.revision, count=args.count, poses=args.poses,
                                               cache_root=cache_root, progress=lambda line: print(line, file=sys.stderr))
        except examples.ExampleFetchError as error:
            print(f"{PROG} examples fetch: failed: {_one_line(error)}", file=sys.stderr)
            return EXIT_FAILED
        for note in manifest.notes:
            print(f"note: {note}", file=sys.stderr)
        _print_manifest(manifest)
        return EXIT_OK
    manifest = examples.load_manifest(examples.cache_folder(args.revision, cache_root))
    if manifest is None:
        print(f"No photo examples cached in {examples.cache_folder(args.revision, cache_root)} "
              f"(run: {PROG} examples fetch).")
        return EXIT_OK
    _print_manifest(manifest)
    return EXIT_OK


def _print_manifest(manifest) -> None:
    from .. import examples

    print(f"{manifest.dataset}@{manifest.revision} in {manifest.folder} (fetched {manifest.fetched_at})")
    print(f"{len(manifest.examples)} examples:")
    for example in manifest.examples:
        print(f"  {example.sample_id:<48} {example.title}; parts: {', '.join(example.parts)}")
    print(f"{len(manifest.poses)} poses:")
    for pose in manifest.poses:
        print(f"  {pose.sample_id:<48} {pose.label}")
    for line in examples.format_transfer(manifest.transfer):
        print(line)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
