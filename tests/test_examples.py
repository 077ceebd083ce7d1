"""Photo examples from the dataset's test split (parts2whole.examples), on a local stand-in in the real layout.

No network: the stand-in (tests/examples_standin.py) has the two jsonl files and the zips with the real member
naming, plus many filler members, and is served through an fsspec file system that records every byte read.
"""

from __future__ import annotations

import json
import logging
import random
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from examples_standin import (BLANK_MAPS, NEAR_BLANK_MAPS, ZIP64_ARCHIVES, CountingFileSystem, RemoteLikeFileSystem,
                              copy_standin, densepose_map, standin_root)
from parts2whole import examples
from parts2whole.core.dataset_layout import MIN_PART_COVERAGE, PART_FOLDERS
from preprocess.images import load_image, load_mask, mask_coverage


@pytest.fixture(scope="module")
def standin() -> Path:
    """The stand-in dataset, built once per session (read-only: change a `_copy`)."""
    return standin_root()[0]


@pytest.fixture(scope="module")
def truth() -> dict:
    """What each stand-in line really shows ({target id: outfit_text, gender, visible, map, webp, view})."""
    return standin_root()[1]["truth"]


def _copy(standin: Path, tmp_path: Path, *writable: str) -> Path:
    return copy_standin(standin, tmp_path / "dataset", writable)


def _samples(root: Path) -> list[examples.Sample]:
    samples, notes = examples.parse_index((root / examples.TEST_INDEX).read_text())
    assert not notes
    return samples


#: Captions in DeepFashion-MultiModal's style, with the outfit a title must say.
CAPTIONS = [
    ("This person is wearing a short-sleeve shirt with graphic patterns. The shirt is with cotton fabric. It has a "
     "round neckline. The pants this person wears is of short length. The pants are with cotton fabric and pure "
     "color patterns. There is a hat in his head.", "Denim", ("top+bottom", "shorts", "short-sleeve shirt and shorts", True)),
    ("The lady wears a sleeveless tank top with pure color patterns. The tank top is with cotton fabric. The "
     "trousers this lady wears is of long length.", "Tees_Tanks", ("top+bottom", "trousers", "sleeveless tank top and trousers", False)),
    ("Her long-sleeve dress is with chiffon fabric and floral patterns. She is dressed for a party.", "Blouses_Shirts",
     ("one-piece", "", "dress", False)),
    ("This woman wears a short-sleeve T-shirt with pure color patterns. She wears overalls with denim fabric.",
     "Denim", ("one-piece", "", "short-sleeve T-shirt and overalls", False)),
    ("The female wears a blouse. The skirt this female wears is of three-point length.", "Blouses_Shirts",
     ("top+bottom", "skirt", "blouse and skirt", False)),
    ("She wears a ring and a bracelet.", "Rompers_Jumpsuits", ("one-piece", "", "jumpsuit", False)),
    ("She wears a ring and a bracelet.", "Graphic_Tees", ("unknown", "", "outfit", False)),
    ("She wears a ring and a beanie.", "Skirts", ("top+bottom", "skirt", "top and skirt", True)),
    # Only "the lower clothing": a dress in a photo sold as a dress, else trousers or shorts by its length.
    ("The lady wears a sleeveless tank top. The lower clothing is of long length.", "Dresses", ("one-piece", "", "dress", False)),
    ("The lady wears a sleeveless tank top. The lower clothing is of long length.", "Tees_Tanks",
     ("top+bottom", "trousers", "sleeveless tank top and trousers", False)),
    ("His lower clothing is of medium short length.", "Denim", ("top+bottom", "shorts", "top and shorts", False)),
]


@pytest.mark.parametrize("caption,category,expected", CAPTIONS)
def test_the_outfit_comes_from_the_caption_then_the_category(caption, category, expected):
    outfit = examples.describe_outfit(caption, category)
    assert (outfit.kind, outfit.bottom, outfit.text, outfit.headwear) == expected


def test_id_and_caption_give_gender_category_and_view():
    found = examples.describe_id("MEN-Denim-id_00000265-01_1_front")
    assert found == {"gender": "man", "category": "Denim", "person": "id_00000265-01", "view": "front"}
    assert examples.describe_id("some-other-name", "There is a hat in his head.")["gender"] == "man"
    assert examples.describe_id("some-other-name", "The lady wears a dress.")["gender"] == "woman"
    assert examples.describe_id("x")["view"] == "unknown"


