"""Whole-body pose (DWPose, 133 COCO-WholeBody keypoints) -> OpenPose-style pose map and SAM seeds.

Models: DWPose's ONNX pair from Hub repo :data:`DWPOSE_REPO_ID` - the YOLOX-L person detector
(:data:`DETECTOR_FILE`, input 1x3x640x640, raw 0..255 pixels padded with 114, output 1x8400x85
without NMS) and the DWPose-L wholebody model (:data:`POSE_FILE`, an RTMPose with a SimCC head:
input 1x3x384x288 normalised crops, outputs ``simcc_x`` 1x133x576 and ``simcc_y`` 1x133x768).
Both run on onnxruntime through ``rtmlib`` (``YOLOX`` and ``RTMPose`` take any ONNX file of that
signature), downloaded into ``weights/dwpose/`` on first use.

Why rtmlib: it is already a dependency, needs only onnxruntime + OpenCV, is maintained, and its
``YOLOX``/``RTMPose`` classes implement exactly DWPose's pre/post-processing (letterbox, top-down
affine crop with 1.25 padding, SimCC arg-max decoding) for local ONNX paths. ``controlnet_aux``
pulls many unrelated annotators and points DWPose users to ``easy-dwpose``; ``easy-dwpose`` and
``dwpose`` (PyPI) bundle their own drawing and pin old dependencies. The pose map drawing here is
our own, from the OpenPose keypoint and colour conventions.

Channel order: the detector gets BGR (YOLOX was trained on OpenCV-read images); the pose model
gets RGB, because mmpose trained DWPose with ``bgr_to_rgb=True`` in its data preprocessor, which
the ONNX export does not contain (rtmlib's own examples feed BGR to both; we do not).
Keypoints are in the source image's pixel coordinates; a person is a (133, 3) array of
(x, y, score). Indices: 0-16 COCO body, 17-22 feet, 23-90 face (68), 91-111 left hand,
112-132 right hand.
"""

from __future__ import annotations

import colorsys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from parts2whole.core.labels import FACE, HAIR, LOWER, SHOES, UPPER, WHOLE, canonical_label

from .images import ImageSource, flatten_alpha, load_image
from .sam import Click
from parts2whole.core.weights import hub_file

#: Hub repository of DWPose's ONNX models.
DWPOSE_REPO_ID = "yzd-v/DWPose"
#: Hub revision downloaded by default: a commit holding yolox_l.onnx and dw-ll_ucoco_384.onnx.
DWPOSE_REVISION = "1a7144101628d69ee7a3768d1ee3a094070dc388"
#: Person detector (YOLOX-L, COCO classes; class 0 is "person").
DETECTOR_FILE = "yolox_l.onnx"
#: Whole-body pose model (DWPose-L, 384x288 input).
POSE_FILE = "dw-ll_ucoco_384.onnx"
#: Subfolder of ``weights/`` holding the DWPose files.
DWPOSE_WEIGHTS_SUBFOLDER = "dwpose"
#: Detector input (height, width).
DETECTOR_INPUT_SIZE = (640, 640)
#: Pose model input (width, height), rtmlib's order.
POSE_INPUT_SIZE = (288, 384)
#: COCO class id of "person".
PERSON_CLASS = 0
#: Minimum detector score of a person box (DWPose's own value).
DETECTION_SCORE_THRESHOLD = 0.3
#: IoU above which overlapping person boxes are merged by NMS.
DETECTION_NMS_THRESHOLD = 0.45
#: Keypoints scored below this are not drawn and not used as seeds (DWPose's drawing threshold).
KEYPOINT_SCORE_THRESHOLD = 0.3
#: Number of COCO-WholeBody keypoints.
NUM_KEYPOINTS = 133

# Index ranges of the 133 COCO-WholeBody keypoints.
BODY = slice(0, 17)
FEET = slice(17, 23)
FACE_POINTS = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)

