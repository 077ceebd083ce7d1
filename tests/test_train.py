"""The training recipe end to end on tiny data: dataset layout -> DWPose maps -> loss -> accelerate loop
-> resume -> exported checkpoint that the pipeline loads and runs; plus `accelerate launch` on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from parts2whole import PART_LABELS, Parts2WholePipeline
from parts2whole.model.attention import ReferenceFeatures, SharedAttention
from parts2whole.model.image_processing import ClipImageSettings
from parts2whole.model.loading import WEIGHTS_NAME, load_components
from parts2whole.train.config import DropoutConfig, config_from_dict, load_config
from parts2whole.train.convert_dwpose import convert_index
from examples_standin import extract_split, standin_root
from parts2whole.train.dataset import PartsToWholeDataset, is_visible
from parts2whole.train.export import METADATA_NAME, read_structure_kind
from parts2whole.train.objective import DropDecisions, TrainingModels, diffusion_loss, encode_text
from parts2whole.train.references import install_training_processors, record_references
from parts2whole.train.trainer import export_training_state, run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # training resolution of the tests (latents 8 x 8)
#: The stand-in's training split (tests/examples_standin.py, TRAIN_LINES), in the dataset's real layout: every
#: line lists all six parts; line 0 and 1 show all six, line 2's photo shows nobody (its DensePose map is
#: blank), line 3's shoes mask is all black (the part is absent); parts of odd lines are WebP named .jpg.
TRAIN_ROWS = standin_root()[1]["train"]
NUM_SAMPLES = len(TRAIN_ROWS)
CAPTION = TRAIN_ROWS[0]["caption"]
NO_PERSON_TARGET = TRAIN_ROWS[2]["target"]


def make_dataset(root: Path) -> Path:
    """The stand-in's train and test splits extracted as the official script leaves them (images/, one folder
    per part with `<id>_rgb.jpg` and `<id>_mask.jpg`, densepose/, openpose/, and the two index files)."""
    source = standin_root()[0]
    extract_split(source, root, "train")
    return extract_split(source, root, "test")


class FakeEstimator:
    """Stands in for DWPose: one upright person (body keypoints only), none in NO_PERSON_TARGET."""

    def estimate(self, image):
        from preprocess.pose import NUM_KEYPOINTS, PoseResult

        width, height = image.size
        people = np.zeros((1, NUM_KEYPOINTS, 3), dtype=np.float32)
        for index in range(17):
            people[0, index] = (width * (0.3 + 0.4 * (index % 2)), height * (0.1 + 0.05 * index), 1.0)
        empty = image.getpixel((0, 0)) == self.no_person_pixel
        return PoseResult(width, height, people[:0] if empty else people)

    def __init__(self, no_person_pixel):
        self.no_person_pixel = no_person_pixel


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    """The synthetic dataset with our DWPose maps converted in (train_dwpose.jsonl, test_dwpose.jsonl)."""
    root = make_dataset(tmp_path_factory.mktemp("data") / "DeepFashion-MultiModal-Parts2Whole")
    with Image.open(root / NO_PERSON_TARGET) as image:
        no_person_pixel = image.convert("RGB").getpixel((0, 0))
    for split in ("train", "test"):
        convert_index(root, f"{split}.jsonl", f"{split}_dwpose.jsonl", FakeEstimator(no_person_pixel))
    return root


def tiny_config(checkpoint: Path, data_root: Path, output_dir: Path, **sections) -> dict:
    config = {
        "base_checkpoint": str(checkpoint), "output_dir": str(output_dir),
        "data": {"root": str(data_root), "height": SIZE, "width": SIZE, "num_workers": 0},
        "optimization": {"batch_size": 2, "max_train_steps": 2, "mixed_precision": "no", "lr_warmup_steps": 0,
                         "learning_rate": 1e-3, "gradient_checkpointing": False},
        "checkpointing": {"every_steps": 1, "total_limit": 1},
        "validation": {"every_steps": 0, "num_samples": 0, "num_inference_steps": 2},
    }
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values
    return config


# --- data ----------------------------------------------------------------------------------------------

def test_converter_writes_maps_and_leaves_out_targets_without_a_person(dataset_root):
    samples = [json.loads(line) for line in (dataset_root / "train_dwpose.jsonl").read_text().splitlines()]
    assert len(samples) == NUM_SAMPLES - 1 and all(s["target"] != NO_PERSON_TARGET for s in samples)
    first = samples[0]
    assert first["structure"]["densepose"].startswith("densepose/")  # the original maps are kept
    pose_map = Image.open(dataset_root / first["structure"]["dwpose"])
    assert pose_map.size == Image.open(dataset_root / first["target"]).size and np.asarray(pose_map).max() > 0
    assert (dataset_root / "dwpose" / (Path(first["target"]).stem + ".json")).is_file()
    report = convert_index(dataset_root, "train.jsonl", "again.jsonl", FakeEstimator(None))
    assert report.maps_rendered == 1 and report.maps_reused == NUM_SAMPLES - 1  # only the skipped one is redone


def test_dataset_gives_pipeline_preprocessed_tensors_per_part_slot(dataset_root, tiny_checkpoint):
    settings = ClipImageSettings.from_config(json.loads((tiny_checkpoint / "feature_extractor" / "preprocessor_config.json").read_text()))
    dataset = PartsToWholeDataset(dataset_root, "train_dwpose.jsonl", "dwpose", SIZE, SIZE, settings, min_crop_fraction=0.9)
    item = dataset[0]
    assert item["target"].shape == (3, SIZE, SIZE) and -1 <= item["target"].min() and item["target"].max() <= 1
    assert item["structure"].shape == (3, SIZE, SIZE) and 0 <= item["structure"].min() and item["structure"].max() <= 1
    assert item["reference_pixels"].shape == (len(PART_LABELS), 3, SIZE, SIZE)
    assert item["clip_pixels"].shape == (len(PART_LABELS), 3, 32, 32)
    assert [PART_LABELS[i] for i in item["present"].nonzero().flatten()] == list(PART_LABELS)  # all six visible
    assert item["reference_masks"][~item["present"]].abs().sum() == 0 and item["caption"] == CAPTION
    assert not dataset[len(dataset) - 1]["present"][PART_LABELS.index("shoes")]  # the sample without shoes


def test_reader_follows_the_real_layout_of_the_test_split(dataset_root, tiny_checkpoint):
    """On the stand-in's test split (six labels a line, all-black masks, blank maps, WebP named .jpg at odd
    sizes, 3-channel soft masks): only visible parts are references, and a blank map is no pose."""
    settings = ClipImageSettings.from_config(json.loads((tiny_checkpoint / "feature_extractor" / "preprocessor_config.json").read_text()))
    dataset = PartsToWholeDataset(dataset_root, "test.jsonl", "densepose", SIZE, SIZE, settings)
    truth = standin_root()[1]["truth"]
    formats = set()
    for index, sample in enumerate(dataset.samples):
        about = truth[sample["target_id"]]
        assert len(sample["appearance"]) == len(PART_LABELS)
        images, masks = dataset.references(index)
        assert list(images) == about["visible"] and set(masks) == set(images), sample["target_id"]
        formats |= {image.format for image in images.values()}
        assert dataset.has_structure(index) == (about["map"] == "ok"), sample["target_id"]
    assert formats == {"JPEG", "WEBP"}
    blank = next(i for i, s in enumerate(dataset.samples) if truth[s["target_id"]]["map"] == "blank")
    hidden = next(i for i, s in enumerate(dataset.samples) if truth[s["target_id"]]["map"] == "ok"
                  and len(truth[s["target_id"]]["visible"]) < len(PART_LABELS))
    items = [dataset[blank], dataset[hidden]]
    assert not items[0]["structure_present"] and items[1]["structure_present"]
    present = [PART_LABELS[i] for i in items[1]["present"].nonzero().flatten()]
    assert present == truth[dataset.samples[hidden]["target_id"]]["visible"]
    assert items[1]["reference_masks"][~items[1]["present"]].abs().sum() == 0
    batch = torch.utils.data.default_collate(items)  # one key set per batch, as the official loop needs
    assert batch["present"].shape == (2, len(PART_LABELS)) and batch["structure_present"].tolist() == [False, True]


def test_download_extracts_the_zips_in_place_and_refuses_escaping_members(tmp_path, monkeypatch):
    import zipfile

    import huggingface_hub

    from parts2whole.train.dataset import download_dataset, resolve_dataset_root

    def fake_snapshot_download(repo_id, repo_type, local_dir, revision, allow_patterns):
        assert repo_id == "huanngzh/DeepFashion-MultiModal-Parts2Whole" and repo_type == "dataset"
        assert "images.zip" in allow_patterns and "densepose.zip" not in allow_patterns
        with zipfile.ZipFile(Path(local_dir) / "images.zip", "w") as bundle:
            bundle.writestr("images/MEN-Denim-id_00000265-01_1_front.jpg", b"jpeg")
        (Path(local_dir) / "train.jsonl").write_text("{}\n")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_dataset_root("huanngzh/DeepFashion-MultiModal-Parts2Whole", download_to=tmp_path) == tmp_path
    assert (tmp_path / "images" / "MEN-Denim-id_00000265-01_1_front.jpg").read_bytes() == b"jpeg"
    with zipfile.ZipFile(tmp_path / "face.zip", "w") as bundle:
        bundle.writestr("../outside.jpg", b"x")
    with pytest.raises(ValueError, match="escapes"):
        download_dataset(tmp_path)
    assert not (tmp_path.parent / "outside.jpg").exists()


def test_config_rejects_unknown_settings_and_modules():
    with pytest.raises(ValueError, match="unknown setting"):
        config_from_dict({"optimization": {"learning_rat": 1.0}})
    with pytest.raises(ValueError, match="modules"):
        config_from_dict({"optimization": {"modules": ["vae"]}})
    for path in sorted((REPO_ROOT / "configs").glob("train-*.yaml")):
        load_config(path)  # the shipped recipes parse


# --- the objective ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def components(tiny_checkpoint):
    loaded = load_components(tiny_checkpoint)
    install_training_processors(loaded["unet"])
    return loaded


def _models(components, train_reference_unet=False) -> TrainingModels:
    return TrainingModels(vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
                          image_encoder=components["image_encoder"], unet=components["unet"], unet_module=components["unet"],
                          reference_unet=components["reference_unet"], pose_guider=components["pose_guider"],
                          noise_scheduler=components["scheduler"], train_reference_unet=train_reference_unet)


def _batch(dataset_root, tiny_checkpoint, indices=(0, 3)):
    settings = ClipImageSettings.from_config(json.loads((tiny_checkpoint / "feature_extractor" / "preprocessor_config.json").read_text()))
    dataset = PartsToWholeDataset(dataset_root, "train.jsonl", "densepose", SIZE, SIZE, settings)
    return torch.utils.data.default_collate([dataset[i] for i in indices])


@pytest.mark.parametrize("indices", [(0, 3), (0, 1)], ids=["absent-part", "all-parts"])
def test_training_attention_equals_the_pipeline_attention_for_each_sample(components, dataset_root, tiny_checkpoint, indices):
    """Per-sample references with absent slots masked out compute, row by row, what the pipeline's
    shared attention computes for that sample's own references alone."""
    models, batch = _models(components), _batch(dataset_root, tiny_checkpoint, indices)
    present = batch["present"]
    label_embeds = encode_text(models, list(PART_LABELS))
    latents = torch.randn(2, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 77 + 6, 32, generator=torch.Generator().manual_seed(1))
    reference_latents = torch.randn(int(present.sum()), 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(2))
    slots = torch.arange(len(PART_LABELS)).expand_as(present)[present]
    with torch.no_grad():
        references = record_references(models.reference_unet, reference_latents, label_embeds[slots],
                                       batch["reference_masks"][present], present, "full")
        batched = models.unet(latents, 10, encoder_hidden_states=context, cross_attention_kwargs={"reference_context": references}).sample
        for row in range(2):
            count = int(present[row].sum())
            own = {block: f.view(2, len(PART_LABELS), -1, f.shape[-1])[row][present[row]] for block, f in references.features.items()}
            weights = {block: (f.abs().sum(-1) > 0).float() for block, f in own.items()}
            shared = SharedAttention(ReferenceFeatures(own, weights), reference_rows_start=0)
            alone = models.unet(latents[row:row + 1], 10, encoder_hidden_states=context[row:row + 1],
                                cross_attention_kwargs={"reference_context": shared}).sample
            torch.testing.assert_close(batched[row:row + 1], alone, atol=1e-5, rtol=0)