def test_candidates_are_deterministic_varied_and_bounded(standin):
    samples = _samples(standin)
    candidates = examples.example_candidates(samples)
    lines = (standin / examples.TEST_INDEX).read_text().splitlines()
    random.Random(3).shuffle(lines)
    shuffled, _ = examples.parse_index("\n".join(lines))
    assert [s.target_id for s in examples.example_candidates(shuffled)] == [s.target_id for s in candidates]
    assert len(candidates) == examples.EXAMPLE_CANDIDATE_FACTOR * examples.DEFAULT_EXAMPLE_COUNT
    assert len({s.target_id for s in candidates}) == len(candidates)
    found = [s.attributes for s in candidates]
    assert {a["gender"] for a in found} == {"man", "woman"}
    assert {a["outfit"] for a in found} == {"one-piece", "top+bottom"}
    assert {"trousers", "shorts", "skirt"} <= {a["bottom"] for a in found}
    assert {"front", "side", "back", "full"} <= {a["view"] for a in found}
    # Every line lists all six labels: the labels say nothing, so a man in shorts is never a "dress".
    assert all(set(s.parts) == set(PART_FOLDERS) for s in samples)
    shorts = next(s for s in samples if s.target_id.startswith("MEN-Denim"))
    assert shorts.attributes["outfit"] == "top+bottom" and shorts.attributes["bottom"] == "shorts"
    # The pose candidates spread over the views and leave the examples' own targets out.
    chosen = examples.select_examples(samples)
    pose_candidates = examples.pose_candidates(samples, 30, exclude=[s.target_id for s in chosen])
    assert len(pose_candidates) == 30 and not {s.target_id for s in pose_candidates} & {s.target_id for s in chosen}
    assert {s.attributes["view"] for s in pose_candidates} == {"front", "side", "back", "full", "additional"}


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


def _touched_members(archive: Path, ranges: list[tuple[int, int]]) -> dict[str, int]:
    """{member: reads starting inside it} of the non-filler members that `ranges` read (a read of a member
    starts at its local header and may run a little into the next one)."""
    touched = {}
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            end = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size
            hits = sum(1 for r in ranges if info.header_offset <= r[0] < end)
            if hits and "FILLER" not in info.filename:
                touched[info.filename] = hits
    return touched


def test_fetch_reads_only_the_wanted_members(standin, tmp_path):
    fs = CountingFileSystem()
    manifest = examples.fetch_examples(fs, str(standin), cache_root=tmp_path / "cache")
    assert len(manifest.examples) == examples.DEFAULT_EXAMPLE_COUNT
    assert len(manifest.poses) == examples.DEFAULT_POSE_COUNT
    transfer = manifest.transfer
    assert transfer["bytes_read"] == fs.bytes_read  # the manifest counts what the file system served
    archive_sizes = {path.name: path.stat().st_size for path in standin.glob("*.zip")}
    assert set(transfer["archives"]) == set(archive_sizes) - {"openpose.zip"}  # never openpose, none whole
    wanted = examples.EXAMPLE_CANDIDATE_FACTOR * examples.DEFAULT_EXAMPLE_COUNT
    for name, item in transfer["archives"].items():
        assert item["archive_bytes"] == archive_sizes[name] and fs.bytes_of(name) == item["bytes_read"], name
        fillers = _member_data_ranges(standin / name, "FILLER")
        read = [(start, end) for path, start, end in fs.ranges if Path(path).name == name]
        assert not [r for r in read for f in fillers if r[0] < f[1] and f[0] < r[1]], f"{name}: a filler was read"
        touched = _touched_members(standin / name, read)
        assert all(hits == 1 for hits in touched.values()), f"{name}: a member took several reads"
        masks = [m for m in touched if m.endswith("_mask.jpg")]
        assert len(masks) <= wanted, f"{name}: {len(masks)} candidate masks read"  # bounded: ~3x the sets
        assert item["requests"] <= len(touched) + 3, name  # the tail, the directory, one read per member
    # The archives are as large as the real ones (sparse files), so the share read of each is measured
    # against a real size; in the ZIP64 ones, members past 4 GiB were read.
    assert all(item["share"] < 1e-3 for item in transfer["archives"].values())
    for name in ZIP64_ARCHIVES:
        assert archive_sizes[name] > 2**32
        assert any(start > 2**32 for path, start, _ in fs.ranges if Path(path).name == name), name
    assert fs.bytes_of(examples.TEST_INDEX) == (standin / examples.TEST_INDEX).stat().st_size
    # What the cache holds: every file the manifest names, the real photo, a caption as the prompt.
    folder = examples.cache_folder(examples.DATASET_REVISION, tmp_path / "cache")
    data = json.loads((folder / examples.MANIFEST_NAME).read_text())
    assert data["dataset"] == examples.DATASET_ID and data["revision"] == examples.DATASET_REVISION
    assert data["transfer"]["bytes_read"] == fs.bytes_read
    first = manifest.examples[0]
    assert "wear" in first.prompt and Path(manifest.path(first.target)).is_file()
    assert set(first.parts) == set(first.masks) and first.sample_id.endswith("_front")
    with Image.open(manifest.path(first.pose)) as pose:
        assert pose.mode == "RGB" and pose.getextrema()[2][1] <= 24  # the IUV map as it is (I in blue)


