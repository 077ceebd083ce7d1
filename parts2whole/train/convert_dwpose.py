"""Render our own OpenPose-style pose maps (from DWPose keypoints) for the dataset's target images.

The released checkpoint reads DensePose maps; to teach it the maps the app draws from a photo, the
training maps must come from the same estimator and the same renderer (`preprocess.pose`). For every
target image this writes `dwpose/<target name>.png` (the map, at the target's size) and
`dwpose/<target name>.json` (the 133 keypoints per person, to re-render without re-estimating), and
a copy of the index with `structure["dwpose"]` added. Targets shared by several samples are estimated
once; existing maps are reused, so an interrupted run continues where it stopped. Samples whose
target shows no person are left out of the new index (and counted).

    python -m parts2whole.train.convert_dwpose --root data/DeepFashion-MultiModal-Parts2Whole --split train test
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from preprocess.pose import WholeBodyPoseEstimator, estimate_pose, render_pose_map

#: Folder (under the dataset root) and structure key of our maps.
DWPOSE_FOLDER = "dwpose"
DWPOSE_KEY = "dwpose"


class PoseEstimator(Protocol):
    """What the converter needs from `preprocess.pose.WholeBodyPoseEstimator` (tests pass a fake)."""

    def estimate(self, image): ...


@dataclass
class ConversionReport:
    samples_written: int = 0
    maps_rendered: int = 0
    maps_reused: int = 0
    samples_without_person: int = 0


def convert_index(root: str | Path, source_jsonl: str, output_jsonl: str, estimator: PoseEstimator | None = None, *,
                  folder: str = DWPOSE_FOLDER, key: str = DWPOSE_KEY, limit: int | None = None,
                  overwrite: bool = False) -> ConversionReport:
    """Write maps for the targets of `root/source_jsonl` and the index `root/output_jsonl` pointing at them."""
    root = Path(root)
    (root / folder).mkdir(parents=True, exist_ok=True)
    report = ConversionReport()
    without_person: set[str] = set()
    lines = [line for line in (root / source_jsonl).read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(root / output_jsonl, "w", encoding="utf-8") as output:
        for line in lines[:limit]:
            sample = json.loads(line)
            stem = Path(sample["target"]).stem
            map_path, keypoints_path = f"{folder}/{stem}.png", root / folder / f"{stem}.json"
            if stem in without_person:
                report.samples_without_person += 1
                continue
            if (root / map_path).is_file() and not overwrite:
                report.maps_reused += 1
            else:
                with Image.open(root / sample["target"]) as target:
                    target.load()
                    pose = estimate_pose(target, estimator)
                    if not pose.found:
                        without_person.add(stem)
                        report.samples_without_person += 1
                        continue
                    render_pose_map(pose, (target.height, target.width)).save(root / map_path)
                keypoints_path.write_text(json.dumps(pose.to_json()))
                report.maps_rendered += 1
            sample["structure"] = dict(sample.get("structure", {}), **{key: map_path})
            output.write(json.dumps(sample) + "\n")
            report.samples_written += 1
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render DWPose/OpenPose-style maps for DeepFashion-MultiModal-Parts2Whole.")
    parser.add_argument("--root", default="data/DeepFashion-MultiModal-Parts2Whole",
                        help="the dataset folder, or huanngzh/DeepFashion-MultiModal-Parts2Whole to download it first")
    parser.add_argument("--split", nargs="+", default=["train", "test"], help="index names: <split>.jsonl -> <split>_dwpose.jsonl")
    parser.add_argument("--device", default="cpu", help="onnxruntime device for DWPose: cpu or cuda")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N samples of each index")
    parser.add_argument("--overwrite", action="store_true", help="re-estimate maps that already exist")
    args = parser.parse_args(argv)
    # .dataset imports torch: loaded only for a real run, so `--help` stays light.
    from .dataset import resolve_dataset_root

    root = resolve_dataset_root(args.root)
    estimator = WholeBodyPoseEstimator.from_hub(device=args.device)
    for split in args.split:
        report = convert_index(root, f"{split}.jsonl", f"{split}_{DWPOSE_KEY}.jsonl", estimator,
                               limit=args.limit, overwrite=args.overwrite)
        print(f"{split}: {report}")


if __name__ == "__main__":
    main()
