"""Choosing training samples by caption (``data.captions``): the filter, the shard reader, the task."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.config.recipes import load_recipe
from cogframe.config.settings import read_section
from cogframe.core.io.token_shards import MANIFEST_FILE, SHARD_FORMAT, SHARD_VERSION, ShardDataset, shard_name, write_shard
from cogframe.core.training.batches import StepBatches
from cogframe.core.training.settings import CaptionFilter, DataSettings
from cogframe.errors import ConfigError, DataError
from train_fixtures import CAPTIONS, TINY, make_tokenizer, write_recipe


def _shards(root: Path, captions: dict[str, list[list[str]]], *, with_captions: bool = True) -> Path:
    """A shard folder whose split ``s`` has one shard per list in ``captions[s]``.

    Sample ``i`` of a split has ``index == i`` and frames filled with ``i % 256``, so an item shows
    which row of the unfiltered split it is.
    """
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, per_shard in captions.items():
        files, row = [], 0
        for number, caps in enumerate(per_shard):
            n = len(caps)
            rows = torch.arange(row, row + n)
            tensors = {"text": torch.full((n, 16), 300, dtype=torch.int32), "text_valid": torch.ones(n, 16, dtype=torch.bool),
                       "frames": (rows % 256).view(n, 1, 1, 1).expand(n, 5, 8, 8).contiguous().to(torch.int32),
                       "fps": torch.ones(n), "index": rows}
            name = shard_name(split, number)
            meta = {"captions": json.dumps(caps), "prefixes": json.dumps(["4.0s"] * n)} if with_captions else {}
            write_shard(root / name, tensors, meta, {"num_samples": n})
            files.append({"file": name, "num_samples": n})
            row += n
        splits[split] = {"shards": files, "num_samples": row}
    (root / MANIFEST_FILE).write_text(json.dumps({
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "text_len": 16, "num_frames": 5, "grid": [8, 8],
        "image_vocab_size": 256, "splits": splits}))
    return root


# ------------------------------------------------------------------------------ the filter
def test_contains_needs_every_part_and_regex_searches():
    red_circle = CaptionFilter(contains=("red", "circle"))
    assert red_circle("a red circle moving left")
    assert not red_circle("a red square moving left") and not red_circle("a blue circle moving up")
    either = CaptionFilter(regex="circle|square")
    assert either("a blue square moving up") and not either("a blue triangle moving up")
    not_red = CaptionFilter(regex="^(?!.*red)")
    assert not_red("a blue square moving up") and not not_red("a red square moving up")
    both = CaptionFilter(contains=("moving up",), regex="red|blue")
    assert both("a blue square moving up") and not both("a blue square moving down")
    assert not CaptionFilter(contains=("Red",))("a red circle moving left")  # case-sensitive
    assert CaptionFilter(regex="(?i)RED")("a red circle moving left")
    assert str(both) == "data.captions {contains: ['moving up'], regex: 'red|blue'}"


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.text("abc ", max_size=3), max_size=3), caption=st.text("abc ", max_size=12))
def test_contains_is_the_conjunction_of_substring_tests(parts, caption):
    assert CaptionFilter(contains=tuple(parts))(caption) == all(p in caption for p in parts)
    assert CaptionFilter(contains=tuple(parts), regex=re.escape(caption[:2]))(caption) == \
        all(p in caption for p in parts)


def test_data_section_builds_the_filter_and_checks_it():
    data = read_section(DataSettings, {"shards": "x", "captions": {"contains": ["triangle"]}}, where="data")
    assert data.caption_filter() == CaptionFilter(contains=("triangle",))
    assert read_section(DataSettings, {"shards": "x"}, where="data").caption_filter() is None
    bad = {"captions": {"contains": "red"}, "captions.regex": {"regex": "("},
           "did you mean 'regex'": {"regx": "red"}, "has neither contains nor regex": {"contains": []},
           "expects dict[str, Any] | null for 'captions'": ["red"]}
    for message, node in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            read_section(DataSettings, {"shards": "x", "captions": node}, where="data")


@pytest.mark.parametrize("override,message", [
    ("data.captions.contains=triangle", "data.captions.contains: must be a list of non-empty strings"),
    ("+data.captions.regx=red", "data.captions.regx: is not a caption-filter key: did you mean 'regex'?"),
    ("+data.captions.regex=(", "data.captions.regex: is not a valid regular expression"),
    ("data.captions.contains=[]", "data.captions: has neither contains nor regex"),
])
def test_bad_caption_filters_fail_validation_with_the_key(cli, override, message):
    result = cli("validate", "tiny/stage1_lora", override)
    assert result.code == 2 and message in result.err, result.err


def test_the_shipped_lora_recipe_fine_tunes_on_triangles_and_evaluates_at_step_0():
    cfg = load_recipe("tiny/stage1_lora")
    data = read_section(DataSettings, cfg.data, where="data")
    keep = data.caption_filter()
    assert keep("a red triangle moving left") and not keep("a red circle moving left")
    assert cfg.train.eval_at_start and cfg.train.eval_every > 0 and cfg.train.steps <= 300
    assert all(keep(p) for p in cfg.train.sample_prompts)


# ------------------------------------------------------------------------------ the shard reader
def test_a_filtered_split_holds_only_the_matching_rows_in_order(tmp_path):
    caps = [["a red circle", "a blue square", "a red square"], ["a green circle", "a red triangle"]]
    root = _shards(tmp_path, {"train": caps})
    data = ShardDataset(root, "train", keep=CaptionFilter(contains=("red",)))
    assert (len(data), data.total) == (3, 5)
    assert [int(data[i]["index"]) for i in range(len(data))] == [0, 2, 4]  # across shard boundaries
    assert int(data[2]["frames"][0, 0, 0]) == 4  # the frames of row 4, not of item 2's unfiltered row
    assert data.captions() == ["a red circle", "a red square", "a red triangle"]
    with pytest.raises(IndexError):
        data[3]
    # Step batches over it see only those rows, epoch after epoch.
    rows = {int(data[i]["index"]) for i in StepBatches(data, 2, seed=1).indices(5)}
    assert rows <= {0, 2, 4}
    assert len(ShardDataset(root, "train")) == 5  # no filter: every row


def test_a_filter_that_keeps_nothing_names_the_count_and_example_captions(tmp_path):
    root = _shards(tmp_path, {"train": [CAPTIONS[:10]], "val": [CAPTIONS[:4]]})
    with pytest.raises(ConfigError) as exc:
        ShardDataset(root, "val", keep=CaptionFilter(contains=("Red",)))
    message = str(exc.value)
    assert "data.captions {contains: ['Red']} keeps none of the 4 samples of split 'val'" in message
    assert repr(CAPTIONS[0]) in message and "case-sensitive" in message


def test_shards_without_captions_cannot_be_filtered_and_say_why(tmp_path):
    root = _shards(tmp_path, {"train": [["a", "b"]]}, with_captions=False)
    with pytest.raises(DataError, match="has no captions in its header.*re-run the prepare task"):
        ShardDataset(root, "train", keep=CaptionFilter(contains=("a",)))
    assert len(ShardDataset(root, "train")) == 2  # unfiltered reading needs no captions


def test_the_filter_reads_no_frames(tmp_path, monkeypatch):
    root = _shards(tmp_path, {"train": [["a red circle", "a blue square"]]})
    import safetensors

    opened = []
    real = safetensors.safe_open

    class Spy:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def metadata(self):
            return self.inner.metadata()

        def get_slice(self, key):
            opened.append(key)
            return self.inner.get_slice(key)

    monkeypatch.setattr("cogframe.core.io.token_shards.safe_open", Spy)
    data = ShardDataset(root, "train", keep=CaptionFilter(contains=("red",)))
    assert len(data) == 1 and opened == []
    data[0]
    assert "frames" in opened


# ------------------------------------------------------------------------------ the train task
def _caption_run(tmp_path: Path, captions: dict, **train) -> Path:
    shards = _shards(tmp_path / "shards", {"train": [CAPTIONS[i::2] for i in range(2)], "val": [CAPTIONS[:12]]})
    recipe = write_recipe(tmp_path / "r.yaml", "tiny_stage1", tmp_path / "run", shards, make_tokenizer(tmp_path),
                          train={"steps": 2, "eval_every": 2, "eval_batches": 1, "save_every": 1, **train})
    raw = yaml.safe_load(recipe.read_text())
    raw["model"]["init"] = {"from": None, "freeze_inherited": False}
    raw["data"]["captions"] = captions
    recipe.write_text(yaml.safe_dump(raw))
    return recipe


def test_a_train_run_uses_the_subset_of_both_splits_and_logs_step_0(cli, tmp_path):
    recipe = _caption_run(tmp_path, {"contains": ["red", "circle"]}, eval_at_start=True)
    result = cli("run", recipe)
    assert result.code == 0, result.err
    # 4 of the 24 train captions and 4 of the first 12 are red circles.
    assert "data.captions {contains: ['red', 'circle']}: 4 of 24 train samples, 4 of 12 val samples" in result.out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and set(records[0]) == {"step", "val_loss"}
    assert records[-1]["step"] == 2 and "val_loss" in records[-1]
    # Resumed, the run does not evaluate step 0 again (the record of the first run is kept).
    result = cli("run", recipe, "train.steps=3", "resume=true")
    assert result.code == 0, result.err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if set(r) == {"step", "val_loss"}] == [0]
    assert records[-1]["step"] == 3


def test_a_train_run_whose_filter_keeps_nothing_exits_2_before_training(cli, tmp_path):
    result = cli("run", _caption_run(tmp_path, {"regex": "purple"}))
    assert result.code == 2
    assert "data.captions {regex: 'purple'} keeps none of the 24 samples of split 'train'" in result.err
    assert "a red circle moving left" in result.err
    assert not (tmp_path / "run" / "model.safetensors").exists()