def test_references_record_through_a_distributed_wrapper(components):
    """Under `accelerate launch` on several GPUs the reference UNet is wrapped in DDP, whose module names
    carry a "module." prefix; recording must still find every block."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        reference_unet = components["reference_unet"].requires_grad_(True)
        wrapped = DistributedDataParallel(reference_unet, find_unused_parameters=True)
        present = torch.tensor([[True, False, False, False, False, True]])
        references = record_references(wrapped, torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32), torch.ones(2, 1, SIZE, SIZE),
                                       present, "full")
        assert len(references.features) == 16
    finally:
        components["reference_unet"].requires_grad_(False)
        dist.destroy_process_group()


def test_loss_is_finite_and_decreases_on_a_repeated_batch(components, dataset_root, tiny_checkpoint):
    models, batch = _models(components), _batch(dataset_root, tiny_checkpoint)
    pose_guider = models.pose_guider.requires_grad_(True)
    original = {k: v.clone() for k, v in pose_guider.state_dict().items()}
    optimizer = torch.optim.Adam(pose_guider.parameters(), lr=3e-3)
    label_embeds = encode_text(models, list(PART_LABELS))
    drops = DropDecisions.none(2, len(PART_LABELS), "cpu")
    losses = []
    try:
        for _ in range(3):
            loss = diffusion_loss(models, batch, drops, label_embeds, generator=torch.Generator().manual_seed(0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    finally:
        pose_guider.requires_grad_(False).load_state_dict(original)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_a_blank_pose_map_is_learned_as_a_dropped_pose(components, dataset_root, tiny_checkpoint):
    """Train line 2's map is blank (DensePose found nobody): the loss treats it exactly as pose dropout."""
    models, batch = _models(components), _batch(dataset_root, tiny_checkpoint, indices=(2, 0))
    assert batch["structure_present"].tolist() == [False, True]
    label_embeds = encode_text(models, list(PART_LABELS))
    with torch.no_grad():
        as_read = diffusion_loss(models, batch, DropDecisions.none(2, len(PART_LABELS), "cpu"), label_embeds,
                                 generator=torch.Generator().manual_seed(0))
        dropped = DropDecisions.none(2, len(PART_LABELS), "cpu")
        dropped.pose[0] = True
        forced = dict(batch, structure_present=torch.tensor([True, True]))
        explicit = diffusion_loss(models, forced, dropped, label_embeds, generator=torch.Generator().manual_seed(0))
        kept = diffusion_loss(models, forced, DropDecisions.none(2, len(PART_LABELS), "cpu"), label_embeds,
                              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(as_read, explicit, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(as_read, kept, atol=1e-7, rtol=0)


def test_reference_unet_gradients_survive_gradient_checkpointing(components, dataset_root, tiny_checkpoint):
    """The recorder stops the reference UNet early with an exception; recomputation under gradient
    checkpointing must still deliver the same gradients."""
    models, batch = _models(components, train_reference_unet=True), _batch(dataset_root, tiny_checkpoint)
    reference_unet = models.reference_unet.requires_grad_(True)
    label_embeds = encode_text(models, list(PART_LABELS))
    drops = DropDecisions.sample(2, len(PART_LABELS), DropoutConfig(text=0, pose=0.5, reference=0.3, all_references=0),
                                 "cpu", torch.Generator().manual_seed(3))
    gradients = []
    try:
        for checkpointing in (False, True):
            if checkpointing:
                reference_unet.enable_gradient_checkpointing()
                models.unet.enable_gradient_checkpointing()
            reference_unet.train()
            diffusion_loss(models, batch, drops, label_embeds, generator=torch.Generator().manual_seed(0)).backward()
            gradients.append(torch.cat([p.grad.flatten() for p in reference_unet.parameters() if p.grad is not None]))
            reference_unet.zero_grad(set_to_none=True)
    finally:
        reference_unet.disable_gradient_checkpointing()
        models.unet.disable_gradient_checkpointing()
        reference_unet.requires_grad_(False).eval()
    assert gradients[0].abs().max() > 0
    torch.testing.assert_close(gradients[0], gradients[1], atol=1e-6, rtol=1e-4)


def test_text_dropping_removes_prompt_image_tokens_and_references():
    drops = DropDecisions.sample(64, 6, DropoutConfig(text=0.5, pose=0.0, reference=0.0, all_references=0.0), "cpu",
                                 torch.Generator().manual_seed(0))
    assert drops.text.any() and (drops.references[drops.text]).all() and not drops.references[~drops.text].any()
    assert not drops.pose.any()


# --- the loop: train, resume, export, load ---------------------------------------------------------------

def _pose_guider_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "pose_guider" / WEIGHTS_NAME))


