"""LoRA adapters (core/model/lora.py): injection, trainable count, merge/unmerge, files, recipes, plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from cogframe.cli import main
from cogframe.config.model import LoraSettings, build_model_from_recipe
from cogframe.config.recipes import load_recipe
from cogframe.core.io.token_shards import MANIFEST_FILE, SHARD_FORMAT, SHARD_VERSION, shard_name, write_shard
from cogframe.core.model.lora import (
    LoraLinear,
    LoraSpec,
    inject_lora,
    load_adapter,
    lora_modules,
    merge_lora,
    merged_state_dict,
    read_adapter,
    save_adapter,
    unmerge_lora,
)
from cogframe.core.model.presets import build_model
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from train_fixtures import TINY, make_tokenizer, write_recipe


def _model(seed: int = 0, preset: str = "tiny_stage1"):
    torch.manual_seed(seed)
    return build_model(preset, overrides=TINY).eval()


def _inputs(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    layout = model.config.layout
    return torch.randint(0, 256, (2, layout.seq_len), generator=g)


def _randomise(model, seed: int = 2) -> None:
    """Non-zero B (a fresh adapter is the identity, which would make the checks vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * 0.05)


# ------------------------------------------------------------------------------ injection
def test_inject_wraps_the_temporal_linears_and_only_adapters_train():
    model = _model()
    names = inject_lora(model, rank=4, alpha=8, targets=["temporal"])
    assert names == [f"layers.{i}.temporal.{n}" for i in range(2) for n in ("query_key_value", "dense")]
    d = TINY["hidden_size"]
    expected = 2 * 4 * ((d + 3 * d) + (d + d))  # rank * (in + out) per wrapped layer
    assert model.num_parameters(trainable_only=True) == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    # The plain names survive: checkpoints, inheritance and freezing keep working.
    assert "layers.0.temporal.query_key_value.weight" in model.state_dict()
    assert isinstance(model.layers[0].temporal.dense, torch.nn.Linear)


def test_fresh_adapters_change_nothing():
    base, adapted = _model(), _model()
    inject_lora(adapted, LoraSpec(rank=4, targets=("temporal", "mlp")))
    x = _inputs(base)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), base(x), rtol=0, atol=0)


@pytest.mark.parametrize("spec,message", [
    (dict(rank=0), "rank"), (dict(alpha=0), "alpha"), (dict(dropout=1.0), "dropout"),
    (dict(targets=()), "targets"), (dict(targets=("nope",)), "selects no Linear layer"),
])
def test_bad_specs_are_config_errors_naming_the_key(spec, message):
    with pytest.raises(ConfigError, match=message):
        inject_lora(_model(), **spec)


def test_temporal_target_on_a_text_to_image_model_says_why():
    with pytest.raises(ConfigError, match="no temporal channel"):
        inject_lora(_model(preset="tiny_t2i"), rank=2)


def test_patterns_select_single_layers_and_double_injection_is_refused():
    model = _model()
    assert inject_lora(model, rank=2, targets=["layers.1.temporal.dense"]) == ["layers.1.temporal.dense"]
    with pytest.raises(ConfigError, match="already has LoRA"):
        inject_lora(model, rank=2)


# ------------------------------------------------------------------------------ merge / unmerge
def test_merge_gives_the_same_outputs_and_unmerge_restores_the_weights():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, rank=4, alpha=8, targets=["temporal", "spatial"])
    _randomise(model)
    x = _inputs(model)
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        merge_lora(model)  # idempotent
        merged = model(x)
        unmerge_lora(model)
        again = model(x)
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, unmerged, rtol=1e-6, atol=1e-6)
    for name, value in before.items():
        assert (model.state_dict()[name] - value).abs().max() <= 1e-6, name
    # The adapters really change the model (the checks above are not vacuous).
    assert (unmerged - _model()(x).detach()).abs().max() > 1e-4


def test_merged_state_dict_loads_into_a_plain_model_with_the_same_outputs():
    model = _model()
    inject_lora(model, rank=4, targets=["temporal"])
    _randomise(model)
    plain = _model(seed=5)
    plain.load_state_dict(merged_state_dict(model))  # strict: exactly the plain names
    x = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ adapter files