# COCO body indices used below.
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR = 0, 1, 2, 3, 4
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 5, 6, 7, 8, 9, 10
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 11, 12, 13, 14, 15, 16
LEFT_BIG_TOE, LEFT_SMALL_TOE, LEFT_HEEL, RIGHT_BIG_TOE, RIGHT_SMALL_TOE, RIGHT_HEEL = 17, 18, 19, 20, 21, 22
#: Face landmarks (0-based within the 68): chin, and the middle of the brows.
FACE_CHIN, FACE_BROW_LEFT_INNER, FACE_BROW_RIGHT_INNER = 8, 21, 22

#: OpenPose-18 body order, as COCO indices; ``None`` is the neck (mid-shoulders).
OPENPOSE18_FROM_COCO: tuple[int | None, ...] = (
    NOSE, None, RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST,
    RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE, LEFT_HIP, LEFT_KNEE, LEFT_ANKLE, RIGHT_EYE, LEFT_EYE, RIGHT_EAR, LEFT_EAR,
)
#: The 17 limbs OpenPose draws, as pairs of OpenPose-18 indices.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
#: OpenPose's 18 body colours (RGB): limb i and keypoint i use colour i.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
#: Limbs are drawn at this fraction of their colour's brightness (OpenPose's 0.6 blend on black).
LIMB_BRIGHTNESS = 0.6
#: The 20 hand bones, as pairs of the 21 hand keypoints (wrist = 0, then 4 per finger).
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_POINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)
#: Stroke sizes at :data:`REFERENCE_SIDE` px (short side); they scale with the map.
REFERENCE_SIDE = 512
LIMB_WIDTH, BODY_POINT_RADIUS, HAND_LINE_WIDTH, HAND_POINT_RADIUS, FACE_POINT_RADIUS = 4, 4, 2, 4, 3


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PoseResult:
    """People found in one image: ``people`` is (N, 133, 3) of (x, y, score) in image pixels."""

    width: int
    height: int
    people: np.ndarray

    @property
    def found(self) -> bool:
        return len(self.people) > 0

    def to_json(self) -> dict:
        """JSON-serialisable form: sizes, keypoint format and per person 133 [x, y, score]."""
        return {
            "format": "coco-wholebody-133",
            "width": self.width,
            "height": self.height,
            "people": [{"keypoints": np.round(person, 3).tolist()} for person in self.people],
        }

    @classmethod
    def from_json(cls, data: dict) -> PoseResult:
        people = np.array([person["keypoints"] for person in data["people"]], dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        return cls(width=int(data["width"]), height=int(data["height"]), people=people)

    def main_person(self) -> np.ndarray | None:
        """The person with the largest box of confident body keypoints (the portrait's subject)."""
        best, best_area = None, -1.0
        for person in self.people:
            confident = person[BODY][person[BODY, 2] >= KEYPOINT_SCORE_THRESHOLD]
            if len(confident) == 0:
                continue
            spread = confident[:, :2].max(axis=0) - confident[:, :2].min(axis=0)
            area = float(spread[0] * spread[1]) + len(confident)
            if area > best_area:
                best, best_area = person, area
        return best


# --- estimation -----------------------------------------------------------------------------------


class WholeBodyPoseEstimator:
    """DWPose through rtmlib: person boxes from YOLOX, then 133 keypoints per box.

    Thread-safe for inference (onnxruntime sessions are). Use :meth:`from_hub` for the released files.
    """

    def __init__(self, detector_path: str | Path, pose_path: str | Path, *, device: str = "cpu") -> None:
        from rtmlib import YOLOX, RTMPose  # heavy: imported on first use, keeps importing this package light

        self.detector = YOLOX(
            str(detector_path),
            model_input_size=DETECTOR_INPUT_SIZE,
            det_mode="multiclass",
            nms_thr=DETECTION_NMS_THRESHOLD,
            score_thr=DETECTION_SCORE_THRESHOLD,
            backend="onnxruntime",
            device=device,
        )
        self.pose_model = RTMPose(str(pose_path), model_input_size=POSE_INPUT_SIZE, backend="onnxruntime", device=device)

    @classmethod
    def from_hub(cls, *, revision: str = DWPOSE_REVISION, device: str = "cpu") -> WholeBodyPoseEstimator:
        detector = hub_file(DWPOSE_REPO_ID, DETECTOR_FILE, revision=revision, subfolder=DWPOSE_WEIGHTS_SUBFOLDER)
        pose = hub_file(DWPOSE_REPO_ID, POSE_FILE, revision=revision, subfolder=DWPOSE_WEIGHTS_SUBFOLDER)
        return cls(detector, pose, device=device)

    def detect_people(self, bgr: np.ndarray) -> np.ndarray:
        """Person boxes (N, 4) as x0, y0, x1, y1 in image pixels."""
        boxes, classes = self.detector(bgr)
        boxes, classes = np.asarray(boxes, dtype=np.float32), np.asarray(classes)
        if boxes.size == 0:
            return np.zeros((0, 4), dtype=np.float32)
        return boxes.reshape(-1, 4)[classes.reshape(-1) == PERSON_CLASS]

    def estimate(self, image: ImageSource) -> PoseResult:
        """Keypoints of every detected person in ``image`` (none when no person is detected)."""
        rgb = np.asarray(flatten_alpha(load_image(image, what="photo")))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        height, width = rgb.shape[:2]
        boxes = self.detect_people(bgr)
        if len(boxes) == 0:
            return PoseResult(width, height, np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32))
        keypoints, scores = self.pose_model(np.ascontiguousarray(rgb), bboxes=boxes.tolist())
        people = np.concatenate([keypoints, scores[..., None]], axis=-1).astype(np.float32)
        return PoseResult(width, height, people)


