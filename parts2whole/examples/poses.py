"""What a DensePose map shows: which way the body faces and where the arms are (the pose gallery spreads
over these). The maps are IUV images with the part index in the blue channel (as the project's shared
DensePose notes establish from the released maps)."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

#: DensePose part indices (the I of IUV; 0 = background). Left and right are the person's own sides.
DP_TORSO_BACK, DP_TORSO_FRONT = 1, 2
DP_HANDS = (3, 4)
DP_LOWER_ARMS = (19, 20, 21, 22)
DP_LEFT = (4, 5, 8, 10, 12, 14, 15, 17, 19, 21, 24)
DP_RIGHT = (3, 6, 7, 9, 11, 13, 16, 18, 20, 22, 23)
#: |left - right| / (left + right) of the limb areas from which a body is seen from the side.
SIDE_BALANCE = 0.35
#: Hands at least this high, as a share of the torso's height from its bottom (1 = the shoulders), are
#: "arms raised".
ARMS_RAISED_LEVEL = 0.85


@dataclasses.dataclass(frozen=True)
class PoseDescriptor:
    """What the gallery spreads over, measured on the DensePose map (see `describe_densepose`)."""

    facing: str  # front, back, side or unknown
    arms: str  # raised, down or unknown
    balance: float  # (left - right) / (left + right) limb area
    arm_height: float  # highest hand/forearm point above the torso bottom, in torso heights

    @property
    def label(self) -> str:
        return f"{self.facing} · arms {self.arms}" if self.arms != "unknown" else self.facing


def describe_densepose(image: Image.Image) -> PoseDescriptor:
    """Facing and arm position from an IUV map (part index in the blue channel, black background).

    facing: "side" when the left and right limb areas differ by SIDE_BALANCE or more, else "front" or
    "back" by whichever torso surface (I = 2 front, 1 back) covers more pixels. arms: "raised" when the
    highest hand (or forearm) pixel is at least ARMS_RAISED_LEVEL torso heights above the torso's bottom.
    Checked by eye on the five dataset maps in the official repository's testset/ (not copied here): front,
    front, side, three-quarter (side, balance -0.56), side, all arms down; matches what the maps show.
    """
    pixels = np.asarray(image.convert("RGB"))
    drawn = pixels.max(axis=2) > 0
    index = np.where(drawn, pixels[..., 2], 0)
    areas = np.bincount(index.ravel(), minlength=256)
    left, right = float(areas[list(DP_LEFT)].sum()), float(areas[list(DP_RIGHT)].sum())
    balance = (left - right) / (left + right) if left + right else 0.0
    torso = np.isin(index, (DP_TORSO_BACK, DP_TORSO_FRONT))
    if abs(balance) >= SIDE_BALANCE:
        facing = "side"
    elif torso.any():
        facing = "front" if areas[DP_TORSO_FRONT] >= areas[DP_TORSO_BACK] else "back"
    else:
        facing = "unknown"
    arms, arm_height = "unknown", 0.0
    rows = np.nonzero(torso.any(axis=1))[0]
    hands = np.isin(index, DP_HANDS)
    if not hands.any():
        hands = np.isin(index, DP_LOWER_ARMS)
    if rows.size and hands.any():
        top, bottom = rows[0], rows[-1]
        highest = np.nonzero(hands.any(axis=1))[0][0]
        arm_height = float((bottom - highest) / max(1, bottom - top))
        arms = "raised" if arm_height >= ARMS_RAISED_LEVEL else "down"
    return PoseDescriptor(facing, arms, round(balance, 3), round(arm_height, 3))
