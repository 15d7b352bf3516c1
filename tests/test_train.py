"""Training through `cogframe run`: inheritance, exact resume after SIGKILL, checkpoint errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from cogframe.cli import main
from cogframe.core.training.checkpoint import load_model_weights
from cogframe.core.model.presets import build_model
from cogframe.errors import DataError
from train_fixtures import TINY, make_shards, make_t2i_weights, make_tokenizer, write_recipe


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    tok = make_tokenizer(root)
    return {
        "root": root,
        "tok": tok,
        "image_shards": make_shards(root / "shards_image", frames=1),
        "video_shards": make_shards(root / "shards_video", frames=5),
        "t2i_weights": make_t2i_weights(root),
    }


@pytest.fixture(scope="module")
def t2i_run(workspace):
    root = workspace["root"]
    recipe = write_recipe(root / "t2i.yaml", "tiny_t2i", root / "t2i", workspace["image_shards"],
                          workspace["tok"], train={"steps": 3, "save_every": 2, "eval_every": 3})
    assert main(["run", str(recipe)]) == 0
    return root / "t2i"


def test_text_to_image_run_writes_weights_checkpoints_and_metrics(t2i_run):
    assert (t2i_run / "model.safetensors").is_file()
    ckpts = sorted(p.name for p in (t2i_run / "checkpoints").iterdir())
    assert ckpts == ["latest", "step_00000002", "step_00000003"]
    records = [json.loads(line) for line in (t2i_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 3
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(records[0])
    assert "val_loss" in records[-1]


def test_inherited_tensors_bitwise_unchanged_and_without_optimizer_state(workspace, t2i_run):
    root = workspace["root"]
    recipe = write_recipe(root / "s1.yaml", "tiny_stage1", root / "s1", workspace["video_shards"],
                          workspace["tok"], init_from=t2i_run / "model.safetensors",
                          train={"steps": 3})
    assert main(["run", str(recipe)]) == 0
    parent = load_file(str(t2i_run / "model.safetensors"))
    child = load_file(str(root / "s1" / "model.safetensors"))
    video = build_model("tiny_stage1", overrides=TINY)
    changed_new = False
    for name, tensor in child.items():
        if video.is_new_parameter(name):
            changed_new |= name.endswith("alpha_logit") and bool(tensor.abs().sum() > 0)
        else:
            assert torch.equal(tensor, parent[name]), f"inherited {name} changed"
    assert changed_new, "the mixing factors a should have trained"
    optimizer = load_file(str(root / "s1" / "checkpoints" / "step_00000003" / "optimizer.safetensors"))
    owners = {key.rpartition("/")[0] for key in optimizer}
    assert owners and all(video.is_new_parameter(n) for n in owners)


def _run_cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", COGFRAME_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "cogframe", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(workspace, tmp_path):
    train = {"steps": 24, "save_every": 2, "keep_last": 2}
    inherit = workspace["t2i_weights"]
    straight = write_recipe(tmp_path / "a.yaml", "tiny_stage2", tmp_path / "a",
                            workspace["video_shards"], workspace["tok"], train=train,
                            init_from=inherit)
    killed = write_recipe(tmp_path / "b.yaml", "tiny_stage2", tmp_path / "b",
                          workspace["video_shards"], workspace["tok"], train=train,
                          init_from=inherit)
    proc = _run_cli(["run", str(straight)])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    proc = _run_cli(["run", str(killed)])
    first = tmp_path / "b" / "checkpoints" / "step_00000004"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "b" / "model.safetensors").exists(), "the run finished before the kill"

    proc = _run_cli(["run", str(killed), "resume=true"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "resumed from" in out.decode() + err.decode()
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_mismatched_and_corrupt_checkpoints_are_refused(t2i_run, tmp_path):
    other = build_model("tiny_t2i", overrides={**TINY, "hidden_size": 64})
    with pytest.raises(DataError, match=r"word_embeddings.weight.*\(384, 32\).*\(384, 64\)"):
        load_model_weights(other, t2i_run / "model.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="corrupt"):
        load_model_weights(other, bad)


def test_cli_reports_missing_inheritance_source(workspace, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "c.yaml", "tiny_stage1", tmp_path / "c",
                          workspace["video_shards"], workspace["tok"],
                          init_from=tmp_path / "nope.safetensors")
    assert main(["run", str(recipe)]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_layout_mismatch_between_shards_and_model_is_refused(workspace, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "d.yaml", "tiny_stage1", tmp_path / "d",
                          workspace["image_shards"], workspace["tok"],
                          init_from=workspace["t2i_weights"])
    assert main(["run", str(recipe)]) == 2
    assert "prepare shards for this layout" in capsys.readouterr().err


def test_video_stage_refuses_to_freeze_a_random_backbone(workspace, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "e.yaml", "tiny_stage1", tmp_path / "e",
                          workspace["video_shards"], workspace["tok"])
    assert main(["run", str(recipe)]) == 2
    assert "freeze a random backbone" in capsys.readouterr().err


def test_stage_1_from_scratch_can_learn_frame_0(workspace, tmp_path):
    # train.first_frame_loss adds frame 0 to the loss. Same seed, data and code path: were the flag
    # ignored, the first step's loss would be bitwise the same (near-uniform logits at init keep
    # the two close, hence exact inequality rather than a tolerance).
    losses = {}
    for flag in (False, True):
        out = tmp_path / f"scratch_{flag}"
        recipe = write_recipe(tmp_path / f"scratch_{flag}.yaml", "tiny_stage1", out, workspace["video_shards"],
                              workspace["tok"], train={"steps": 1, "first_frame_loss": flag})
        assert main(["run", str(recipe), "+model.init={from: null, freeze_inherited: false}"]) == 0
        losses[flag] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert losses[True] != losses[False]


def test_fresh_run_does_not_mix_into_earlier_checkpoints(workspace, t2i_run, capsys):
    root = workspace["root"]
    recipe = root / "t2i.yaml"
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "resume=true" in err and "overwrite=true" in err
    assert main(["run", str(recipe), "overwrite=true", "train.steps=1"]) == 0
    assert sorted(p.name for p in (t2i_run / "checkpoints").iterdir()) == ["latest", "step_00000001"]


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps: section 'train' expects int for 'steps', got str 'abc'"),
    ("train.lr=fast", "train.lr: section 'train' expects float for 'lr'"),
    ("train.betas=3", "train.betas: section 'train' expects list [float, float] for 'betas', got int 3"),
    ("train.betas=[0.9,fast]", "expects list [float, float] for 'betas', got list [0.9, 'fast']"),
    ("train.dtype=float8", "train.dtype: must be float32 or bfloat16, got 'float8'"),
    ("train.dtype=float16", "needs dynamic loss scaling"),
    ("+train.stepz=3", "train.stepz: section 'train' takes no keyword 'stepz': did you mean 'steps'?"),
    ("train.lr=-1", "train.lr: must be a positive number, got -1"),
    ("train.grad_clip=-1", "train.grad_clip: must be a positive number or null, got -1"),
    ("train.steps=0", "train.steps: must be an integer >= 1, got 0"),
    ("train.betas=[0.9,1.0]", "train.betas: must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("train.seed=9223372036854775808", "train.seed: is 9223372036854775808, outside 0 .. 2**63-1"),
    ("train.seed=-1", "train.seed: is -1, outside 0 .. 2**63-1"),
    ("train.device=gpu", "train.device: must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("+distributed.param_dtype=float16", "distributed.param_dtype: must be float32 or bfloat16"),
    ("+distributed.param_dtpe=float32", "distributed.param_dtpe: section 'distributed' takes no keyword"),
    ("+plan.devices=[0]", "plan.devices: must be a list of positive integers, got [0]"),
    ("data.shards=null", "data.shards: section 'data' expects str for 'shards', got NoneType None"),
    ("+train.first_frame_loss=true", "train.first_frame_loss: is true but the model is a text_to_image model"),
])
def test_bad_train_settings_exit_2_with_the_key(cli, override, message):
    result = cli("validate", "tiny/t2i", override)
    assert result.code == 2 and message in result.err, result.err


def test_run_refuses_bad_settings_before_training(cli, tmp_path):
    # A negative clip used to train in the wrong direction with exit 0; now nothing starts.
    result = cli("run", "tiny/t2i", "train.grad_clip=-1", f"output_dir={tmp_path / 'run'}")
    assert result.code == 2 and "train.grad_clip: must be a positive number or null" in result.err, result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_refused_at_validate(cli):
    result = cli("validate", "tiny/t2i", "train.device=cuda")
    assert result.code == 2, result.err
    assert "train.device: is 'cuda' but" in result.err and "set train.device=cpu (or auto" in result.err


def test_every_train_problem_is_reported_at_once(cli):
    result = cli("validate", "tiny/t2i", "train.lr=-1", "train.log_every=abc", "+trian.steps=3",
                 "model.attention.spatial.name=sdpx", "loggers.1.path=???")
    assert result.code == 2
    for part in ("(5 problems)", "train.lr: must be a positive number", "train.log_every: section 'train' expects int",
                 "trian: task 'train' takes no top-level key 'trian': did you mean 'train'?",
                 "model.attention.spatial.name: unknown attention 'sdpx'", "loggers.1.path: is ??? (left for you to set)"):
        assert part in result.err, (part, result.err)


def test_resaving_a_step_replaces_it_whole(tmp_path):
    from cogframe.core.training.checkpoint import TrainerState, list_checkpoints, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    for value in (1.0, 2.0):
        with torch.no_grad():
            model.weight.fill_(value)
        save_checkpoint(tmp_path, model_state=model.state_dict(), optimizer=opt, param_names=names,
                        state=TrainerState(7, {}, {"v": value}, {}), keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000007"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000007"]
    with torch.no_grad():
        model.weight.zero_()
    state = load_checkpoint(tmp_path / "step_00000007", model=model, optimizer=opt, param_names=names)
    assert state.metrics == {"v": 2.0} and bool((model.weight == 2.0).all())


def test_stage_inherits_from_a_converted_weights_folder(workspace, tmp_path):
    """`model.init.from` also takes the folder `cogframe convert sat` writes (the 9B path)."""
    from cogframe.core.model.presets import PRESETS
    from cogframe.core.weights.pretrained import write_weights_folder

    t2i = load_file(str(workspace["t2i_weights"]))
    model = {**PRESETS["tiny_t2i"], **TINY}
    write_weights_folder(tmp_path / "cogview2", t2i, model=model, dtype="float32",
                         max_shard_bytes=1 << 15)
    assert len(list((tmp_path / "cogview2").glob("model-*.safetensors"))) > 1
    recipe = write_recipe(tmp_path / "f.yaml", "tiny_stage1", tmp_path / "f",
                          workspace["video_shards"], workspace["tok"],
                          init_from=tmp_path / "cogview2", train={"steps": 1})
    assert main(["run", str(recipe)]) == 0
    child = load_file(str(tmp_path / "f" / "model.safetensors"))
    assert all(torch.equal(child[k], v) for k, v in t2i.items())


def test_resume_at_the_last_step_trains_nothing_and_keeps_the_checkpoint(workspace, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "g.yaml", "tiny_t2i", tmp_path / "g", workspace["image_shards"],
                          workspace["tok"], train={"steps": 2})
    assert main(["run", str(recipe)]) == 0
    trainer = tmp_path / "g" / "checkpoints" / "step_00000002" / "trainer.json"
    before = trainer.read_bytes()
    capsys.readouterr()
    assert main(["run", str(recipe), "resume=true"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert trainer.read_bytes() == before