_default_estimator: WholeBodyPoseEstimator | None = None
_default_lock = threading.Lock()


def get_pose_estimator() -> WholeBodyPoseEstimator:
    """The process-wide estimator (downloads the DWPose files on first use)."""
    global _default_estimator
    with _default_lock:
        if _default_estimator is None:
            _default_estimator = WholeBodyPoseEstimator.from_hub()
        return _default_estimator


def estimate_pose(image: ImageSource, estimator: WholeBodyPoseEstimator | None = None) -> PoseResult:
    """DWPose keypoints of the people in ``image``."""
    return (estimator or get_pose_estimator()).estimate(image)


def pose_map_from_photo(image: ImageSource, size: tuple[int, int], estimator: WholeBodyPoseEstimator | None = None) -> tuple[Image.Image, PoseResult]:
    """OpenPose-style pose map of ``image`` at ``size`` = (height, width), and the keypoints it shows."""
    pose = estimate_pose(image, estimator)
    return render_pose_map(pose, size), pose


# --- rendering (our own, from the OpenPose conventions) -------------------------------------------


def openpose18_body(person: np.ndarray) -> np.ndarray:
    """(18, 3) OpenPose body keypoints from a (133, 3) COCO-WholeBody person; the neck is mid-shoulders."""
    body = np.zeros((18, 3), dtype=np.float32)
    for target, source in enumerate(OPENPOSE18_FROM_COCO):
        if source is None:
            left, right = person[LEFT_SHOULDER], person[RIGHT_SHOULDER]
            body[target, :2] = (left[:2] + right[:2]) / 2
            body[target, 2] = min(left[2], right[2])
        else:
            body[target] = person[source]
    return body


def _fit_transform(source_size: tuple[int, int], target_size: tuple[int, int]) -> tuple[float, float, float]:
    """Scale and offsets mapping source (w, h) into target (h, w) keeping the aspect, centred."""
    source_width, source_height = source_size
    target_height, target_width = target_size
    scale = min(target_width / source_width, target_height / source_height)
    return scale, (target_width - source_width * scale) / 2, (target_height - source_height * scale) / 2


