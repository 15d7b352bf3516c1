"""The ``pipeline`` task (``cogframe run tiny/rebuild``): steps in order, finished ones skipped, installs last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _cogframe(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cogframe", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _tokenizer_step(out: Path) -> dict:
    # The cheapest real recipe: a SentencePiece tokenizer on 64 captions (about a second).
    return {"recipe": "tiny/text_tokenizer",
            "overrides": [f"output_dir={out}", "dataset.num_clips=64"],
            "done": str(out / "tokenizer.model")}


def _write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_pipeline_runs_steps_in_order_skips_finished_ones_and_installs(tmp_path):
    recipe = _write(tmp_path / "rebuild.yaml", {
        "description": "test pipeline", "task": "pipeline", "output_dir": str(tmp_path / "runs"),
        "steps": [_tokenizer_step(tmp_path / "tok_a"), _tokenizer_step(tmp_path / "tok_b")],
        "install": [{"from": str(tmp_path / "tok_b" / "tokenizer.model"), "to": str(tmp_path / "assets" / "t.model")},
                    {"from": str(tmp_path / "tok_a"), "to": str(tmp_path / "assets" / "tok_a")}],
    })
    first = _cogframe("run", str(recipe), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "[1/2] tiny/text_tokenizer" in first.stdout and "[2/2]" in first.stdout
    assert (tmp_path / "assets" / "t.model").read_bytes() == (tmp_path / "tok_b" / "tokenizer.model").read_bytes()
    assert (tmp_path / "assets" / "tok_a" / "tokenizer.model").is_file()
    log = [json.loads(line) for line in (tmp_path / "runs" / "pipeline_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["status"] == 0 for r in log)

    again = _cogframe("run", str(recipe), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done already") == 2
    assert len((tmp_path / "runs" / "pipeline_log.jsonl").read_text().splitlines()) == 2  # nothing rerun


def test_a_failing_step_stops_the_pipeline_before_later_steps_and_installs(tmp_path):
    recipe = _write(tmp_path / "rebuild.yaml", {
        "description": "test pipeline", "task": "pipeline", "output_dir": str(tmp_path / "runs"),
        "steps": [{"recipe": "tiny/text_tokenizer", "overrides": [f"output_dir={tmp_path / 'bad'}",
                                                                  "dataset.num_clips=64", "tokenizer.vocab_size=2"],
                   "done": str(tmp_path / "bad" / "tokenizer.model")},
                  _tokenizer_step(tmp_path / "never")],
        "install": [{"from": str(tmp_path / "never" / "tokenizer.model"), "to": str(tmp_path / "assets" / "t.model")}],
    })
    result = _cogframe("run", str(recipe), cwd=tmp_path)
    assert result.returncode == 2
    assert "pipeline step [1/2] tiny/text_tokenizer" in result.stderr and "failed with exit status" in result.stderr
    assert not (tmp_path / "never").exists() and not (tmp_path / "assets").exists()


@pytest.mark.parametrize("steps, expected", [
    ([], "steps: is empty"),
    ([{"recipe": "tiny/no_such_recipe", "done": "x"}], "steps.0.recipe: cannot be loaded"),
    ([{"recipe": "tiny/text_tokenizer"}], "steps.0.done: is missing"),
    ([{"recipe": "tiny/text_tokenizer", "done": "x", "overrides": "train.steps=3"}], "steps.0.overrides"),
    ([{"recipe": "tiny/text_tokenizer", "done": "x", "after": "y"}], "unknown keys ['after']"),
])
def test_bad_pipeline_recipes_are_refused_before_any_step_runs(tmp_path, capsys, steps, expected):
    from cogframe.cli import main

    recipe = _write(tmp_path / "p.yaml", {"description": "d", "task": "pipeline", "output_dir": str(tmp_path / "r"),
                                          "steps": steps})
    assert main(["run", str(recipe)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the lock or any step


def test_the_shipped_rebuild_recipe_names_every_shipped_asset():
    from cogframe.config.recipes import assets_root, load_recipe

    cfg = load_recipe("tiny/rebuild")
    installed = {Path(str(item["to"])).relative_to("runs/tiny/assets").as_posix() for item in cfg.install}
    shipped = {p.relative_to(assets_root()).as_posix() for p in (assets_root() / "tiny").iterdir()
               if not p.name.startswith((".", "README"))}
    assert shipped <= installed, f"shipped assets the rebuild does not make: {sorted(shipped - installed)}"
