"""The plugin-author kit (cogframe.testing) on every built-in component, and on broken ones it must reject.

A kit that passed everything would prove nothing: each check is also run on a deliberately broken
component (a backend that ignores text padding or cuts the graph, a sampler that uses the global
generator or another row's noise, an interpolator that alters given frames, a dataset that skips
silently, a tokenizer that loses a piece) and must fail naming the broken guarantee.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cogframe.core.generation.token_sampling import sample_categorical
from cogframe.core.model.attention import dense_sdpa_attention
from cogframe.registry import Capabilities, component
from cogframe.testing import (
    ConformanceError,
    check_attention_backend,
    check_dataset,
    check_image_tokenizer,
    check_stage,
    check_stage_component,
    check_text_tokenizer,
    check_token_sampler,
    component_params,
    random_batch,
)

CPU_BACKWARD = Capabilities(devices=("cpu",), dtypes=("float32",), backward=True, masks=None)


# ----------------------------------------------------------------------------- attention

@pytest.mark.parametrize("name", component_params("attention", origin="builtin:"))
def test_every_builtin_backend_conforms(name):
    # flex runs eagerly on CPU (seconds per call): a few cases in float32 here; its full
    # property run is in tests/test_attention_backends.py.
    few = {"max_examples": 3, "dtypes": ("float32",)} if name == "flex" else {"max_examples": 40}
    report = check_attention_backend(name, **few)
    assert report.passed and not report.unavailable
    assert any("equal naive" in line for line in report.passed)


def test_the_kit_needs_a_registered_name():
    with pytest.raises(ConformanceError, match="no attention named 'nosuch'.*known: .*naive"):
        check_attention_backend("nosuch")


def _sdpa(q, k, v, mask, q_slots, k_slots, text_valid=None, **options):
    return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, **options)


class IgnoresPadding:
    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, **options):
        return _sdpa(q, k, v, mask, q_slots, k_slots, None, **options)


class CutsTheGraph:
    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, **options):
        with torch.no_grad():
            return _sdpa(q, k, v, mask, q_slots, k_slots, text_valid, **options)


class IgnoresTextBias:
    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, *, text_bias=0.0, **options):
        return _sdpa(q, k, v, mask, q_slots, k_slots, text_valid, **options)


class ScalesInPlace:
    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, *, scale=None, **options):
        q.data.mul_(1.0)  # harmless value-wise, but it writes the caller's tensor...
        q.data.add_(0.0 if scale is None else 1e-3)
        return _sdpa(q, k, v, mask, q_slots, k_slots, text_valid, scale=scale, **options)


class Float32Only:
    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, **options):
        return _sdpa(q.float(), k.float(), v.float(), mask, q_slots, k_slots, text_valid, **options)


@pytest.mark.parametrize("backend,caps,message", [
    (IgnoresPadding(), CPU_BACKWARD, "output differs from naive"),
    (CutsTheGraph(), CPU_BACKWARD, "does not require grad"),
    (IgnoresTextBias(), CPU_BACKWARD, "differs from naive"),
    (ScalesInPlace(), CPU_BACKWARD, "modified its input q in place|differs from naive"),
    (Float32Only(), Capabilities(devices=("cpu",), dtypes=("float32", "float64"), backward=True),
     "returned torch.float32 on cpu for torch.float64 inputs"),
], ids=["ignores_padding", "cuts_graph", "ignores_text_bias", "writes_input", "wrong_dtype"])
def test_the_kit_rejects_broken_backends(backend, caps, message):
    with pytest.raises(ConformanceError, match=message):
        check_attention_backend(backend, capabilities=caps, max_examples=40)


def test_a_backend_declaring_fewer_masks_is_checked_on_those_only():
    @component("attention", "spatial_only", capabilities=Capabilities(
        devices=("cpu",), dtypes=("float32",), backward=True, masks=("own_frame_causal",)))
    class SpatialOnly:
        def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, **options):
            if mask.rule.value != "own_frame_causal":
                raise AssertionError("called with a mask it does not declare")
            return _sdpa(q, k, v, mask, q_slots, k_slots, text_valid, **options)

    report = check_attention_backend(SpatialOnly, max_examples=15)
    assert "masks own_frame_causal on cpu" in report.passed[0]


def test_an_unavailable_backend_is_skipped_or_fails_as_asked():
    @component("attention", "never_here", available=lambda: "needs a device this test does not have")
    class NeverHere:
        def __call__(self, *args, **kwargs):
            raise AssertionError("must not be called")

    report = check_attention_backend(NeverHere, unavailable="report")
    assert report.unavailable == "needs a device this test does not have" and not report.passed
    with pytest.raises(ConformanceError, match="could not be checked here"):
        check_attention_backend(NeverHere, unavailable="fail")


# ----------------------------------------------------------------------------- token samplers

@pytest.mark.parametrize("name", component_params("token_sampler", origin="builtin:"))
def test_every_builtin_sampler_conforms(name, tmp_path):
    kwargs = {}
    if name == "cluster":
        np.save(tmp_path / "clusters.npy", np.arange(64) % 8)
        kwargs = {"clusters": str(tmp_path / "clusters.npy"), "top_k": 3}
    report = check_token_sampler(name, kwargs=kwargs, max_examples=40)
    seeded = "the seed changes the tokens" in report.passed
    assert seeded == (name != "greedy")


class GlobalGenerator:
    def __call__(self, logits, positions, noise):
        return torch.multinomial(torch.softmax(logits.double(), -1), 1).squeeze(1)


class FirstRowNoise:
    def __call__(self, logits, positions, noise):
        return sample_categorical(logits.double(), noise.uniform(0)[:1].expand(len(noise)))


class CountsCalls:
    def __init__(self):
        self.calls = 0

    def __call__(self, logits, positions, noise):
        self.calls += 1
        return sample_categorical(logits.double(), (noise.uniform(0) + 0.37 * self.calls) % 1.0)


class Int32Tokens:
    def __call__(self, logits, positions, noise):
        return logits.argmax(-1).int()


class IgnoresForbiddenIds:
    def __call__(self, logits, positions, noise):
        return sample_categorical(torch.nan_to_num(logits.double(), neginf=50.0), noise.uniform(0))


@pytest.mark.parametrize("sampler,message", [
    (GlobalGenerator(), "same call made twice"),
    (FirstRowNoise(), "shuffling the rows changed|in waves"),
    (CountsCalls(), "same call made twice"),
    (Int32Tokens(), "returned torch.int32"),
    (IgnoresForbiddenIds(), "logit is -inf"),
], ids=["global_rng", "other_rows_noise", "stateful", "int32", "forbidden_ids"])
def test_the_kit_rejects_broken_samplers(sampler, message):
    with pytest.raises(ConformanceError, match=message):
        check_token_sampler(sampler, max_examples=40)


# ----------------------------------------------------------------------------- stages

@pytest.mark.parametrize("name", ["repeat", "linear_blend"])
@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_builtin_pixel_stages_keep_given_frames(name, rounds):
    report = check_stage_component(name, kwargs={"rounds": rounds}, fps=1.0)
    assert any("unchanged" in line for line in report.passed) == (rounds > 0)


class SmoothsEverything:
    """An interpolator that also blurs the frames it was given."""

    name, space, models = "smooths", "pixels", ()

    def __init__(self, fps=1.0):
        self.output_fps = fps * 2

    def __call__(self, batch):
        pixels = batch.pixels.repeat_interleave(2, dim=1)[:, :-1]
        pixels = ((pixels.int() + 1) // 1).clamp(max=255).to(torch.uint8)
        return batch.advance(self.name, pixels=pixels, passes=0, fps=self.output_fps, rounds=1)


class WrongRate(SmoothsEverything):
    def __call__(self, batch):
        pixels = batch.pixels.repeat_interleave(2, dim=1)[:, :-1]
        return batch.advance(self.name, pixels=pixels, passes=0, fps=self.output_fps * 2, rounds=1)


def test_the_kit_rejects_an_interpolator_that_changes_given_frames():
    with pytest.raises(ConformanceError, match="given frame 0 is not unchanged"):
        check_stage(SmoothsEverything(), random_batch())
    with pytest.raises(ConformanceError, match="declares output_fps 2"):
        check_stage(WrongRate(), random_batch())


# ----------------------------------------------------------------------------- datasets

def test_moving_shapes_conforms():
    report = check_dataset("moving_shapes", kwargs={"num_clips": 3, "max_seconds": 1.0}, expect_skipped=0)
    assert "len 3" in report.passed[0]


def test_video_folder_reports_its_skips(tmp_path):
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "good.gif", frames)
    (tmp_path / "broken.gif").write_bytes(b"not a gif")
    (tmp_path / "captions.jsonl").write_text('{"file": "good.gif", "caption": "noise"}\n'
                                             '{"file": "broken.gif", "caption": "broken"}\n')
    report = check_dataset("video_folder", kwargs={"root": str(tmp_path), "size": 16}, expect_skipped=1)
    assert any("reported in skip_log" in line for line in report.passed)


class SilentSkips:
    def __len__(self):
        return 2

    def __getitem__(self, index):
        if index >= 2:
            raise IndexError(index)
        return None


def test_the_kit_rejects_a_dataset_that_skips_silently():
    with pytest.raises(ConformanceError, match="skipped .* but its skip_log records 0"):
        check_dataset(SilentSkips())


# ----------------------------------------------------------------------------- tokenizers

@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer

    lines = [f"a {c} {s} moving {d}" for c in ("red", "green", "blue") for s in ("circle", "square", "triangle")
             for d in ("left", "right", "up", "down")] + ["4.0s", "2.0s"]
    return str(SentencePieceTokenizer.train(lines, tmp_path_factory.mktemp("spm") / "tok", vocab_size=60))


def test_sentencepiece_conforms(sentencepiece_model):
    report = check_text_tokenizer("sentencepiece", kwargs={"model_path": sentencepiece_model, "id_offset": 256})
    assert "ids in [256," in report.passed[0]


def test_the_kit_rejects_a_tokenizer_that_loses_a_piece(sentencepiece_model):
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer

    class LosesLastPiece(SentencePieceTokenizer):
        def decode(self, ids):
            return super().decode(list(ids)[:-1])

    with pytest.raises(ConformanceError, match="decode\\(encode"):
        check_text_tokenizer(LosesLastPiece(sentencepiece_model))


def test_vqvae_conforms():
    report = check_image_tokenizer("vqvae", kwargs={"downsample": 4, "codebook_size": 16, "code_dim": 8,
                                                    "channels": 8, "num_res_blocks": 1}, size=16)
    assert "ids in [0, 16)" in report.passed[0]
