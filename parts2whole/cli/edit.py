"""`python -m parts2whole edit PHOTO --change shoes --shoes new_shoes.jpg -o OUT.png`: change parts of a
photo (or of one of our results) and keep everything else, at the photo's own size.

What is not given comes from the photo (`studio.edit_sources.prepare_edit`): the kept parts cut with the
automatic part masks, the pose (DensePose), the region (the changed parts' masks, grown). A result of
`generate` (its OUT.json beside it) brings its own references and pose instead. The same `Studio` as the
web app edits; OUT.png (OUT_0.png, ...) and OUT.json are written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import studio
from ..core.errors import Parts2WholeInputError
from ..core.labels import PART_LABELS
from ..studio.edit_sources import EditFiles, ServiceAnalysis, prepare_edit
from ..studio.inputs import output_paths
from ..studio.preprocessing import PreprocessingService
from .common import EXIT_OK, cannot_write, check_writable_folder
from .generate import (OUTPUT_SUFFIXES, _add_output_options, _add_part_options, _add_settings, _progress_printer,
                       option_name)

DEFAULT_OUTPUT = "outputs/parts2whole-edit.png"

DESCRIPTION = """\
Change one or more parts of a photo of a person (or of a result of `generate`) and keep the rest.

Name the part(s) to change with --change (repeatable or comma-separated: shoes, top, upper-body-clothes,
...) and give each new part picture with its part option (--shoes new.jpg). Without --change, the parts
given are the ones changed. Everything else comes from the photo: the kept parts (face, hair, the other
garments) are cut from it with the automatic part masks, the pose is its DensePose map, and the region
to change is the changed parts' masks, grown a little (--region overrides it: white = change).
The output has the photo's size; outside the region and a few pixels of blending it IS the photo.
"""

EPILOG = """\
examples:
  %(prog)s photo.jpg --change shoes --shoes new_shoes.jpg -o edited.png
  %(prog)s photo.jpg --top jacket.png --strength 0.8 --seed 7 -o jacket.png
  %(prog)s out.png --change top,shoes --top shirt.png --shoes boots.png   # a result of generate

--height/--width are the working size of the crop that is redrawn (at most; the output keeps the photo's
size). --strength 1 (default) redraws the region from noise, lower keeps more of the old part, 0 returns
the photo unchanged. Writes OUT.png and OUT.json (every parameter, what was kept, dropped and why).
"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The `edit` subcommand, added to the CLI's subparsers."""
    parser = commands.add_parser(
        "edit", help="change parts of a photo (or of a result) and keep the rest",
        usage="%(prog)s PHOTO [--change PART ...] --PART IMAGE [...] [--region MASK] [--strength S] [-o OUT.png] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", metavar="PHOTO", help="the photo (or result) to edit")
    edit = parser.add_argument_group("edit")
    edit.add_argument("--change", action="append", default=[], metavar="PART",
                      help="a part to change (repeatable or comma-separated); default: the parts given")
    edit.add_argument("--strength", type=float, default=1.0,
                      help="how much of the region is redrawn: 1 from noise (default), 0 returns the photo")
    edit.add_argument("--region", metavar="MASK", default=None,
                      help="the region to change, a mask at the photo's size (white = change); default: found")
    edit.add_argument("--pose", "--structure", dest="pose", metavar="IMAGE", default=None,
                      help="a pose map aligned with the photo, instead of the one made from it")
    edit.add_argument("--densepose-weights", metavar="FILE", default=None,
                      help="a local DensePose checkpoint for the photo's pose map (instead of the pinned download)")
    _add_part_options(parser)
    _add_settings(parser)
    for action in parser._actions:  # the same options as generate; only their meaning for the size differs
        if action.dest in ("height", "width"):
            action.help = f"working {action.dest} of the redrawn crop at most (default {action.default}); the output keeps the photo's size"
    _add_output_options(parser)
    parser.set_defaults(handler=run, output=DEFAULT_OUTPUT)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the options and files, resolve the edit from the photo, edit, write the images and the JSON."""
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise Parts2WholeInputError(f"-o {output}: use a .png, .jpg or .webp file name.")
    check_writable_folder(output)  # before the long model load, not after
    for label in PART_LABELS:
        if getattr(args, f"mask_{label}") and not getattr(args, f"part_{label}"):
            raise Parts2WholeInputError(f"--mask-{option_name(label)} was given without --{option_name(label)}.")
    files = EditFiles(source=args.photo, region=args.region, pose=args.pose,
                      parts={label: getattr(args, f"part_{label}") for label in PART_LABELS if getattr(args, f"part_{label}")},
                      masks={label: getattr(args, f"mask_{label}") for label in PART_LABELS if getattr(args, f"mask_{label}")})
    loaded = files.load()  # every file decoded and checked once, before any model loads
    editor = studio.Studio(args.weights, device=args.device, dtype=args.dtype)
    service = PreprocessingService(editor, densepose_weights=args.densepose_weights)
    if loaded["result"] is not None and not args.quiet:
        print(f"Editing a result: its references and pose come from {loaded['result'].origin}", file=sys.stderr)
    request = prepare_edit(
        ServiceAnalysis(service), change=args.change, prompt=args.prompt, negative_prompt=args.negative_prompt,
        seed=args.seed, steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width,
        num_images=args.num_images, fusion_blocks=args.fusion_blocks, scheduler=args.scheduler,
        strength=args.strength, **loaded)
    if not args.quiet:
        print(f"Model: {editor.weights.name} on {editor.device_choice.device}; changing "
              f"{', '.join(request.changed)}; kept: {', '.join(request.origin['kept']) or 'nothing'}", file=sys.stderr)
    result = editor.edit(request, progress=_progress_printer(args.quiet))
    for path in _write_outputs(output, result, files.files()):
        print(path)
    return EXIT_OK


def _write_outputs(output: Path, result, inputs: dict) -> list[Path]:
    paths = output_paths(output, len(result.images))
    parameters = result.parameters | {"outputs": [path.name for path in paths], "inputs": inputs}
    json_path = output.with_suffix(".json")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        for image, path in zip(result.images, paths):
            image.save(path)
        json_path.write_text(studio.parameters_json(parameters))
    except OSError as error:
        raise cannot_write(output, error) from None
    return [*paths, json_path]
