"""Facts of the Hub dataset `huanngzh/DeepFashion-MultiModal-Parts2Whole`, shared by the photo examples
(parts2whole.examples) and the training data reader (parts2whole.train.dataset), each with where it comes
from. Only facts and the two thresholds that follow from them live here; no code of the official project.

Sources: [card] the dataset card on the Hub; [config] the official repository's training config (its
validation inputs); [loader] the official repository's data loader and training loop; [testset] the sample
files in the official repository's testset/ folder; [files] the Hub repository's file list.
"""

HUB_DATASET_ID = "huanngzh/DeepFashion-MultiModal-Parts2Whole"

#: Keys of one index line (train.jsonl / test.jsonl) [card, loader]. `structure` holds both "densepose"
#: and "openpose" [card]; `appearance` and `mask` map a part label to a path.
INDEX_KEYS = ("target_id", "reference_id", "target", "caption", "appearance", "mask", "structure")
STRUCTURE_KINDS = ("densepose", "openpose")

#: Folder of each part label in the dataset (one zip each, `<folder>.zip`, which unpacks as its own folder
#: [files, loader]). Paths on a line: `images/<id>.jpg`, `<folder>/<ref>_rgb.jpg`, `<folder>/<ref>_mask.jpg`,
#: `densepose/<id>_densepose.png`, `openpose/<id>.png` [card].
PART_FOLDERS = {
    "face": "face",
    "hair or headwear": "hair_headwear",
    "upper body clothes": "upper_body_clothes",
    "lower body clothes": "lower_body_clothes",
    "whole body clothes": "whole_body_clothes",
    "shoes": "shoes",
}

#: Every line lists all six part labels [card: its example line, a man in a short-sleeve shirt and shorts,
#: lists all six; config: the validation inputs, a tank top and trousers, list all six; loader: the
#: training loop batches the `appearance` dicts with the default collate, which needs one key set per batch].
#: So the presence of a label says nothing about the outfit: the caption and the id do (see
#: parts2whole.examples.outfit), and the masks say what is visible.
EVERY_LINE_LISTS_ALL_PARTS = True

#: "whole body clothes" is the crop of the whole outfit, not a dress slot [testset: whole_body_clothes_1's mask
#: covers a T-shirt and overalls together]. The model learned it as "the whole outfit in one picture".
WHOLE_OUTFIT_LABEL = "whole body clothes"
#: What the app and the CLI say about that slot.
WHOLE_OUTFIT_HINT = ("The whole outfit in one picture: top and bottom together, or a dress or jumpsuit "
                     "(not only dresses).")

#: Ids are DeepFashion-MultiModal image names, `<MEN|WOMEN>-<category>-id_<8 digits>-<outfit>_<shot>_<view>`,
#: e.g. "MEN-Denim-id_00000265-01_1_front" [card]: gender, shop category, person, view.
ID_EXAMPLE = "MEN-Denim-id_00000265-01_1_front"

#: Part files named `.jpg` are JPEG or WebP, at odd sizes (502x736, 1931x2835) or 512x768; masks have their
#: part's size and are 3-channel JPEGs with soft edges; photos and DensePose maps are 750x1101 [files, testset].
#: Readers therefore decode by content (PIL), never by the file name, and read masks as luminance.
PHOTO_SIZE = (750, 1101)

#: Not confirmed by the sources, so handled: a part not visible in the photo (a face in a back view, shoes
#: under a long dress) most likely has an all-black mask, which JPEG leaves with faint noise. A part whose mask
#: has less than this share of pixels above preprocess.images.MASK_THRESHOLD is treated as absent. A real part
#: crop is mostly the part (a face crop is mostly face), far above it.
MIN_PART_COVERAGE = 0.005

#: Not confirmed either: a photo where DensePose found nobody would have a blank (all-black) map. A map with
#: less than this share of body pixels (any channel above BODY_PIXEL_LEVEL) is blank or near-blank: a standing
#: person in a 750x1101 photo covers roughly a fifth of it.
MIN_BODY_SHARE = 0.02
#: A DensePose map pixel is body when any channel is above this (the background is black; a little margin
#: for maps that were ever re-encoded).
BODY_PIXEL_LEVEL = 8