def test_training_resumes_and_exports_a_checkpoint_the_pipeline_loads(tiny_checkpoint, dataset_root, tmp_path):
    config = tiny_config(tiny_checkpoint, dataset_root, tmp_path / "run", optimization={"max_train_steps": 1},
                         validation={"num_samples": 1, "every_steps": 0})
    first = run_training(config_from_dict(config))
    assert (first.start_step, first.final_step, len(first.losses)) == (0, 1, 1) and np.isfinite(first.losses).all()
    assert len(list((tmp_path / "run" / "validation").glob("*.png"))) == 1
    exported = first.exported
    trained = _pose_guider_weights(exported)
    base = _pose_guider_weights(tiny_checkpoint)
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    assert (exported / "unet" / WEIGHTS_NAME).read_bytes() == (tiny_checkpoint / "unet" / WEIGHTS_NAME).read_bytes()
    assert json.loads((exported / METADATA_NAME).read_text())["structure_kind"] == "openpose"
    assert read_structure_kind(exported) == "openpose" and read_structure_kind(tiny_checkpoint) == "densepose"

    # Resume at the saved step: nothing left to do, the same weights come back out.
    config["validation"] = {"num_samples": 0}
    resumed = run_training(config_from_dict(config))
    assert (resumed.start_step, resumed.final_step, resumed.losses) == (1, 1, [])
    again = _pose_guider_weights(resumed.exported)
    assert all(torch.equal(again[k], trained[k]) for k in trained)

    # Resume and continue: 0 -> 1 -> 2 gives the weights of an uninterrupted 0 -> 2 run.
    config["optimization"]["max_train_steps"] = 2
    continued = run_training(config_from_dict(config))
    straight = run_training(config_from_dict(tiny_config(tiny_checkpoint, dataset_root, tmp_path / "straight")))
    assert (continued.start_step, continued.final_step, straight.final_step) == (1, 2, 2)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-2"]  # total_limit 1
    np.testing.assert_allclose(continued.losses[-1], straight.losses[-1], rtol=1e-5)
    state_export = export_training_state(config_from_dict(config), tmp_path / "run" / "checkpoints" / "checkpoint-2", tmp_path / "from-state")
    from_state = _pose_guider_weights(state_export)
    assert all(torch.equal(from_state[k], v) for k, v in _pose_guider_weights(continued.exported).items())
    assert json.loads((state_export / METADATA_NAME).read_text())["training_steps"] == 2
    config["optimization"] |= {"modules": ["pose_guider", "unet"], "max_train_steps": 3}
    with pytest.raises(ValueError, match="saved while training"):  # its optimizer state would not fit
        run_training(config_from_dict(config))
    resumed_weights, straight_weights = _pose_guider_weights(continued.exported), _pose_guider_weights(straight.exported)
    assert all(torch.allclose(resumed_weights[k], straight_weights[k], atol=1e-6) for k in straight_weights)

    pipe = Parts2WholePipeline.from_pretrained(exported)
    assert pipe.structure_kind == "openpose"  # read from parts2whole.json
    assert pipe.structure_kind == "openpose"
    sample = json.loads((dataset_root / "test_dwpose.jsonl").read_text().splitlines()[0])
    masks = {label: Image.open(dataset_root / path) for label, path in sample["mask"].items()}
    masks = {label: mask for label, mask in masks.items() if is_visible(mask)}  # all six listed, not all visible
    references = {label: Image.open(dataset_root / sample["appearance"][label]) for label in masks}
    image = pipe(references=references, masks=masks, structure=Image.open(dataset_root / sample["structure"]["dwpose"]),
                 prompt=sample["caption"], height=SIZE, width=SIZE, num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, SIZE, SIZE, 3) and np.isfinite(image).all()


def test_accelerate_launch_on_cpu_runs_one_step(tiny_checkpoint, dataset_root, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config = tiny_config(tiny_checkpoint, dataset_root, tmp_path / "launched", validation={"num_samples": 1},
                         optimization={"max_train_steps": 1, "mixed_precision": "bf16"})  # autocast + validation
    config_path.write_text(json.dumps(config))  # JSON is YAML
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "bf16", "--dynamo_backend", "no", str(REPO_ROOT / "train.py"), "--config", str(config_path)]
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1")
    finished = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (tmp_path / "launched" / "checkpoints" / "checkpoint-1").is_dir()
    assert read_structure_kind(tmp_path / "launched" / "model") == "openpose"
    assert len(list((tmp_path / "launched" / "validation").glob("*.png"))) == 1
