"""`cogframe plan` and `cogframe mask` through the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch

from cogframe.core.model.masks import temporal_mask
from cogframe.core.model.presets import model_config


def test_plan_reports_the_spec_parameter_counts(cli):
    for recipe in ("cogvideo_9b/stage1", "cogvideo_9b/stage2"):
        result = cli("plan", recipe, "--json", "--devices", "1", "8", "64")
        assert result.code == 0, result.err
        plan = json.loads(result.out)
        assert plan["parameters"]["total"] == 7_721_127_936
        assert plan["parameters"]["trainable"] == 1_818_820_608
        assert plan["parameters"]["frozen"] == 5_902_307_328
        memory = {m["devices"]: m for m in plan["memory_bytes"]}
        # Sharded state shrinks with devices; activations per device do not.
        assert memory[64]["parameters"] * 64 == memory[1]["parameters"]
        assert memory[8]["activations"] == memory[1]["activations"]
        assert memory[8]["total_checkpointed"] < memory[8]["total"]


def test_plan_table_for_cogview2_preset_override(cli):
    result = cli("plan", "cogvideo_9b/stage1", "model.preset=cogview2_6b", "+model.init.freeze_inherited=false")
    assert result.code == 0, result.err
    assert "5,902,307,328" in result.out and "TOTAL, checkpointing" in result.out


def test_plan_errors(cli):
    result = cli("plan", "cogvideo_9b/stage1", "model.preset=cogvideo_10b")
    assert result.code == 2 and "cogvideo_9b_stage1" in result.err


def test_mask_writes_the_library_mask(cli, tmp_path):
    out, png = tmp_path / "m.npy", tmp_path / "m.png"
    result = cli("mask", "cogvideo_9b/stage2", "channel=temporal", "layer=3", f"out={out}", f"png={png}")
    assert result.code == 0, result.err
    dense = np.load(out)
    assert dense.shape == (2064, 2064) and dense.dtype == np.bool_
    config = model_config("cogvideo_9b_stage2")
    expected = temporal_mask(config.layout, config.stage, 3, config.temporal).dense()[0]
    assert np.array_equal(dense, expected.numpy())
    assert png.stat().st_size > 0


def test_mask_with_recipe_override_and_spatial_channel(cli, tmp_path):
    out = tmp_path / "s.npy"
    result = cli("mask", "cogvideo_9b/stage1", "channel=spatial", "layer=0", f"out={out}",
                 "+model.overrides.layout.frames=2")
    assert result.code == 0, result.err
    dense = torch.from_numpy(np.load(out))
    assert dense.shape == (64 + 800, 64 + 800)
    # own-frame causal: frame 1 queries never see frame 0
    assert not dense[64 + 400:, 64:64 + 400].any()


def test_mask_bad_input(cli, tmp_path):
    assert cli("mask", "cogvideo_9b/stage1", "channel=temporal").code == 2
    bad = cli("mask", "cogvideo_9b/stage1", "channel=diagonal", f"out={tmp_path / 'x.npy'}")
    assert bad.code == 2 and "spatial or temporal" in bad.err
    far = cli("mask", "cogvideo_9b/stage1", "layer=48", f"out={tmp_path / 'x.npy'}")
    assert far.code == 2 and "0..47" in far.err


def test_mask_into_a_folder_and_never_over_an_existing_file(cli, tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    first = cli("mask", "cogvideo_9b/stage1", "channel=spatial", "layer=0", f"out={folder}/", f"png={folder}")
    assert first.code == 0, first.err
    assert sorted(p.name for p in folder.iterdir()) == ["spatial_layer0.npy", "spatial_layer0.png"]
    assert not (tmp_path / "masks.npy").exists()  # numpy's own suffix rule is not applied to folders
    assert f"-> {folder / 'spatial_layer0.npy'}" in first.out
    before = (folder / "spatial_layer0.npy").stat().st_mtime_ns
    # The png is new but the npy exists: refused before either is written.
    again = cli("mask", "cogvideo_9b/stage1", "channel=spatial", "layer=0", f"out={folder}/",
                f"png={tmp_path / 'new.png'}")
    assert again.code == 2 and "already exists; pass --force" in again.err, again.err
    assert not (tmp_path / "new.png").exists()
    assert (folder / "spatial_layer0.npy").stat().st_mtime_ns == before
    forced = cli("mask", "cogvideo_9b/stage1", "channel=spatial", "layer=0", f"out={folder}/", "--force")
    assert forced.code == 0, forced.err
    plain = cli("mask", "cogvideo_9b/stage1", "channel=spatial", "layer=0", f"out={tmp_path / 'm'}")
    assert plain.code == 0 and (tmp_path / "m.npy").is_file() and f"-> {tmp_path / 'm.npy'}" in plain.out