def render_pose_map(pose: PoseResult, size: tuple[int, int], score_threshold: float = KEYPOINT_SCORE_THRESHOLD) -> Image.Image:
    """Draw every person of ``pose`` on black at ``size`` = (height, width).

    The image is fitted inside the map keeping its aspect (centred); strokes scale with the short
    side (OpenPose's sizes at 512 px). Body limbs and points in the 18 OpenPose colours, hands as
    rainbow bones with blue points, face landmarks as white dots.
    """
    height, width = int(size[0]), int(size[1])
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    scale, offset_x, offset_y = _fit_transform((pose.width, pose.height), (height, width))
    stroke = min(height, width) / REFERENCE_SIDE
    for person in pose.people:
        placed = person.copy()
        placed[:, 0] = person[:, 0] * scale + offset_x
        placed[:, 1] = person[:, 1] * scale + offset_y
        draw_body(canvas, openpose18_body(placed), score_threshold, stroke)
        for hand in (placed[LEFT_HAND], placed[RIGHT_HAND]):
            draw_hand(canvas, hand, score_threshold, stroke)
        draw_face(canvas, placed[FACE_POINTS], score_threshold, stroke)
    return Image.fromarray(canvas)


def _px(value: float, stroke: float) -> int:
    return max(1, int(round(value * stroke)))


