"""Sample videos during training (train.sample_every; core/training/preview.py): off by default,
written atomically per step folder, untouched by resume, clear errors when they cannot be made."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from cogframe.cli import main
from cogframe.core.training.preview import step_folder
from cogframe.core.training.settings import TrainSettings
from train_fixtures import TINY, make_shards, make_tokenizer, write_recipe

PROMPTS = ["a red circle moving left", "a blue square moving up"]
ONE_LAYER = {**TINY, "num_layers": 1}  # the cheapest model that samples


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from cogframe.plugins.vqvae import VQVAE

    root = tmp_path_factory.mktemp("samples")
    torch.manual_seed(0)
    VQVAE(downsample=4, codebook_size=256, code_dim=8, channels=8, channel_mult=[1, 1, 1]).save(root / "vqvae")
    return {"root": root, "tok": make_tokenizer(root), "shards": make_shards(root / "shards", frames=5),
            "t2i": _t2i_weights(root), "vqvae": root / "vqvae"}


def _t2i_weights(root):
    from safetensors.torch import save_file

    from cogframe.core.model.presets import build_model

    torch.manual_seed(0)
    path = root / "t2i_one_layer.safetensors"
    save_file(build_model("tiny_t2i", overrides=ONE_LAYER).state_dict(), str(path))
    return path


def _recipe(ws, name: str, *, preset: str = "tiny_stage1", train: dict | None = None, vqvae: bool = True):
    root = ws["root"]
    extra = {"image_tokenizer": {"name": "vqvae", "path": str(ws["vqvae"])}} if vqvae else {}
    path = write_recipe(root / f"{name}.yaml", preset, root / name, ws["shards"], ws["tok"],
                        init_from=ws["t2i"], train={"log_every": 1, **(train or {})}, extra=extra)
    recipe = yaml.safe_load(path.read_text())
    recipe["model"]["overrides"] = dict(ONE_LAYER)
    if preset == "tiny_t2i":
        recipe["model"].pop("init")
    path.write_text(yaml.safe_dump(recipe))
    return path


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def _temp_entries(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_sampling_is_off_by_default():
    assert TrainSettings(steps=1, batch_size=1).sample_every == 0


def test_stage1_samples_key_frames_atomically_and_changes_no_loss(workspace):
    ws = workspace
    plain = _recipe(ws, "plain", train={"steps": 4})
    sampled = _recipe(ws, "sampled", train={"steps": 4, "sample_every": 3, "sample_prompts": PROMPTS})
    assert main(["run", str(plain)]) == 0 and main(["run", str(sampled)]) == 0
    assert not (ws["root"] / "plain" / "samples").exists()
    run = ws["root"] / "sampled"
    # Every 3 steps and the last one; sampling draws no training randomness: the same losses.
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000003", "step_000004"]
    assert _losses(run) == _losses(ws["root"] / "plain")
    folder = step_folder(run, 3)
    record = json.loads((folder / "samples.json").read_text())
    assert record["step"] == 3 and record["stage"] == "sequential" and len(record["clips"]) == 2
    for clip, prompt in zip(record["clips"], PROMPTS):
        assert clip["caption"] == prompt and clip["frames"] == 5 and clip["fps"] == 1.0
        for name in clip["files"].values():
            assert (folder / name).stat().st_size > 0
    assert (folder / "sheet.png").is_file() and not _temp_entries(folder) and not _temp_entries(run / "samples")
    media = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"media"' in x]
    assert {(m["step"], m["media"]) for m in media} == {(s, f"samples/{c['name']}") for s in (3, 4)
                                                        for c in record["clips"]}
    assert all(os.path.isfile(f) for m in media for f in m["files"])


def test_resume_keeps_earlier_step_folders_and_rewrites_a_step_whole(workspace):
    ws = workspace
    recipe = _recipe(ws, "resumed", train={"steps": 4, "save_every": 2, "sample_every": 2,
                                           "sample_prompts": PROMPTS[:1]})
    assert main(["run", str(recipe)]) == 0
    run = ws["root"] / "resumed"
    before = {p.name: p.stat().st_ino for p in (run / "samples").iterdir()}
    assert sorted(before) == ["step_000002", "step_000004"]
    (run / "samples" / ".step_000006.abc.tmp").mkdir()  # a killed run's half-built folder
    assert main(["run", str(recipe), "resume=true", "train.steps=6"]) == 0
    after = {p.name: p.stat().st_ino for p in (run / "samples").iterdir()}
    assert sorted(after) == ["step_000002", "step_000004", "step_000006"]  # no duplicate, no leftover
    assert all(after[name] == inode for name, inode in before.items())  # earlier folders untouched
    media_steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
                   if '"media"' in x]
    assert media_steps == [2, 4, 6]


def test_rewriting_the_same_step_replaces_its_folder(workspace, tmp_path):
    import numpy as np

    from cogframe.core.model.layout import Stage
    from cogframe.core.training.preview import PreviewClip, TrainingPreview
    from cogframe.plugins import get_registries

    registries = get_registries()
    tokenizer = registries.build("text_tokenizer", {"name": "sentencepiece", "model_path": str(workspace["tok"]),
                                                    "id_offset": 256})
    preview = TrainingPreview(tmp_path, 2, stage=Stage.SEQUENTIAL, text_tokenizer=tokenizer, image_tokenizer=None,
                              sampler=None, text_len=16, prompts=PROMPTS[:1], display_scale=1)
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    preview.write([PreviewClip("00_a", "a", frames, 1.0), PreviewClip("01_b", "b", frames, 1.0)], 2)
    preview.write([PreviewClip("00_c", "c", frames + 255, 1.0)], 2)
    folder = step_folder(tmp_path, 2)
    assert sorted(p.name for p in folder.iterdir()) == ["00_c.mp4", "00_c.png", "samples.json", "sheet.png"]
    assert [c["caption"] for c in json.loads((folder / "samples.json").read_text())["clips"]] == ["c"]
    assert not _temp_entries(folder.parent)


def test_stage2_interpolates_validation_windows_beside_the_real_ones(workspace):
    recipe = _recipe(workspace, "stage2", preset="tiny_stage2",
                     train={"steps": 1, "sample_every": 1, "sample_windows": 2})
    assert main(["run", str(recipe)]) == 0
    folder = step_folder(workspace["root"] / "stage2", 1)
    record = json.loads((folder / "samples.json").read_text())
    assert record["stage"] == "interpolation" and len(record["clips"]) == 2
    assert all(c["reference_row"] and c["frames"] == 5 for c in record["clips"])


@pytest.mark.parametrize("case, message", [
    ("no_tokenizer", "image_tokenizer: is missing but train.sample_every=2"),
    ("no_prompts", "train.sample_prompts: is empty"),
    ("t2i", "makes no video"),
])
def test_sampling_without_what_it_needs_is_refused_before_training(workspace, capsys, case, message):
    train = {"steps": 2, "sample_every": 2, "sample_prompts": [] if case == "no_prompts" else PROMPTS}
    recipe = _recipe(workspace, f"bad_{case}", preset="tiny_t2i" if case == "t2i" else "tiny_stage1",
                     train=train, vqvae=case != "no_tokenizer")
    assert main(["validate", str(recipe)]) == 2
    assert message in capsys.readouterr().err
    assert main(["run", str(recipe)]) == 2
    assert not (workspace["root"] / f"bad_{case}").exists()