def test_fetch_offers_true_titles_no_empty_part_and_no_blank_map(standin, truth, tmp_path, capsys):
    """Every line lists six labels, some masks are all black, some maps blank: what is offered is what is
    there, each title says the outfit the caption describes, and one note says what was skipped."""
    from parts2whole import cli

    cache = tmp_path / "cache"
    manifest = examples.fetch_examples(CountingFileSystem(), str(standin), cache_root=cache)
    assert len(manifest.examples) == 8 and len(manifest.poses) == 24
    blank = {row["target_id"] for number, row in enumerate(standin_root()[1]["samples"])
             if number in BLANK_MAPS | NEAR_BLANK_MAPS}
    for example in manifest.examples:
        about = truth[example.sample_id]
        assert list(example.parts) == about["visible"] and set(example.masks) == set(example.parts)
        for label, relative in example.masks.items():
            assert mask_coverage(load_mask(manifest.path(relative)).mask) >= MIN_PART_COVERAGE, (example.sample_id, label)
        assert about["map"] == "ok" and example.sample_id not in blank
        who = {"man": "Man", "woman": "Woman"}[about["gender"]]
        assert example.title == f"{who} · {about['outfit_text']} · {about['view']} view"
        for relative in example.parts.values():  # WebP named .jpg in the dataset: cached as what it is
            assert Path(relative).suffix == (".webp" if about["webp"] else ".jpg")
            assert load_image(manifest.path(relative)).size[0] > 0
    assert not {pose.sample_id for pose in manifest.poses} & blank
    assert all(examples.body_share(load_image(manifest.path(p.pose))) > 0.05 for p in manifest.poses)
    titles = [e.title for e in manifest.examples]
    assert {"dress", "jumpsuit"} & {t.split(" · ")[1] for t in titles}  # one piece, and tops with each bottom
    assert all(any(t.split(" · ")[1].endswith(f"and {bottom}") for t in titles) for bottom in ("trousers", "shorts", "skirt"))
    assert {t.split(" · ")[0] for t in titles} == {"Man", "Woman"}
    assert {e.attributes["shoes"] for e in manifest.examples} == {"yes", "no"}
    assert {e.attributes["hair"] for e in manifest.examples} == {"yes", "no"}
    summary = [note for note in manifest.notes if note.startswith("skipped ")]
    assert len(summary) == 1 and "blank DensePose map" in summary[0] and "empty mask were not offered" in summary[0]
    assert cli.main(["examples", "list", "--cache", str(cache)]) == 0
    listed = capsys.readouterr().out
    assert all(f"{e.sample_id:<48} {e.title}; parts: {', '.join(e.parts)}" in listed for e in manifest.examples)


def test_buffered_remote_files_fetch_only_the_ranges_asked(standin, tmp_path):
    """The Hub path: HfFileSystem files are fsspec buffered files (5 MB read-ahead by default); the fetcher
    opens them without read-ahead, so each read is exactly one range request."""
    fs = RemoteLikeFileSystem()
    manifest = examples.fetch_examples(fs, str(standin), cache_root=tmp_path / "cache")
    assert len(manifest.examples) == 8 and fs.bytes_fetched == manifest.transfer["bytes_read"]
    assert max(manifest.transfer["archives"][name]["share"] for name in ZIP64_ARCHIVES) < 1e-4
    for name, item in manifest.transfer["archives"].items():
        fetched = sum(end - start for path, start, end in fs.fetches if Path(path).name == name)
        assert fetched == item["bytes_read"], name
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


