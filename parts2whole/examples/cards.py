"""What the gallery shows of a fetched sample: its card (the real photo, labelled as the ground truth, then
the pose map and the part photos), its title, and the pose thumbnails."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

#: Example cards in the gallery: this tall, the real photo first (labelled), then the pose and the parts.
CARD_HEIGHT = 240
POSE_THUMB_HEIGHT = 160
GROUND_TRUTH_BAND = (24, 110, 60)  # the green label band under the real photo on a card
REAL_PERSON_LABEL = "REAL PHOTO"
REAL_PERSON_SUBLABEL = "ground truth"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def example_card(target: Image.Image, pose: Image.Image, parts: list[Image.Image], height: int = CARD_HEIGHT) -> Image.Image:
    """The gallery thumbnail: the real photo (green band: "REAL PHOTO / ground truth"), a thin gap, the pose
    map, then the part photos in a two-row grid."""

    def fit(image: Image.Image, box_h: int, box_w: int | None = None) -> Image.Image:
        image = image.convert("RGB")
        scale = box_h / image.height
        if box_w is not None:
            scale = min(scale, box_w / image.width)
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                            Image.Resampling.LANCZOS)

    band = max(28, height // 7)  # two lines of text under the photo
    photo = fit(target, height - band)
    pose_tile = fit(pose, height - band)
    rows = 2
    tile_h = (height - band) // rows
    tile_w = round(tile_h * 0.75)
    columns = max(1, -(-len(parts) // rows))
    gap = 6
    width = photo.width + gap + pose_tile.width + gap + columns * tile_w
    card = Image.new("RGB", (width, height), (245, 245, 245))
    card.paste(photo, (0, 0))
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, height - band, photo.width, height), fill=GROUND_TRUTH_BAND)
    font = _font(max(9, band * 2 // 5))
    line = band // 2
    draw.text((4, height - band + 1), REAL_PERSON_LABEL, fill=(255, 255, 255), font=font)
    draw.text((4, height - band + line), REAL_PERSON_SUBLABEL, fill=(255, 255, 255), font=font)
    x = photo.width + gap
    card.paste(pose_tile, (x, 0))
    draw.text((x + 4, height - band + 2), "DensePose", fill=(60, 60, 60), font=font)
    x += pose_tile.width + gap
    for index, part in enumerate(parts):
        tile = fit(part, tile_h, tile_w)
        column, row = divmod(index, rows)
        card.paste(tile, (x + column * tile_w + (tile_w - tile.width) // 2, row * tile_h + (tile_h - tile.height) // 2))
    draw.text((x + 4, height - band + 2), "parts", fill=(60, 60, 60), font=font)
    return card


def pose_thumbnail(image: Image.Image) -> Image.Image:
    """A pose map made small for the pose gallery (at most POSE_THUMB_HEIGHT tall, twice that wide)."""
    small = image.convert("RGB")
    small.thumbnail((POSE_THUMB_HEIGHT * 2, POSE_THUMB_HEIGHT), Image.Resampling.LANCZOS)
    return small


def example_title(attributes: dict[str, str]) -> str:
    """The title of an example card, true to its caption and id: "Man · short-sleeve shirt and shorts, hat ·
    front view", "Woman · dress · back view" (from `Sample.attributes`)."""
    outfit = attributes.get("outfit_text") or "outfit"
    if attributes.get("headwear") == "yes":
        outfit += ", hat"
    who = {"man": "Man", "woman": "Woman"}.get(attributes.get("gender", ""), "Person")
    return f"{who} · {outfit} · {attributes.get('view', 'unknown')} view"
