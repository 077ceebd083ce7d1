"""Photo examples from the dataset's test split (parts2whole.examples), on a local stand-in in the real layout.

No network: the stand-in (tests/examples_standin.py) has the two jsonl files and the zips with the real member
naming, plus many filler members, and is served through an fsspec file system that records every byte read.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from examples_standin import CountingFileSystem, RemoteLikeFileSystem, build_standin, densepose_map
from parts2whole import examples


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin-dataset")
    build_standin(root)
    return root


def _copy(standin: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "dataset"
    shutil.copytree(standin, copy)
    return copy


def _samples(root: Path) -> list[examples.Sample]:
    samples, notes = examples.parse_index((root / examples.TEST_INDEX).read_text())
    assert not notes
    return samples


def test_selection_is_deterministic_and_varied(standin):
    samples = _samples(standin)
    chosen = examples.select_examples(samples)
    lines = (standin / examples.TEST_INDEX).read_text().splitlines()
    random.Random(3).shuffle(lines)
    shuffled, _ = examples.parse_index("\n".join(lines))
    assert [s.target_id for s in examples.select_examples(shuffled)] == [s.target_id for s in chosen]
    assert len(chosen) == examples.DEFAULT_EXAMPLE_COUNT == len({s.target_id for s in chosen})
    found = [s.attributes for s in chosen]
    assert {a["gender"] for a in found} == {"man", "woman"}
    assert {"dress", "top+bottom"} <= {a["outfit"] for a in found}
    assert {"front", "side", "back"} <= {a["view"] for a in found}
    assert {"yes", "no"} == {a["shoes"] for a in found}
    assert {"yes", "no"} == {a["hair"] for a in found}
    # The pose candidates spread over the views and leave the examples' own targets out.
    candidates = examples.pose_candidates(samples, 30, exclude=[s.target_id for s in chosen])
    assert len(candidates) == 30 and not {s.target_id for s in candidates} & {s.target_id for s in chosen}
    assert {s.attributes["view"] for s in candidates} == {"front", "side", "back", "full", "additional"}


def test_densepose_descriptor_tells_facing_and_arms():
    front_up = examples.describe_densepose(densepose_map("front", arms_up=True))
    assert (front_up.facing, front_up.arms) == ("front", "raised")
    back_down = examples.describe_densepose(densepose_map("back", arms_up=False))
    assert (back_down.facing, back_down.arms) == ("back", "down")
    assert examples.describe_densepose(densepose_map("side", arms_up=False)).facing == "side"
    assert examples.describe_densepose(Image.new("RGB", (32, 48))).facing == "unknown"


def _member_data_ranges(archive: Path, skip: str) -> list[tuple[int, int]]:
    """Byte ranges holding the data of the filler members (which no fetch may touch)."""
    ranges = []
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            if skip in info.filename:
                start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
                # A member's read may run LOCAL_HEADER_SLACK bytes into the next one (local extra fields).
                ranges.append((start + examples.LOCAL_HEADER_SLACK, start + info.compress_size))
    return ranges


def test_fetch_reads_only_the_wanted_members(standin, tmp_path):
    fs = CountingFileSystem()
    manifest = examples.fetch_examples(fs, str(standin), cache_root=tmp_path / "cache")
    assert len(manifest.examples) == examples.DEFAULT_EXAMPLE_COUNT
    assert len(manifest.poses) == examples.DEFAULT_POSE_COUNT and not manifest.notes
    transfer = manifest.transfer
    assert transfer["bytes_read"] == fs.bytes_read  # the manifest counts what the file system served
    archive_sizes = {path.name: path.stat().st_size for path in standin.glob("*.zip")}
    assert set(transfer["archives"]) == set(archive_sizes)  # every zip is read, none whole
    for name, item in transfer["archives"].items():
        assert item["archive_bytes"] == archive_sizes[name]
        assert fs.bytes_of(name) == item["bytes_read"] < 0.05 * archive_sizes[name], name
    assert fs.bytes_of(examples.TEST_INDEX) == (standin / examples.TEST_INDEX).stat().st_size
    for name in archive_sizes:
        fillers = _member_data_ranges(standin / name, "FILLER")
        read = [(start, end) for path, start, end in fs.ranges if Path(path).name == name]
        assert not [r for r in read for f in fillers if r[0] < f[1] and f[0] < r[1]], f"{name}: a filler was read"
    # What the cache holds: every file the manifest names, the real photo, a caption as the prompt.
    folder = examples.cache_folder(examples.DATASET_REVISION, tmp_path / "cache")
    data = json.loads((folder / examples.MANIFEST_NAME).read_text())
    assert data["dataset"] == examples.DATASET_ID and data["revision"] == examples.DATASET_REVISION
    assert data["transfer"]["bytes_read"] == fs.bytes_read
    first = manifest.examples[0]
    assert first.prompt.startswith("This person wears") and Path(manifest.path(first.target)).is_file()
    assert set(first.parts) == set(first.masks) and first.sample_id.endswith("_front")
    with Image.open(manifest.path(first.pose)) as pose:
        assert pose.mode == "RGB" and pose.getextrema()[2][1] <= 24  # the IUV map as it is (I in blue)


def test_buffered_remote_files_fetch_only_the_ranges_asked(standin, tmp_path):
    """The Hub path: HfFileSystem files are fsspec buffered files (5 MB read-ahead by default); the fetcher
    opens them without read-ahead, so each read is exactly one range request."""
    fs = RemoteLikeFileSystem()
    manifest = examples.fetch_examples(fs, str(standin), cache_root=tmp_path / "cache")
    assert len(manifest.examples) == 8 and fs.bytes_fetched == manifest.transfer["bytes_read"]
    for name, item in manifest.transfer["archives"].items():
        fetched = sum(end - start for path, start, end in fs.fetches if Path(path).name == name)
        assert fetched == item["bytes_read"] < 0.05 * item["archive_bytes"], name
        assert item["requests"] == len([f for f in fs.fetches if Path(f[0]).name == name])
    with fs.open(str(standin / "face.zip"), "rb") as default:  # what a plain open would have cost
        default.read(100)
    assert fs.fetches[-1][2] - fs.fetches[-1][1] > 1_000_000


def test_second_start_uses_the_cache_without_reading(standin, tmp_path):
    cache = tmp_path / "cache"
    first = examples.fetch_examples(CountingFileSystem(), str(standin), cache_root=cache)
    again_fs = CountingFileSystem()
    again = examples.fetch_examples(again_fs, str(standin), cache_root=cache)
    assert again_fs.ranges == [] and again_fs.opened == []
    assert [e.sample_id for e in again.examples] == [e.sample_id for e in first.examples]
    calls = []
    library = examples.ExampleLibrary(cache_root=cache, file_system=lambda revision: calls.append(revision))
    library.start_background_fetch()
    snapshot = library.wait(5)
    assert snapshot.state == examples.STATE_CACHED and calls == [] and len(snapshot.manifest.examples) == 8


def _damage_member(archive: Path, member_suffix: str) -> str:
    """Flip bytes inside the stored data of the first member ending with `member_suffix` (CRC now wrong)."""
    with zipfile.ZipFile(archive) as bundle:
        info = next(i for i in bundle.infolist() if i.filename.endswith(member_suffix) and "FILLER" not in i.filename)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for offset in range(start + 10, start + 40):
        data[offset] ^= 0xFF
    archive.write_bytes(bytes(data))
    return info.filename


def _drop_member(archive: Path, member: str) -> None:
    with zipfile.ZipFile(archive) as bundle:
        items = [(info, bundle.read(info)) for info in bundle.infolist() if info.filename != member]
    with zipfile.ZipFile(archive, "w") as bundle:
        for info, payload in items:
            bundle.writestr(info, payload)


def test_damaged_or_missing_member_drops_its_example_with_a_clear_note(standin, tmp_path):
    root = _copy(standin, tmp_path)
    chosen = examples.select_examples(_samples(root))
    damaged = chosen[0].parts["face"]
    _damage_member(root / "face.zip", damaged)
    missing = chosen[1].target
    _drop_member(root / "images.zip", missing)
    manifest = examples.fetch_examples(CountingFileSystem(), str(root), cache_root=tmp_path / "cache")
    ids = [e.sample_id for e in manifest.examples]
    assert chosen[0].target_id not in ids and chosen[1].target_id not in ids and len(ids) == 6
    notes = " ".join(manifest.notes)
    assert f"example {chosen[0].target_id} skipped" in notes and "damaged" in notes and damaged in notes
    assert f"{missing} is not in images.zip" in notes
    assert "Traceback" not in notes


def test_unreadable_dataset_gives_one_note_and_the_drawn_examples(standin, tmp_path, caplog):
    from parts2whole.ui import galleries

    root = _copy(standin, tmp_path)
    (root / examples.TEST_INDEX).unlink()
    library = examples.ExampleLibrary(cache_root=tmp_path / "cache",
                                      file_system=lambda revision: (CountingFileSystem(), str(root)))
    assert library.snapshot().state == examples.STATE_FETCHING  # the drawn examples meanwhile
    with caplog.at_level(logging.WARNING, logger="parts2whole.examples"):
        library.start_background_fetch()
        snapshot = library.wait(30)
    assert snapshot.state == examples.STATE_FAILED and snapshot.manifest is None
    assert "test.jsonl is not in the dataset" in snapshot.note and "\n" not in snapshot.note
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1  # logged once
    content = galleries.shown_content(snapshot)
    assert not content["photos"] and [e.title for e in content["examples"]] == [e.title for e in galleries.load_examples()]
    assert len(content["poses"]) == len(content["examples"]) and all(p["path"].endswith("pose.png") for p in content["poses"])


class _DroppingFileSystem(CountingFileSystem):
    """The connection drops while one archive is read."""

    def record(self, path, start, end):
        super().record(path, start, end)
        if Path(path).name == "shoes.zip" and self.bytes_of("shoes.zip") > 20_000:
            raise ConnectionError("connection reset by peer")


def test_an_interrupted_transfer_caches_nothing_and_is_tried_again(standin, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(examples.ExampleFetchError, match="interrupted .*shoes.*ConnectionError"):
        examples.fetch_examples(_DroppingFileSystem(), str(standin), cache_root=cache)
    assert examples.load_manifest(examples.cache_folder(root=cache)) is None
    manifest = examples.fetch_examples(CountingFileSystem(), str(standin), cache_root=cache)  # the next start
    assert len(manifest.examples) == 8 and not manifest.notes


def test_every_example_damaged_is_a_failure_not_a_traceback(standin, tmp_path):
    root = _copy(standin, tmp_path)
    (root / "densepose.zip").write_bytes(b"not a zip at all" * 100)
    with pytest.raises(examples.ExampleFetchError, match="densepose.zip is not a readable zip archive"):
        examples.fetch_examples(CountingFileSystem(), str(root), cache_root=tmp_path / "cache")
    assert examples.load_manifest(examples.cache_folder(root=tmp_path / "cache")) is None


def test_offline_start_never_tries_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    library = examples.ExampleLibrary(cache_root=tmp_path / "cache", file_system=lambda revision: calls.append(1))
    library.start_background_fetch()
    snapshot = library.wait(1)
    assert snapshot.state == examples.STATE_OFFLINE and calls == []
    assert "HF_HUB_OFFLINE" in snapshot.note and "examples fetch" in snapshot.note
    with pytest.raises(examples.ExampleFetchError, match="HF_HUB_OFFLINE"):
        examples.hub_file_system()


def test_background_fetch_swaps_the_photo_examples_in(standin, tmp_path):
    import gradio as gr

    from parts2whole.ui import galleries

    library = examples.ExampleLibrary(cache_root=tmp_path / "cache",
                                      file_system=lambda revision: (CountingFileSystem(), str(standin)))
    refresh = galleries.make_examples_refresh(library)
    before = galleries.shown_content(library.snapshot())
    assert not before["photos"]
    library.start_background_fetch()
    assert library.wait(60).state == examples.STATE_CACHED
    gallery, note, poses, content, timer = refresh(before)
    assert content["photos"] and len(gallery["value"]) == 8 and len(poses["value"]) == 24
    assert "real photo" in gallery["value"][0][1] and "ground truth" in note["value"]
    assert timer.active is False  # nothing left to wait for
    assert refresh(content)[0] is not None and refresh(content)[3] == gr.skip()  # unchanged: nothing sent


def test_bundle_and_masks_trace_inputs_to_their_dataset_sample(standin, tmp_path):
    from parts2whole.studio import mask_coverage
    from parts2whole.ui.bundle import dataset_sources
    from parts2whole.ui.pose import dataset_pose_note
    from preprocess.images import load_image, load_mask

    manifest = examples.fetch_examples(CountingFileSystem(), str(standin), cache_root=tmp_path / "cache")
    examples.register_manifest(manifest)
    example, pose = manifest.examples[2], manifest.poses[5]
    face = load_image(manifest.path(example.parts["face"]))
    assert examples.dataset_mask_path(face) == manifest.path(example.masks["face"])
    loaded = load_mask(examples.dataset_mask_path(face), face.size).mask
    assert loaded.mode == "L" and 0 < mask_coverage(loaded) < 1
    details = dataset_sources({"face": face}, load_image(manifest.path(pose.pose)))
    assert details["dataset_sources"]["face"]["sample"] == example.sample_id
    assert details["dataset_sources"]["pose"]["sample"] == pose.sample_id
    assert pose.sample_id in details["pose_source"] and examples.DATASET_ID in details["pose_source"]
    assert pose.sample_id in dataset_pose_note(load_image(manifest.path(pose.pose)))
    assert dataset_sources({"face": Image.new("RGB", (20, 30))}, None) == {}


def test_cli_fetches_lists_and_reports_bytes(standin, tmp_path, capsys):
    from parts2whole import cli

    cache = tmp_path / "cache"
    assert cli.main(["examples", "list", "--cache", str(cache)]) == 0
    assert "No photo examples cached" in capsys.readouterr().out
    assert cli.main(["examples", "fetch", "--source", str(standin), "--cache", str(cache), "--count", "4",
                     "--poses", "6"]) == 0
    out = capsys.readouterr().out
    assert "4 examples:" in out and "6 poses:" in out and "MB per example" in out and "face.zip" in out
    assert cli.main(["examples", "list", "--cache", str(cache)]) == 0
    listed = capsys.readouterr().out
    assert examples.DATASET_ID in listed and "largest share of one archive" in listed
    assert cli.main(["examples", "fetch", "--source", str(tmp_path / "nowhere"), "--cache", str(cache)]) == 2
    assert "no such folder" in capsys.readouterr().err
    broken = _copy(standin, tmp_path)
    (broken / examples.TEST_INDEX).unlink()
    assert cli.main(["examples", "fetch", "--source", str(broken), "--cache", str(tmp_path / "other")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m parts2whole examples fetch: failed:") and "test.jsonl" in err[-1]
