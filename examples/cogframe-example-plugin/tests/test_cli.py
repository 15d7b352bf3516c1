"""The example plugin as a user meets it: `cogframe plugins` lists it, recipe overrides select it."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.cogframe_plugins("example")

ORIGIN = "example (cogframe-example-plugin 0.1.0)"


def test_cogframe_plugins_lists_the_plugin_and_its_components(cogframe_cli):
    result = cogframe_cli("plugins", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert {"name": "example", "origin": ORIGIN, "module": "cogframe_example_plugin.plugin", "builtin": False} \
        in data["plugins"]
    (chunked,) = [c for c in data["components"]["attention"] if c["name"] == "chunked"]
    (min_p,) = [c for c in data["components"]["token_sampler"] if c["name"] == "min_p"]
    assert chunked["origin"] == min_p["origin"] == ORIGIN and chunked["available"]
    assert chunked["capabilities"]["backward"] is True


def test_validate_checks_the_plugins_keywords(cogframe_cli):
    ok = cogframe_cli("validate", "-q", "tiny/sample", "token_sampler=min_p", "token_sampler.p=0.2")
    assert ok.code == 0, ok.err
    typo = cogframe_cli("validate", "tiny/sample", "token_sampler=min_p", "token_sampler.q=0.2")
    assert typo.code == 2 and "min_p" in typo.err and "q" in typo.err


def test_a_recipe_override_runs_the_tiny_pipeline_with_both_components(cogframe_cli, tmp_path, monkeypatch):
    from cogframe_example_plugin.attention_chunked import ChunkedAttention
    from cogframe_example_plugin.sampler_min_p import MinPSampler

    calls = {"attention": 0, "sampler": 0}
    attend, sample = ChunkedAttention.__call__, MinPSampler.__call__

    def counted_attend(self, *args, **kwargs):
        calls["attention"] += 1
        return attend(self, *args, **kwargs)

    def counted_sample(self, *args, **kwargs):
        calls["sampler"] += 1
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(ChunkedAttention, "__call__", counted_attend)
    monkeypatch.setattr(MinPSampler, "__call__", counted_sample)
    result = cogframe_cli("run", "tiny/sample", "stage1.model.attention.temporal=chunked",
                          "stage1.model.attention.temporal.chunk_size=16", "token_sampler=min_p",
                          "token_sampler.p=0.1", "rounds=0", f"out={tmp_path}/")
    assert result.code == 0, result.err
    assert calls["attention"] > 0 and calls["sampler"] > 0
    assert sorted(p.suffix for p in tmp_path.iterdir() if p.suffix in (".mp4", ".gif"))  # the video was written