def _drop_member(archive: Path, member: str) -> None:
    with zipfile.ZipFile(archive) as bundle:
        items = [(info, bundle.read(info)) for info in bundle.infolist() if info.filename != member]
    with zipfile.ZipFile(archive, "w") as bundle:
        for info, payload in items:
            bundle.writestr(info, payload)


def _damage_in_place(archive: Path, member: str) -> None:
    """Flip bytes inside the stored data of `member`, in place (the archive may be a sparse ZIP64 file)."""
    with zipfile.ZipFile(archive) as bundle:
        info = bundle.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    with open(archive, "r+b") as handle:
        handle.seek(start + 10)
        data = bytearray(handle.read(30))
        handle.seek(start + 10)
        handle.write(bytes(b ^ 0xFF for b in data))


def test_damaged_or_missing_members_are_named_and_replaced(standin, tmp_path):
    before = examples.fetch_examples(CountingFileSystem(), str(standin), cache_root=tmp_path / "first")
    chosen = {e.sample_id: e for e in before.examples}
    samples = {s.target_id: s for s in _samples(standin)}
    first, second, third = (samples[e.sample_id] for e in before.examples[:3])
    root = _copy(standin, tmp_path, "images.zip", "face.zip", "shoes.zip")
    damaged = first.target  # in a ZIP64 archive
    _damage_in_place(root / "images.zip", damaged)
    missing = second.parts["face"]
    _drop_member(root / "face.zip", missing)
    broken_mask = third.masks["shoes"]
    _damage_in_place(root / "shoes.zip", broken_mask)
    manifest = examples.fetch_examples(CountingFileSystem(), str(root), cache_root=tmp_path / "cache")
    ids = [e.sample_id for e in manifest.examples]
    assert len(ids) == 8 and not {first.target_id, second.target_id, third.target_id} & set(ids)  # replaced
    assert len(set(ids) - set(chosen)) == 3
    notes = " ".join(manifest.notes)
    assert f"example {first.target_id} skipped" in notes and "damaged" in notes and damaged in notes
    assert f"{missing} is not in face.zip" in notes and broken_mask in notes
    assert "Traceback" not in notes
    summary = [note for note in manifest.notes if note.startswith("skipped ")]
    assert len(summary) == 1 and "3 with a damaged or missing member" in summary[0]


def test_a_missing_part_archive_leaves_its_part_out_not_every_example(standin, tmp_path):
    root = _copy(standin, tmp_path)
    (root / "shoes.zip").unlink()  # a hard link of the stand-in's: the stand-in keeps its own
    manifest = examples.fetch_examples(CountingFileSystem(), str(root), cache_root=tmp_path / "cache")
    assert len(manifest.examples) == 8 and len(manifest.poses) == 24
    assert all("shoes" not in e.parts and e.attributes["shoes"] == "no" for e in manifest.examples)
    assert "shoes.zip is not in the dataset: its part is not offered" in manifest.notes


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
    assert len(manifest.examples) == 8 and [n for n in manifest.notes if not n.startswith("skipped ")] == []


def test_every_example_damaged_is_a_failure_not_a_traceback(standin, tmp_path):
    root = _copy(standin, tmp_path, "densepose.zip")
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
    example = next(e for e in manifest.examples[1:] if "face" in e.parts and Path(e.parts["face"]).suffix == ".webp")
    pose = manifest.poses[5]
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


def test_whole_body_slot_says_it_is_the_whole_outfit(capsys):
    """The dataset's whole-body crop is the whole outfit (top and bottom together, or a one-piece): the app's
    slot and the CLI's help say so, and --dress stays an alias."""
    import gradio as gr

    from parts2whole import cli
    from parts2whole.core.dataset_layout import WHOLE_OUTFIT_HINT
    from parts2whole.ui.slots import build_slot

    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--whole-body-clothes IMAGE, --dress IMAGE" in help_text and WHOLE_OUTFIT_HINT in help_text
    assert "top and bottom together" in WHOLE_OUTFIT_HINT and "not only dresses" in WHOLE_OUTFIT_HINT
    with gr.Blocks() as demo:
        build_slot("whole body clothes")
        build_slot("face")
    hints = [block.value for block in demo.blocks.values() if getattr(block, "elem_id", None) and
             block.elem_id.endswith("-hint")]
    assert hints == [WHOLE_OUTFIT_HINT]