def test_save_and_load_adapter_round_trip(tmp_path):
    model = _model()
    inject_lora(model, rank=4, alpha=8, targets=["temporal"])
    _randomise(model)
    path = save_adapter(model, tmp_path / "a" / "lora.safetensors")
    assert not [p for p in path.parent.iterdir() if p.name != "lora.safetensors"]  # no temporary left
    spec, tensors = read_adapter(path)
    assert spec == LoraSpec(rank=4, alpha=8.0, targets=("temporal",))
    assert set(tensors) == {f"layers.{i}.temporal.{n}.lora_{ab}" for i in range(2)
                            for n in ("query_key_value", "dense") for ab in "AB"}
    fresh = _model()
    inject_lora(fresh, spec)
    load_adapter(fresh, path)
    x = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_mismatched_and_foreign_adapter_files_are_data_errors(tmp_path):
    model = _model()
    inject_lora(model, rank=4)
    path = save_adapter(model, tmp_path / "lora.safetensors")
    other = _model()
    inject_lora(other, rank=2)
    with pytest.raises(DataError, match="shape"):
        load_adapter(other, path)
    spatial = _model()
    inject_lora(spatial, rank=4, targets=["spatial"])
    with pytest.raises(DataError, match="does not match the model's adapters"):
        load_adapter(spatial, path)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(DataError, match="not a cogframe LoRA adapter"):
        read_adapter(foreign)
    with pytest.raises(DataError, match="does not exist"):
        read_adapter(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        save_adapter(_model(), tmp_path / "none.safetensors")


# ------------------------------------------------------------------------------ recipes and training
def _structured_shards(root: Path, n_train: int = 32, n_val: int = 8) -> Path:
    """Learnable stage-1 samples: every frame repeats its clip's first frame (motion-free clips)."""
    g = torch.Generator().manual_seed(0)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        first = torch.randint(0, 16, (n, 1, 8, 8), generator=g)
        valid = torch.ones(n, 16, dtype=torch.bool)
        tensors = {"text": torch.randint(260, 300, (n, 16), generator=g).to(torch.int32), "text_valid": valid,
                   "frames": first.expand(n, 5, 8, 8).contiguous().to(torch.int32), "fps": torch.ones(n),
                   "index": torch.arange(n)}
        name = shard_name(split, 0)
        write_shard(root / name, tensors, {}, {"num_samples": n})
        splits[split] = {"shards": [{"file": name, "num_samples": n}], "num_samples": n}
    (root / MANIFEST_FILE).write_text(json.dumps({
        "format": SHARD_FORMAT, "version": SHARD_VERSION, "text_len": 16, "num_frames": 5, "grid": [8, 8],
        "image_vocab_size": 256, "splits": splits}))
    return root


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    weights = root / "stage1.safetensors"
    base = _model(seed=3)
    with torch.no_grad():
        # A random init's tied output head (std 0.02) is too flat for any adapter to sharpen;
        # a trained model's is not. Scaled, the frozen head lets the adapters show learning.
        base.word_embeddings.weight.mul_(50.0)
    save_file(base.state_dict(), str(weights))
    root.joinpath("shards").mkdir()
    recipe = write_recipe(root / "lora.yaml", "tiny_stage1", root / "run", _structured_shards(root / "shards"),
                          make_tokenizer(root), train={"steps": 30, "lr": 3e-2, "warmup_steps": 2,
                                                       "log_every": 1, "eval_every": 30, "save_every": 0})
    raw = yaml.safe_load(recipe.read_text())
    raw["model"].update(weights=str(weights), init={"from": None, "freeze_inherited": True},
                        lora={"rank": 4, "alpha": 8, "targets": ["temporal"]})
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["run", str(recipe)]) == 0
    return {"root": root, "recipe": recipe, "weights": weights, "run": root / "run"}


def test_a_lora_run_reduces_the_loss_and_touches_only_the_adapters(lora_run):
    records = [json.loads(line) for line in (lora_run["run"] / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    base = load_file(str(lora_run["weights"]))
    merged = load_file(str(lora_run["run"] / "model.safetensors"))
    assert set(merged) == set(base)  # plain names: loadable as a sampling recipe's weights
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".temporal." in k and k.endswith(".weight") for k in changed)
    spec, tensors = read_adapter(lora_run["run"] / "lora.safetensors")
    assert spec.rank == 4 and len(tensors) == 2 * 2 * 2  # 2 layers x 2 wrapped Linears x (A, B)


def test_recipe_adapter_key_loads_and_merges_for_sampling(lora_run):
    """base weights + model.lora.adapter == the run's merged model.safetensors."""
    cfg = load_recipe(str(lora_run["recipe"]), [f"+model.lora.adapter={lora_run['run'] / 'lora.safetensors'}"])
    model = build_model_from_recipe(cfg, get_registries()).eval()
    assert all(m.merged for m in lora_modules(model).values())
    merged = merged_state_dict(model)
    run = load_file(str(lora_run["run"] / "model.safetensors"))
    for name, value in run.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("override,message", [
    ("model.lora.rank=0", "model.lora.rank"), ("+model.lora.ranks=4", "ranks"),
    ("model.lora.targets=[]", "model.lora.targets"),
])
def test_bad_lora_keys_fail_validation_with_the_key(cli, override, message):
    result = cli("validate", "tiny/stage1_lora", override)
    assert result.code == 2 and message in result.err


def test_shipped_lora_recipe_validates_and_builds_on_meta():
    cfg = load_recipe("tiny/stage1_lora")
    assert cfg.model.lora.targets == ["temporal"]
    model = build_model_from_recipe(cfg, get_registries(), device="meta")
    assert len(lora_modules(model)) == 2 * model.config.num_layers
    assert all(isinstance(m, LoraLinear) for m in lora_modules(model).values())


def test_settings_and_spec_agree():
    assert LoraSettings().spec() == LoraSpec()


# ------------------------------------------------------------------------------ plan
def test_plan_reports_lora_trainable_parameters_of_the_9b_stage(cli):
    result = cli("plan", "cogvideo_9b/stage1", "--lora", "8", "--devices", "8", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    d, layers = 3072, 48
    assert plan["parameters"]["trainable"] == layers * 8 * ((d + 3 * d) + (d + d))
    assert plan["lora"]["trainable_without_lora"] == 1_818_820_608
    memory = plan["memory_bytes"][0]
    assert memory["optimizer"] == plan["parameters"]["trainable"] * 8 // 8
    text = cli("plan", "cogvideo_9b/stage1", "--lora", "8")
    assert "trainable without LoRA" in text.out and "0.39%" in text.out
    assert cli("plan", "cogvideo_9b/stage1", "--lora", "0").code == 2
