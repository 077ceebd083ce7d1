"""`python -m parts2whole batch` / `parts2whole.batch.run`: manifests, resume, shared encodes, the Ray engine.

The generation tests run a 13-line manifest (3 part sets x 2 poses x 2 seeds, interleaved, plus a line whose
face file is missing) on the tiny model at 96x64 px, 2 steps. The Ray test runs it on a local Ray instance
with 2 CPUs and compares with the local engine. In CI (CI=true) a missing Ray fails that test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from app_fixtures import REPO_ROOT, WEIGHTS_DIR
from parts2whole import batch
from parts2whole.batch import store as batch_store
from parts2whole.cli import EXIT_BAD_INPUT, EXIT_OK, main

EXAMPLES = REPO_ROOT / "assets" / "examples"
PART_SETS = ("red-shirt-and-jeans", "hat-and-green-top", "summer-dress")
POSES = ("red-shirt-and-jeans", "summer-dress")  # two different pose maps
SEEDS = (1, 2)
#: Small and quick on the tiny model (the examples' pose maps are 2:3, so nothing is stretched).
HEIGHT, WIDTH, STEPS = 96, 64, 2
BAD_LINE = 7  # the missing face file sits in the middle of the manifest: the lines after it still run
#: The golden tolerance (float images, 0..1).
GOLDEN_ATOL = 1e-4


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _offline_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))


def _write_manifest(folder, rows, name="manifest.jsonl"):
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def lookbook(tmp_path_factory):
    """A manifest folder with its own copy of the parts (paths relative to the manifest) and 13 lines."""
    folder = tmp_path_factory.mktemp("lookbook")
    shutil.copytree(EXAMPLES, folder / "parts", ignore=shutil.ignore_patterns("*.jpg", "*.json"))
    rows = []
    for pose in POSES:
        for seed in SEEDS:
            for name in PART_SETS:  # interleaved: grouping by part set has work to do
                row = {stem.name.removesuffix(".png"): f"parts/{name}/{stem.name}"
                       for stem in sorted((folder / "parts" / name).glob("*.png")) if stem.name != "pose.png"}
                row.update(pose=f"parts/{pose}/pose.png", prompt=f"{name} on the {pose} pose", seed=seed,
                           height=HEIGHT, width=WIDTH, steps=STEPS)
                rows.append(row)
    bad = dict(rows[0], face="parts/nowhere/face.png", seed=9)
    rows.insert(BAD_LINE - 1, bad)
    return _write_manifest(folder, rows), folder / "parts" / "nowhere" / "face.png"


def _images(out_dir, results):
    return {row["id"]: np.asarray(Image.open(out_dir / row["outputs"][0]).convert("RGB"), dtype=np.float64) / 255
            for row in results if row["status"] == "ok"}


def _assert_same_images(first, second):
    """PNGs hold 8 bits: a float difference within the golden tolerance moves a value by one level at most,
    across a rounding boundary. So: never more than one level, and on average within the golden tolerance."""
    assert first.keys() == second.keys()
    for key in first:
        difference = np.abs(first[key] - second[key])
        assert difference.max() <= 1 / 255 + 1e-9, key
        assert difference.mean() <= GOLDEN_ATOL, key


@pytest.fixture(scope="module")
def local_run(lookbook, tmp_path_factory):
    manifest, _ = lookbook
    out_dir = tmp_path_factory.mktemp("local-out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
        patch.chdir(tmp_path_factory.mktemp("elsewhere"))  # paths are relative to the manifest, not here
        summary = batch.run(manifest, out_dir, weights="tiny", progress=True)
    return summary, out_dir


# --------------------------------------------------------------------------------------------- local engine


def test_local_engine_runs_every_line_records_the_bad_one_and_encodes_each_part_set_once(lookbook, local_run, capsys):
    manifest, missing_face = lookbook
    summary, out_dir = local_run
    results = list(batch.iter_results(out_dir))
    assert [row["line"] for row in results] == list(range(1, 14))
    ok = [row for row in results if row["status"] == "ok"]
    assert len(ok) == 12 and summary.ok == 12 and summary.lines == 13 and summary.generated == 12
    [bad] = [row for row in results if row["status"] == "error"]
    assert bad["line"] == BAD_LINE and not bad["outputs"]
    # the same message `generate` prints for this file
    code = main(["generate", "--face", str(missing_face), "--pose", str(EXAMPLES / "summer-dress" / "pose.png")])
    cli_line = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and cli_line.endswith(f"error: {bad['message']}"), (cli_line, bad)
    assert "does not exist" in bad["message"] and "nowhere" in bad["message"]
    # three part sets: three real reference encodes (studio cache misses), one per set
    assert summary.encodes == 3 == sum(row["encoded_references"] for row in results)
    for row in ok:
        parameters = json.loads((out_dir / f"{row['id']}.json").read_text())
        assert parameters["outputs"] == row["outputs"] == [f"{row['id']}.png"]
        assert (parameters["height"], parameters["width"], parameters["steps"]) == (HEIGHT, WIDTH, STEPS)
        assert parameters["tiny_model"] is True and parameters["batch"]["line"] == row["line"]
        assert Image.open(out_dir / row["outputs"][0]).size == (WIDTH, HEIGHT)
        assert all(os.path.isabs(path) and os.path.exists(path) for path in parameters["inputs"].values())
    # the line's seed and pose are what made the image: same seed, other pose -> another image
    images = _images(out_dir, results)
    assert len({round(float(image.sum()), 3) for image in images.values()}) == 12
    assert not list(out_dir.glob(f".*{batch.TEMPORARY_MARKER}*"))


def test_resume_after_five_lines_completes_the_rest_and_leaves_the_first_five_untouched(lookbook, local_run, tmp_path):
    manifest, _ = lookbook
    out_dir = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out_dir), "--weights", "tiny", "--limit", "5", "-q"]) == EXIT_OK
    first = list(batch.iter_results(out_dir))
    assert len(first) == 5 and all(row["status"] == "ok" for row in first)
    done = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in out_dir.iterdir()
            if path.name != batch.RESULTS_FILE}
    assert len(done) == 10  # 5 images and their JSON

    # the rest: the bad line fails again (exit code 2), the 7 others are made, nothing of the 5 is rewritten
    assert main(["batch", str(manifest), "-o", str(out_dir), "--weights", "tiny", "-q"]) == EXIT_BAD_INPUT
    for name, (mtime, data) in done.items():
        path = out_dir / name
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, name
    second = list(batch.iter_results(out_dir))
    assert len(second) == 13
    skipped = [row for row in second if row["skipped"]]
    assert {row["id"] for row in skipped} == {row["id"] for row in first}
    assert sum(row["status"] == "ok" and not row["skipped"] for row in second) == 7
    assert [row["line"] for row in second if row["status"] == "error"] == [BAD_LINE]
    # stopped and resumed, the images are those of the straight run
    _assert_same_images(_images(out_dir, second), _images(local_run[1], list(batch.iter_results(local_run[1]))))

    # a third run has nothing left to do and touches nothing
    summary = batch.run(manifest, out_dir, weights="tiny", progress=False)
    assert summary.skipped == 12 and summary.generated == 0 and summary.encodes == 0


def test_an_interrupted_line_is_made_again(lookbook, local_run, tmp_path, monkeypatch):
    """The JSON is written last and atomically: a line cut off before it is not taken as complete."""
    manifest, _ = lookbook
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:2]
    small = _write_manifest(manifest.parent, rows, "two.jsonl")
    out_dir = tmp_path / "out"
    real_write = batch_store.OutputStore.write_bytes

    def crash_on_json(store, name, data):
        if name.endswith(".json"):
            raise KeyboardInterrupt  # the process is stopped between the image and the JSON
        real_write(store, name, data)

    monkeypatch.setattr(batch_store.OutputStore, "write_bytes", crash_on_json)
    with pytest.raises(KeyboardInterrupt):
        batch.run(small, out_dir, weights="tiny", progress=False)
    monkeypatch.setattr(batch_store.OutputStore, "write_bytes", real_write)
    assert list(out_dir.glob("*.png")) and not list(out_dir.glob("*.json"))
    summary = batch.run(small, out_dir, weights="tiny", progress=False)
    assert summary.generated == 2 and summary.skipped == 0 and summary.succeeded


# --------------------------------------------------------------------------------------------- Ray engine


@pytest.fixture(scope="module")  # shut down before test_serve_ray starts its own local Ray
def ray_instance():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        if _in_ci():
            pytest.fail("Ray is not installed; CI installs requirements-ray.txt (make test)")
        pytest.skip("Ray is not installed: pip install -r requirements-ray.txt")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             object_store_memory=256 * 1024**2)
    yield ray
    ray.shutdown()


def test_ray_engine_gives_the_local_images_and_statuses(lookbook, local_run, ray_instance, tmp_path):
    manifest, _ = lookbook
    out_dir = tmp_path / "ray-out"
    summary = batch.run(manifest, out_dir, engine="ray", weights="tiny", progress=False)
    ray_results = list(batch.iter_results(out_dir))
    local_results = list(batch.iter_results(local_run[1]))
    assert [(row["id"], row["status"]) for row in ray_results] == [(row["id"], row["status"]) for row in local_results]
    assert [row["message"] for row in ray_results if row["status"] == "error"] == \
        [row["message"] for row in local_results if row["status"] == "error"]
    assert summary.engine == "ray" and summary.workers == 1  # 2 CPUs: one CPU actor, one CPU for Ray Data
    assert summary.encodes == 3  # one actor: each part set once
    _assert_same_images(_images(out_dir, ray_results), _images(local_run[1], local_results))
    for row in ray_results:
        if row["status"] == "ok":
            ray_json = json.loads((out_dir / f"{row['id']}.json").read_text())
            local_json = json.loads((local_run[1] / f"{row['id']}.json").read_text())
            assert {k: v for k, v in ray_json.items() if k != "seconds"} == \
                {k: v for k, v in local_json.items() if k != "seconds"}


def test_engine_ray_without_ray_says_how_to_install_it(lookbook, tmp_path, monkeypatch, capsys):
    manifest, _ = lookbook
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--engine", "ray"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == EXIT_BAD_INPUT and len(lines) == 1, lines
    assert "pip install -r requirements-ray.txt" in lines[0] and "parts2whole[ray]" in lines[0]


def test_ray_blocks_keep_part_sets_together_and_spread_a_big_one():
    def lines(group, count):
        return [batch.ManifestLine(number=i, id=f"{group}{i}", values={}) for i in range(count)]

    groups = [lines("a", 4), lines("b", 4), lines("c", 4)]
    assert [[line.id[0] for line in block] for block in batch.ray_blocks(groups, 1)] == [["a"] * 4, ["b"] * 4, ["c"] * 4]
    one_outfit = [lines("a", 40)]
    blocks = batch.ray_blocks(one_outfit, 4)  # one outfit on 40 poses, 4 GPUs: a quarter each
    assert [len(block) for block in blocks] == [10, 10, 10, 10]
    assert sum(blocks, []) == one_outfit[0]


# --------------------------------------------------------------------------------------------- manifests


def test_the_shipped_lookbook_manifest_points_at_the_example_parts():
    manifest = REPO_ROOT / "assets" / "lookbook.jsonl"
    lines = batch.read_manifest(manifest)
    assert len(lines) == 3 and all(line.error is None for line in lines)
    assert [line.id for line in lines] == list(PART_SETS)
    for line in lines:
        for key in batch.FILE_KEYS:
            if key in line.values:
                assert batch.resolve_path(line.values[key], manifest.parent).is_file(), (line.id, key)
    groups = batch.group_by_part_set(lines, manifest.parent)
    assert len(groups) == 3


def test_csv_and_json_lines_read_the_same(tmp_path):
    rows = [{"id": "a", "face": "f.png", "pose": "p.png", "seed": 3, "guidance": 3.5},
            {"face": "f.png", "pose": "p.png", "prompt": "a man, smiling", "steps": 20}]
    jsonl = _write_manifest(tmp_path, rows)
    (tmp_path / "manifest.csv").write_text(
        "id,face,pose,seed,guidance,prompt,steps\n"
        "a,f.png,p.png,3,3.5,,\n"
        ',f.png,p.png,,,"a man, smiling",20\n'
        "\n")
    from_json, from_csv = batch.read_manifest(jsonl), batch.read_manifest(tmp_path / "manifest.csv")
    assert [(line.id, line.key, line.error) for line in from_json] == [(line.id, line.key, line.error) for line in from_csv]
    assert from_json[0].id == "a" and len(from_json[1].id) == batch.HASH_ID_DIGITS  # no id: a content hash
    assert [line.number for line in from_csv] == [2, 3]


@pytest.mark.parametrize("row, expected", [
    ({"fcae": "f.png", "pose": "p.png"}, "unknown key 'fcae'; did you mean 'face'?"),
    ({"face": "f.png"}, "no pose"),
    ({"face_mask": "m.png", "pose": "p.png"}, "face_mask was given without face"),
    ({"id": "../escape", "face": "f.png", "pose": "p.png"}, "cannot name a file"),
    ({"face": 3, "pose": "p.png"}, "face must be a file path"),
])
def test_a_bad_line_is_named_with_its_number_and_what_to_fix(tmp_path, row, expected):
    good = {"face": "f.png", "pose": "p.png", "seed": 1}
    lines = batch.read_manifest(_write_manifest(tmp_path, [good, row]))
    assert lines[0].error is None
    assert lines[1].error.startswith("line 2: ") and expected in lines[1].error, lines[1].error


def test_broken_lines_and_repeated_ids_do_not_stop_the_others(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"id": "a", "face": "f.png", "pose": "p.png"}\n'
                    '{"face": "f.png", "pose": \n'
                    '\n'
                    '["a list"]\n'
                    '{"id": "a", "face": "g.png", "pose": "p.png"}\n'
                    '{"id": "b", "Face": "f.png", "POSE": "p.png"}\n')
    lines = batch.read_manifest(path)
    assert [line.number for line in lines] == [1, 2, 4, 5, 6]
    assert lines[0].error is None and lines[4].error is None  # keys are case-insensitive
    assert "not valid JSON" in lines[1].error and "JSON object" in lines[2].error
    assert "already used by line 1" in lines[3].error


def test_a_batch_of_bad_lines_exits_2_and_records_each(tmp_path, capsys):
    manifest = _write_manifest(tmp_path, [{"face": "f.png"}, {"fcae": "f.png", "pose": "p.png"}])
    out_dir = tmp_path / "out"
    assert main(["batch", str(manifest), "-o", str(out_dir), "--weights", "tiny"]) == EXIT_BAD_INPUT
    results = list(batch.iter_results(out_dir))
    assert [row["status"] for row in results] == ["error", "error"]
    err = capsys.readouterr()
    assert "line 1" in err.err and "line 2" in err.err and "2 failed" in err.out
    assert main(["batch", str(tmp_path / "nothing.jsonl"), "-o", str(out_dir)]) == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_a_manifest_line_becomes_the_inputs_of_generate(tmp_path):
    line = batch.ManifestLine(number=1, id="x", values={"face": "f.png", "face_mask": "/abs/m.png", "pose": "p.png",
                                                        "scheduler": "dpmpp_2m", "seed": "7"})
    inputs = batch.line_inputs(line, tmp_path)
    assert inputs.scheduler == "dpmpp_2m" and inputs.seed == "7"  # checked (and made a number) when loaded
    assert inputs.parts == {"face": str(tmp_path / "f.png")} and inputs.masks == {"face": "/abs/m.png"}
    assert inputs.pose == str(tmp_path / "p.png") and inputs.pose_photo is None
    plain = batch.ManifestLine(number=2, id="y", values={"face": "f.png", "pose": "p.png"})
    assert batch.line_inputs(plain, tmp_path).scheduler == "ddim"  # a key left out: the default of `generate`


# --------------------------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("location", ["local", "memory://batch-test"])
def test_outputs_count_as_complete_only_when_the_json_names_this_line_and_its_images_exist(tmp_path, location):
    store = batch.OutputStore(tmp_path / "out" if location == "local" else location)
    store.prepare()
    line = batch.ManifestLine(number=1, id="look", values={"face": "f.png"}, key="k1")
    assert batch.completed_outputs(store, line) == ("missing", [])
    store.write_bytes("look_0.png", b"png")  # an image without its JSON: interrupted
    assert batch.completed_outputs(store, line)[0] == "missing"
    record = {"outputs": ["look_0.png", "look_1.png"], "batch": {"line_key": "k1"}}
    store.write_bytes("look.json", json.dumps(record).encode())
    assert batch.completed_outputs(store, line)[0] == "missing"  # look_1.png is not there
    store.write_bytes("look_1.png", b"png")
    assert batch.completed_outputs(store, line) == ("complete", ["look_0.png", "look_1.png"])
    store.write_bytes("look.json", b'{"outputs": ["look_0.png"')  # cut off: not a JSON this batch finished
    assert batch.completed_outputs(store, line)[0] == "missing"
    store.write_bytes("look.json", json.dumps(record | {"batch": {"line_key": "other"}}).encode())
    assert batch.completed_outputs(store, line)[0] == "other"
    assert store.read_text("look.json") and store.exists("look_1.png") and not store.exists("nope.png")


def test_a_failed_local_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    store = batch.OutputStore(tmp_path)
    store.write_bytes("a.json", b"old")

    def fail(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_store.os, "replace", fail)  # the store's atomic rename
    with pytest.raises(OSError):
        store.write_bytes("a.json", b"new")
    assert (tmp_path / "a.json").read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["a.json"]
