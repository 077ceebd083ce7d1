"""Every limit on a generation request, in one table: what the library accepts, what the studio allows.

Two kinds of caller, two sets of bounds:

* LIBRARY: `Parts2WholePipeline.__call__` / `encode_references` (a developer's own code). The bound is
  what the method itself can mean: past it the result is undefined or the request cannot be honoured.
* STUDIO: the served front doors, which all go through `parts2whole.studio` (the web app and its API,
  the CLI, batch manifests). A server is shared: the bound keeps one stranger's request from holding the
  device for minutes, and the values must round-trip through every client (browsers, JSON, CSV).

A limit the two share has one value, stated once. `limits_table()` gives the whole table for docs and
tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """One bound: its value for library callers, for the studio's front doors, and why."""

    name: str
    library: int | float
    studio: int | float
    why: str


#: Height and width must be multiples of the VAE's down-sampling factor (latents are 1/8 of the image).
SIZE_MULTIPLE = 8
#: Smallest side: 8x8 latents, below which the UNet's three down-samplings leave nothing.
MIN_SIDE = 64
#: Largest side: far outside what the SD1.5-based checkpoint was trained for (768x512); memory runs out.
MAX_SIDE = 2048
#: Images above this many pixels are refused, checked from the file header before any pixel is decoded.
MAX_IMAGE_PIXELS = 40_000_000
#: A mask may have another resolution than its image (it is resized), but not another shape: a relative
#: aspect-ratio difference above this means it was made for another picture, and the mask is refused. Unlike
#: the pose note below, 2 % is right here: rounding a rescaled mask's sides moves its aspect by at most
#: 0.5/width + 0.5/height (under 2 % down to about 50 px a side), while a mask of another common photo
#: shape (2:3, 750x1101, 3:4) differs by 2.2 % or more.
MASK_ASPECT_TOLERANCE = 0.02
#: A pose map of another aspect ratio than the output is stretched to it (resized to the output size, not
#: cropped, as the official inference does); the note says so only when the stretch visibly distorts the
#: body. The shapes people use, as relative aspect differences (map w/h over output w/h, minus 1):
#:   * the dataset's own DensePose maps, 750x1101 (the model's training data, the pose gallery), at the
#:     default 768x512 and every 2:3 preset: 2.2 %. That is the model's normal input and must give no note
#:     (at 0.02 it did, on every gallery pose);
#:   * a 2:3 map at the 3:4 presets (1024x768, 512x384): 9-11 %; a 3:4 phone photo's map at 2:3: 12.5 %;
#:   * a 2:3 map at the square preset: 33 %; a square map at 2:3: 50 %; a landscape 4:3 map at 2:3: 100 %.
#: 5 % sits between the first group and the rest with room on both sides: a figure made 5 % wider or
#: narrower still reads as a person of a slightly different build, while 9 % and more squashes or widens
#: the whole body noticeably, which is worth a note.
STRUCTURE_ASPECT_TOLERANCE = 0.05
#: An edit's region may cover at most this fraction of the source: past it almost nothing is kept, and a
#: new portrait (generate) is what was meant.
EDIT_MAX_REGION_FRACTION = 0.95
#: Classifier-free guidance above this only burns the image; both front doors share it.
MAX_GUIDANCE = 50.0

#: Denoising steps. Library: the schedulers' 1000 training timesteps (more steps than timesteps means
#: nothing). Studio: DDIM and the DPM++/UniPC solvers have converged long before 150, and a shared queue
#: must not be held for minutes by one request.
STEPS = Limit("steps", library=1000, studio=150,
              why="library: the 1000 training timesteps; studio: converged long before, keeps a shared queue moving")
#: Images per request. Library: bounded by memory only (8 rows of the guidance batch at 768x512).
#: Studio: one request's device time stays bounded, and the results fit the app's gallery.
IMAGES = Limit("images per request", library=8, studio=4,
               why="library: memory; studio: bounded device time per request and one gallery row")
#: Seeds. Library: 2**32 - 1, numpy's seed range, so a seed from any tool can be replayed. Studio:
#: a signed 32-bit integer, which browsers, gradio's Number, JSON and spreadsheets (batch CSV) all
#: carry exactly; the app draws its random seeds from this range too.
SEED = Limit("seed", library=2**32 - 1, studio=2**31 - 1,
             why="library: numpy's seed range; studio: what every client (JavaScript, JSON, CSV) carries exactly")

MAX_STEPS, STUDIO_MAX_STEPS = STEPS.library, STEPS.studio
MAX_IMAGES_PER_PROMPT, STUDIO_MAX_IMAGES = IMAGES.library, IMAGES.studio
MAX_SEED, STUDIO_MAX_SEED = SEED.library, SEED.studio


def limits_table() -> list[Limit]:
    """Every limit, shared ones with one value for both callers."""
    shared = [
        Limit("side (pixels)", MAX_SIDE, MAX_SIDE, f"a multiple of {SIZE_MULTIPLE} from {MIN_SIDE}: the SD1.5 VAE and UNet"),
        Limit("image pixels", MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS, "checked before decoding: a decompression bomb is refused"),
        Limit("mask aspect difference", MASK_ASPECT_TOLERANCE, MASK_ASPECT_TOLERANCE, "another shape = a mask for another picture"),
        Limit("pose map aspect difference", STRUCTURE_ASPECT_TOLERANCE, STRUCTURE_ASPECT_TOLERANCE,
              "the map is always stretched to the output; above this the body visibly distorts: a note says so"),
        Limit("guidance", MAX_GUIDANCE, MAX_GUIDANCE, "above it guidance only burns the image"),
        Limit("edit region fraction", EDIT_MAX_REGION_FRACTION, EDIT_MAX_REGION_FRACTION,
              "an edit keeps the rest of the photo; above it, generate a new portrait"),
    ]
    return [STEPS, IMAGES, SEED, *shared]