def draw_body(canvas: np.ndarray, body: np.ndarray, score_threshold: float, stroke: float = 1.0) -> None:
    """Draw an (18, 3) OpenPose body on an RGB uint8 canvas in place."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    half_width = _px(LIMB_WIDTH, stroke)
    for index, (start, end) in enumerate(OPENPOSE_LIMBS):
        if body[start, 2] < score_threshold or body[end, 2] < score_threshold:
            continue
        (x0, y0), (x1, y1) = body[start, :2], body[end, :2]
        centre = (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2)))
        half_length = int(round(np.hypot(x1 - x0, y1 - y0) / 2))
        angle = int(round(np.degrees(np.arctan2(y1 - y0, x1 - x0))))
        polygon = cv2.ellipse2Poly(centre, (half_length, half_width), angle, 0, 360, 1)
        color = tuple(int(round(channel * LIMB_BRIGHTNESS)) for channel in OPENPOSE_COLORS[index])
        cv2.fillConvexPoly(canvas, polygon, color)
    radius = _px(BODY_POINT_RADIUS, stroke)
    for index, (x, y, score) in enumerate(body):
        if score >= score_threshold:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, OPENPOSE_COLORS[index], thickness=-1)


def hand_edge_color(index: int) -> tuple[int, int, int]:
    """Colour of hand bone ``index``: hues spread evenly over the 20 bones, full saturation."""
    red, green, blue = colorsys.hsv_to_rgb(index / len(HAND_EDGES), 1.0, 1.0)
    return int(round(red * 255)), int(round(green * 255)), int(round(blue * 255))


def draw_hand(canvas: np.ndarray, hand: np.ndarray, score_threshold: float, stroke: float = 1.0) -> None:
    """Draw a (21, 3) hand on an RGB uint8 canvas in place."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    thickness = _px(HAND_LINE_WIDTH, stroke)
    for index, (start, end) in enumerate(HAND_EDGES):
        if hand[start, 2] < score_threshold or hand[end, 2] < score_threshold:
            continue
        point0 = (int(round(hand[start, 0])), int(round(hand[start, 1])))
        point1 = (int(round(hand[end, 0])), int(round(hand[end, 1])))
        cv2.line(canvas, point0, point1, hand_edge_color(index), thickness=thickness)
    radius = _px(HAND_POINT_RADIUS, stroke)
    for x, y, score in hand:
        if score >= score_threshold:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, HAND_POINT_COLOR, thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray, score_threshold: float, stroke: float = 1.0) -> None:
    """Draw (68, 3) face landmarks as white dots on an RGB uint8 canvas in place."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    radius = _px(FACE_POINT_RADIUS, stroke)
    for x, y, score in face:
        if score >= score_threshold:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, FACE_POINT_COLOR, thickness=-1)


# --- SAM seeds ------------------------------------------------------------------------------------


def _confident(person: np.ndarray, indices, threshold: float) -> list[tuple[float, float]]:
    return [(float(person[i, 0]), float(person[i, 1])) for i in indices if person[i, 2] >= threshold]


def _midpoints(person: np.ndarray, pairs, threshold: float) -> list[tuple[float, float]]:
    points = []
    for first, second in pairs:
        if person[first, 2] >= threshold and person[second, 2] >= threshold:
            points.append((float((person[first, 0] + person[second, 0]) / 2), float((person[first, 1] + person[second, 1]) / 2)))
    return points


def _top_of_head(person: np.ndarray, threshold: float) -> list[tuple[float, float]]:
    """A point above the brows by half the brow-to-chin distance: hair or headwear is there."""
    brow_left, brow_right = FACE_POINTS.start + FACE_BROW_LEFT_INNER, FACE_POINTS.start + FACE_BROW_RIGHT_INNER
    chin = FACE_POINTS.start + FACE_CHIN
    if min(person[brow_left, 2], person[brow_right, 2], person[chin, 2]) < threshold:
        return []
    brow = (person[brow_left, :2] + person[brow_right, :2]) / 2
    up = brow - person[chin, :2]
    point = brow + 0.5 * up
    return [(float(point[0]), float(point[1]))]


def seed_points_for_part(person: np.ndarray, label: str, score_threshold: float = KEYPOINT_SCORE_THRESHOLD) -> tuple[Click, ...]:
    """SAM prompt clicks for part ``label`` from one person's (133, 3) keypoints.

    Positives lie on the part (face: nose and eyes; hair: above the brows; upper: mid-shoulders and
    torso centre; lower: mid-thighs; whole: torso centre and mid-thighs; shoes: toes and heels).
    Clothes also get a negative click on the nose so SAM does not select the whole person; shoes
    get negatives on the knees. Returns ``()`` when the needed keypoints are not confident.
    """
    part = canonical_label(label)
    person = np.asarray(person, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)
    positives: list[tuple[float, float]] = []
    negatives: list[tuple[float, float]] = []
    torso_centre = _midpoints(person, [(LEFT_SHOULDER, RIGHT_HIP), (RIGHT_SHOULDER, LEFT_HIP)], score_threshold)[:1]
    thighs = _midpoints(person, [(LEFT_HIP, LEFT_KNEE), (RIGHT_HIP, RIGHT_KNEE)], score_threshold)
    if part == FACE:
        positives = _confident(person, (NOSE, LEFT_EYE, RIGHT_EYE), score_threshold)
    elif part == HAIR:
        positives = _top_of_head(person, score_threshold)
        negatives = _confident(person, (NOSE,), score_threshold)
    elif part == UPPER:
        positives = _midpoints(person, [(LEFT_SHOULDER, RIGHT_SHOULDER)], score_threshold) + torso_centre
        negatives = _confident(person, (NOSE,), score_threshold)
    elif part == LOWER:
        positives = thighs
        negatives = _confident(person, (NOSE,), score_threshold)
    elif part == WHOLE:
        positives = torso_centre + thighs
        negatives = _confident(person, (NOSE,), score_threshold)
    elif part == SHOES:
        positives = _confident(person, (LEFT_BIG_TOE, LEFT_HEEL, RIGHT_BIG_TOE, RIGHT_HEEL), score_threshold)
        negatives = _confident(person, (LEFT_KNEE, RIGHT_KNEE), score_threshold)
    if not positives:
        return ()
    return tuple(Click(x, y, True) for x, y in positives) + tuple(Click(x, y, False) for x, y in negatives)
