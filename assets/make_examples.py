"""Draw the example inputs the app and the tests ship with (`python assets/make_examples.py`).

They are simple synthetic drawings made with PIL, so the project owns them outright (no third-party
photos). Reference parts have a transparent background, so their alpha is the default mask; pose maps
imitate DensePose renderings (coloured body parts on black), which is what the released model reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PART_SIZE = (256, 256)
POSE_SIZE = (256, 384)  # width, height: the 2:3 portrait shape of the default 768x512 output
SKIN = (224, 172, 140, 255)
TRANSPARENT = (0, 0, 0, 0)
# DensePose-like colours per body part (head, torso, upper arms, lower arms, upper legs, lower legs, feet).
POSE_COLOURS = {
    "head": (255, 222, 89), "torso": (60, 120, 220), "upper_arm": (90, 200, 120), "lower_arm": (150, 230, 90),
    "upper_leg": (230, 90, 120), "lower_leg": (240, 140, 60), "hand": (180, 110, 230), "foot": (120, 220, 220),
}


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", PART_SIZE, TRANSPARENT)
    return image, ImageDraw.Draw(image)


def face(skin=SKIN, hair=(70, 45, 30, 255), eyes=(40, 60, 90, 255), lips=(190, 70, 80, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.ellipse((40, 8, 216, 150), fill=hair)  # hair behind the face
    draw.ellipse((64, 36, 192, 212), fill=skin)
    draw.ellipse((92, 100, 112, 114), fill=(255, 255, 255, 255))
    draw.ellipse((144, 100, 164, 114), fill=(255, 255, 255, 255))
    draw.ellipse((97, 102, 107, 112), fill=eyes)
    draw.ellipse((149, 102, 159, 112), fill=eyes)
    draw.line((128, 118, 122, 150, 132, 150), fill=(180, 130, 105, 255), width=3)
    draw.chord((104, 158, 152, 186), 0, 180, fill=lips)
    draw.rectangle((108, 208, 148, 246), fill=skin)  # neck
    return image


def hat(colour=(40, 40, 60, 255), band=(200, 60, 60, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.ellipse((16, 150, 240, 200), fill=colour)  # brim
    draw.rounded_rectangle((64, 60, 192, 180), radius=30, fill=colour)
    draw.rectangle((64, 140, 192, 160), fill=band)
    return image


def long_hair(colour=(150, 90, 40, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.ellipse((48, 16, 208, 160), fill=colour)
    draw.rounded_rectangle((48, 90, 208, 250), radius=40, fill=colour)
    draw.ellipse((84, 70, 172, 200), fill=TRANSPARENT)  # where the face goes
    return image


def shirt(colour=(200, 40, 50, 255), collar=(240, 240, 240, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.polygon([(70, 30), (186, 30), (250, 90), (214, 126), (190, 104), (190, 240), (66, 240), (66, 104),
                  (42, 126), (6, 90)], fill=colour)
    draw.polygon([(104, 30), (152, 30), (128, 62)], fill=collar)
    for y in (90, 130, 170, 210):
        draw.ellipse((125, y, 131, y + 6), fill=collar)
    return image


def jeans(colour=(50, 80, 140, 255), seam=(220, 180, 90, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.polygon([(60, 10), (196, 10), (210, 246), (144, 246), (128, 90), (112, 246), (46, 246)], fill=colour)
    draw.rectangle((60, 10, 196, 30), fill=tuple(max(c - 30, 0) for c in colour[:3]) + (255,))
    draw.line((128, 30, 128, 90), fill=seam, width=2)
    return image


def dress(colour=(240, 170, 40, 255), dots=(255, 250, 230, 255)) -> Image.Image:
    image, draw = _canvas()
    draw.polygon([(96, 8), (160, 8), (176, 100), (236, 248), (20, 248), (80, 100)], fill=colour)
    for x, y in ((90, 140), (150, 170), (120, 210), (70, 220), (180, 220), (128, 60)):
        draw.ellipse((x, y, x + 12, y + 12), fill=dots)
    return image


def shoes(colour=(30, 30, 30, 255), sole=(235, 235, 235, 255)) -> Image.Image:
    image, draw = _canvas()
    for left in (20, 136):
        draw.rounded_rectangle((left, 120, left + 100, 180), radius=24, fill=colour)
        draw.rectangle((left, 172, left + 100, 188), fill=sole)
    return image


def pose_map(arms_out: bool = False) -> Image.Image:
    """A DensePose-style rendering of a standing person, facing the camera."""
    image = Image.new("RGB", POSE_SIZE, (0, 0, 0))
    draw = ImageDraw.Draw(image)
    c = POSE_COLOURS
    cx = POSE_SIZE[0] // 2
    draw.ellipse((cx - 22, 20, cx + 22, 72), fill=c["head"])
    draw.rounded_rectangle((cx - 40, 80, cx + 40, 200), radius=14, fill=c["torso"])
    if arms_out:
        for side in (-1, 1):
            shoulder, elbow, wrist = (cx + side * 40, 92), (cx + side * 82, 120), (cx + side * 118, 146)
            draw.line((*shoulder, *elbow), fill=c["upper_arm"], width=20)
            draw.line((*elbow, *wrist), fill=c["lower_arm"], width=16)
            draw.ellipse((wrist[0] - 10, wrist[1] - 10, wrist[0] + 10, wrist[1] + 10), fill=c["hand"])
    else:
        for side in (-1, 1):
            x = cx + side * 52
            draw.rounded_rectangle((x - 10, 86, x + 10, 150), radius=8, fill=c["upper_arm"])
            draw.rounded_rectangle((x - 9, 150, x + 9, 212), radius=8, fill=c["lower_arm"])
            draw.ellipse((x - 10, 208, x + 10, 230), fill=c["hand"])
    for side in (-1, 1):
        x = cx + side * 20
        draw.rounded_rectangle((x - 16, 196, x + 16, 280), radius=10, fill=c["upper_leg"])
        draw.rounded_rectangle((x - 13, 280, x + 13, 350), radius=10, fill=c["lower_leg"])
        draw.ellipse((x - 16 + side * 4, 346, x + 16 + side * 4, 368), fill=c["foot"])
    return image


#: name -> (prompt, {file stem: image}). File stems are the part labels with underscores, plus "pose".
EXAMPLES = {
    "red-shirt-and-jeans": (
        "a man in a red shirt and blue jeans, high quality, realistic",
        {"face": face(), "upper_body_clothes": shirt(), "lower_body_clothes": jeans(), "shoes": shoes(),
         "pose": pose_map()},
    ),
    "summer-dress": (
        "a woman in a yellow summer dress, high quality, realistic",
        {"face": face(hair=(120, 70, 30, 255), eyes=(60, 110, 60, 255)), "hair_or_headwear": long_hair(),
         "whole_body_clothes": dress(), "pose": pose_map(arms_out=True)},
    ),
    "hat-and-green-top": (
        "a person wearing a dark hat and a green top, high quality, realistic",
        {"face": face(skin=(170, 120, 90, 255), hair=(20, 20, 20, 255)), "hair_or_headwear": hat(),
         "upper_body_clothes": shirt(colour=(40, 150, 90, 255)), "lower_body_clothes": jeans(colour=(70, 70, 70, 255)),
         "pose": pose_map()},
    ),
}


THUMBNAIL_SIZE = 320
THUMBNAIL_BACKGROUND = (246, 246, 248, 255)
THUMBNAIL_GAP = 8


def thumbnail(images: dict[str, Image.Image]) -> Image.Image:
    """A square sheet of one example's inputs (parts in a grid on the left, the pose map on the right)."""
    parts = [image for stem, image in images.items() if stem != "pose"]
    pose = images["pose"].convert("RGBA")
    pose_width = int(THUMBNAIL_SIZE * 0.42)
    pose = pose.resize((pose_width, round(pose.height * pose_width / pose.width)))
    sheet = Image.new("RGBA", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), THUMBNAIL_BACKGROUND)
    sheet.alpha_composite(pose, (THUMBNAIL_SIZE - THUMBNAIL_GAP - pose.width, (THUMBNAIL_SIZE - pose.height) // 2))
    rows = (len(parts) + 1) // 2
    left_width = THUMBNAIL_SIZE - pose.width - 3 * THUMBNAIL_GAP
    cell = min((left_width - THUMBNAIL_GAP) // 2, (THUMBNAIL_SIZE - THUMBNAIL_GAP * (rows + 1)) // rows)
    top = (THUMBNAIL_SIZE - rows * cell - (rows - 1) * THUMBNAIL_GAP) // 2
    for index, image in enumerate(parts):
        column, row = index % 2, index // 2
        tile = image.convert("RGBA").resize((cell, cell))
        sheet.alpha_composite(tile, (THUMBNAIL_GAP + column * (cell + THUMBNAIL_GAP), top + row * (cell + THUMBNAIL_GAP)))
    return sheet.convert("RGB")


def main() -> None:
    for name, (prompt, images) in EXAMPLES.items():
        folder = EXAMPLES_DIR / name
        folder.mkdir(parents=True, exist_ok=True)
        for stem, image in images.items():
            image.save(folder / f"{stem}.png", optimize=True)
        thumbnail(images).save(folder / "thumbnail.jpg", quality=88)
        (folder / "prompt.json").write_text(json.dumps({"prompt": prompt}, indent=2) + "\n")
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
