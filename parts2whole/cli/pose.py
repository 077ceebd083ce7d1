"""`python -m parts2whole pose PHOTO -o MAP.png`: a DensePose or OpenPose-style map made from a photo,
and MAP.json (kind, box, score, people found, weights)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from preprocess.images import load_image
from preprocess.pose import WholeBodyPoseEstimator

from .. import studio
from ..core.errors import Parts2WholeInputError
from ..core.weights import weights_dir  # where the app's service builds its tiny stand-ins too
from ..studio.preprocessing import TINY_PREPROCESS_DIR_NAME, make_pose_map
from .common import EXIT_OK, cannot_write, check_writable_folder

#: The sizes a map may be fitted into (pixels, each side).
MIN_MAP_SIDE, MAX_MAP_SIDE = 8, 8192

DESCRIPTION = """\
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

EPILOG = """\
examples:
  %(prog)s photo.jpg -o pose.png
  %(prog)s photo.jpg -o pose.png --densepose-weights model_final_162be9.pkl
  %(prog)s photo.jpg -o skeleton.png --kind openpose --height 768 --width 512
"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The `pose` subcommand, added to the CLI's subparsers."""
    pose = commands.add_parser(
        "pose", help="make a pose map (DensePose or OpenPose-style) from a photo of a person",
        usage="%(prog)s PHOTO -o MAP.png [--kind densepose|openpose] [--densepose-weights FILE] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                           "default: the real preprocessing weights, downloaded once into the weights folder (P2W_WEIGHTS_DIR; installed: ~/.cache/parts2whole)")
    pose.add_argument("--device", default=None, help="cuda or cpu for DensePose (default: cuda when available)")
    pose.add_argument("-q", "--quiet", action="store_true", help="print only the paths written")
    pose.set_defaults(handler=run)
    return pose


def run(args: argparse.Namespace) -> int:
    """`pose PHOTO -o MAP.png`: the map and MAP.json (kind, box, score, people found, weights)."""
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise Parts2WholeInputError(f"-o {output}: use a .png file name (a pose map must be lossless).")
    size = _fit_size(args)
    check_writable_folder(output)
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
        json_path.write_text(studio.parameters_json(record))
    except OSError as error:
        raise cannot_write(output, error) from None
    if made.note and not args.quiet:
        print(f"Note: {made.note}", file=sys.stderr)
    for path in (output, json_path):
        print(path)
    return EXIT_OK


def _fit_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """--height and --width as (height, width), or None (photo-sized)."""
    if (args.height is None) != (args.width is None):
        raise Parts2WholeInputError("Give both --height and --width to fit the map, or neither (photo-sized).")
    if args.height is None:
        return None
    if not (MIN_MAP_SIDE <= args.height <= MAX_MAP_SIDE and MIN_MAP_SIDE <= args.width <= MAX_MAP_SIDE):
        raise Parts2WholeInputError(f"--height and --width must be 8 to 8192 pixels, got {args.height}x{args.width}.")
    return args.height, args.width


def _pose_estimators(args: argparse.Namespace) -> dict:
    """The estimator `pose --kind` needs: tiny stand-ins (--weights tiny), a local DensePose file, or the
    pinned downloads (a failed download is an error here, never a silent placeholder)."""
    weights = args.weights or os.environ.get("P2W_WEIGHTS")
    tiny = (weights or "").strip().lower() == "tiny"
    if args.weights and not tiny:
        raise Parts2WholeInputError(f"pose --weights {args.weights!r}: only 'tiny' (the tiny stand-ins) is taken here; "
                                    "leave it out for the real models, or give --densepose-weights FILE.")
    if args.kind == "densepose":
        # DensePose imports torch: imported when used, so `--help` and the other subcommands stay light
        from preprocess.densepose import load_densepose, load_tiny_densepose

        if args.densepose_weights:
            return {"densepose": load_densepose(args.densepose_weights, device=args.device)}
        if tiny:
            return {"densepose": load_tiny_densepose(weights_dir() / TINY_PREPROCESS_DIR_NAME)}
        return {"densepose": load_densepose(device=args.device)}
    if args.densepose_weights:
        raise Parts2WholeInputError("--densepose-weights is for --kind densepose.")
    if tiny:
        from preprocess.tiny import ensure_tiny_preprocessing  # imports torch: when used, so `--help` stays light

        files = ensure_tiny_preprocessing(weights_dir() / TINY_PREPROCESS_DIR_NAME)
        return {"dwpose": WholeBodyPoseEstimator(files.detector, files.pose), "dwpose_weights": "tiny"}
    return {"dwpose": WholeBodyPoseEstimator.from_hub()}
