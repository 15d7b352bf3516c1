"""The example plugin's components through cogframe's plugin-author kit, plus their own contracts."""

from __future__ import annotations

import math

import pytest
import torch

from cogframe.errors import ConfigError
from cogframe.testing import check_attention_backend, check_token_sampler

# Load this plugin (and no other third-party one) in the kit's fixtures, whatever else is installed.
pytestmark = pytest.mark.cogframe_plugins("example")


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunked_matches_naive_on_every_mask(cogframe_registries, cogframe_max_examples, chunk_size):
    report = check_attention_backend("chunked", registries=cogframe_registries, kwargs={"chunk_size": chunk_size},
                                     max_examples=cogframe_max_examples)
    assert report.component == "attention 'chunked' (from example (cogframe-example-plugin 0.1.0))"
    assert any("bfloat16 on cpu" in line for line in report.passed)


def test_chunked_builds_the_mask_chunk_by_chunk(cogframe_registries, monkeypatch):
    from cogframe.core.model.layout import Stage, TokenLayout
    from cogframe.core.model.masks import MaskSpec, temporal_mask

    rows = []
    dense = MaskSpec.dense

    def spy(self, q_slots=None, k_slots=None, text_valid=None):
        rows.append(q_slots.numel())
        return dense(self, q_slots, k_slots, text_valid)

    monkeypatch.setattr(MaskSpec, "dense", spy)
    layout = TokenLayout(4, 3, 4, 4, 4, 20, 32)
    mask = temporal_mask(layout, Stage.SEQUENTIAL, 0)
    slots = layout.all_slots()
    q = torch.randn(1, 2, slots.numel(), 8)
    backend = cogframe_registries.build("attention", {"name": "chunked", "chunk_size": 16})
    out = backend(q, q, q, mask, slots, slots)
    assert out.shape == q.shape
    assert rows == [16, 16, 16, 4]  # 52 query rows: never more than chunk_size at a time


def test_chunk_size_must_be_positive(cogframe_registries):
    with pytest.raises(ConfigError, match="chunk_size must be a whole number >= 1"):
        cogframe_registries.build("attention", {"name": "chunked", "chunk_size": 0})


@pytest.mark.parametrize("kwargs", [{}, {"p": 0.05, "temperature": 1.5}, {"p": 1.0}])
def test_min_p_is_position_keyed(cogframe_registries, cogframe_max_examples, kwargs):
    report = check_token_sampler("min_p", registries=cogframe_registries, kwargs=kwargs,
                                 max_examples=cogframe_max_examples)
    assert ("the seed changes the tokens" in report.passed) == (kwargs.get("p") != 1.0)


def test_min_p_keeps_exactly_the_tokens_above_the_relative_cut():
    from cogframe_example_plugin.sampler_min_p import min_p_filter

    probs = torch.tensor([[0.5, 0.3, 0.049, 0.151], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    kept = torch.isfinite(min_p_filter(probs.log(), 0.1))
    assert kept.tolist() == [[True, True, False, True], [True, True, True, True]]
    assert torch.isfinite(min_p_filter(probs.log(), 1.0)).sum(-1).tolist() == [1, 4]
    assert math.isclose(0.049 / 0.5, 0.098)  # just below the cut of 0.1: dropped


def test_min_p_rejects_bad_values(cogframe_registries):
    for bad in ({"p": 0.0}, {"p": 1.5}, {"temperature": 0}):
        with pytest.raises(ConfigError, match="must be"):
            cogframe_registries.build("token_sampler", {"name": "min_p", **bad})
