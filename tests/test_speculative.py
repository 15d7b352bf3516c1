"""Speculative decoding (core/generation/speculative.py) of key frames and of stage 2's in-between
frames: drafts from the frame before, checked in one pass, give exactly the tokens of
one-slot-per-pass greedy decoding in fewer passes.

float64 throughout the equality checks: a pass of several queries sums in another order than a
pass of one (~1e-16 here), so an argmax flip between the two decoders is practically impossible.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.config.recipes import asset_path
from cogframe.core.generation.decoder import DecodeOptions, decode_frames
from cogframe.core.generation.generate import interpolate_round
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.speculative import DRAFT_ROWS, _mask_problem, decode_frames_speculative, draft_length
from cogframe.core.generation.waves import model_layer_masks
from cogframe.core.model.presets import build_model
from cogframe.core.training.checkpoint import load_model_weights
from cogframe.errors import ConfigError, ShapeError
from cogframe.plugins.dataset_moving_shapes import MovingShapes
from cogframe.plugins.token_samplers import GreedySampler, TopKSampler
from cogframe.plugins.vqvae import VQVAE

BOI = 300
SMALL = {"num_layers": 2, "hidden_size": 32, "num_heads": 2}


def _prompt(layout, batch: int, seed: int = 1) -> TextPrompt:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(256, 384, (batch, layout.text_len), generator=g)
    valid = torch.ones(batch, layout.text_len, dtype=torch.bool)
    valid[0, :3] = False  # a left-padded prompt in the batch
    return TextPrompt(ids, valid)


def _both(model, prompt, first, options, **kwargs):
    layout = model.config.layout
    frames = dict(given_frames=(0,), generated_frames=tuple(range(1, layout.frames)), given=first)
    plain = decode_frames(model, prompt, boi_id=BOI, options=options, **frames)
    fast = decode_frames_speculative(model, prompt, boi_id=BOI, options=options, **frames, **kwargs)
    return plain, fast


@pytest.fixture(scope="module")
def shipped_stage1():
    """The shipped tiny stage 1 (full causal temporal attention, as tiny/sample builds it), float64."""
    model = build_model("tiny_stage1", overrides={"temporal": {"window": None, "shift": None}})
    load_model_weights(model, asset_path("tiny/stage1.safetensors"))
    return model.eval().double()


@settings(max_examples=12, deadline=None, derandomize=True)
@given(batch=st.integers(1, 3), max_draft=st.sampled_from([1, 2, 5, 16, None]), windowed=st.booleans(),
       guided=st.booleans(), repeat=st.booleans())
def test_random_models_give_the_tokens_of_sequential_greedy_decoding(batch, max_draft, windowed, guided, repeat):
    # A random model rarely repeats its previous frame, so most drafts are rejected; with `repeat`
    # the given frame 0 is what the model would write next, so some drafts are accepted too.
    overrides = dict(SMALL) if windowed else dict(SMALL, temporal={"window": None, "shift": None})
    torch.manual_seed(0)
    model = build_model("tiny_stage1", overrides=overrides).eval().double()
    layout = model.config.layout
    prompt = _prompt(layout, batch)
    negative = _prompt(layout, 1, seed=9) if guided else None
    options = DecodeOptions(GreedySampler(), guidance=3.0 if guided else 1.0, negative=negative)
    g = torch.Generator().manual_seed(2)
    first = torch.randint(0, 256, (batch, 1, layout.frame_height, layout.frame_width), generator=g)
    if repeat:  # frame 0 := what sequential decoding makes of frame 1 after it
        first = _both(model, prompt, first, options)[0].frames[:, 1:2].clone()
    plain, fast = _both(model, prompt, first, options, max_draft=max_draft)
    assert torch.equal(plain.frames, fast.frames)
    assert fast.passes <= plain.passes


def test_the_shipped_stage1_needs_a_third_of_the_passes_for_the_same_key_frames(shipped_stage1):
    layout = shipped_stage1.config.layout
    prompt = _prompt(layout, 1)
    options = DecodeOptions(GreedySampler())
    # Frame 0 from the model itself (top-k), as the key_frames stage makes it.
    first = decode_frames(shipped_stage1, prompt, boi_id=BOI, options=DecodeOptions(TopKSampler(k=10), seed=3),
                          generated_frames=(0,)).frames[:, :1]
    plain, fast = _both(shipped_stage1, prompt, first, options)
    assert torch.equal(plain.frames, fast.frames)
    assert plain.passes == 1 + 4 * layout.tokens_per_frame
    assert fast.passes * 2 < plain.passes, (fast.passes, plain.passes)


def test_draft_length_shrinks_with_the_batch_to_no_drafting():
    assert draft_length(1) == DRAFT_ROWS and draft_length(4) == DRAFT_ROWS // 4
    assert draft_length(DRAFT_ROWS) == 1 and draft_length(10 * DRAFT_ROWS) == 1


def test_refuses_what_it_cannot_decode_exactly():
    torch.manual_seed(0)
    model = build_model("tiny_stage1", overrides=SMALL).eval()
    layout = model.config.layout
    prompt = _prompt(layout, 1)
    first = torch.zeros(1, 1, layout.frame_height, layout.frame_width, dtype=torch.long)
    frames = dict(given_frames=(0,), generated_frames=(1, 2, 3, 4), given=first)
    with pytest.raises(ConfigError, match=r"deterministic sampler such as greedy; TopKSampler samples"):
        decode_frames_speculative(model, prompt, boi_id=BOI, options=DecodeOptions(TopKSampler(k=3)), **frames)
    with pytest.raises(ConfigError, match=r"generate frames in increasing order, each right after a given"):
        decode_frames_speculative(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()),
                                  given_frames=(0,), generated_frames=(2, 1, 3, 4), given=first)
    with pytest.raises(ConfigError, match=r"each right after a given or generated frame; got given \[0\], "
                                          r"generated \[2, 3, 4\]"):
        decode_frames_speculative(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()),
                                  given_frames=(0,), generated_frames=(2, 3, 4), given=first)
    with pytest.raises(ConfigError, match=r"does not run compiled"):
        decode_frames_speculative(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler(), compile=True),
                                  **frames)
    # Stage 2's given frames see each other (frame 0 sees frame 2), and frame 1 sees all of frame 2:
    # neither may be generated after frame 0 (the parallel-wave schedule refuses it too).
    stage2 = build_model("tiny_stage2", overrides=SMALL).eval()
    greedy = DecodeOptions(GreedySampler())
    with pytest.raises(ConfigError, match=r"needs masks under which no given frame sees a generated one; this "
                                          r"'interpolation' model's masks do not allow that for given frames "
                                          r"\[0\] and generated frames \[1, 2, 3, 4\]"):
        decode_frames_speculative(stage2, prompt, boi_id=BOI, options=greedy, **frames)
    with pytest.raises(ConfigError, match=r"no frame sees a frame that is neither given nor generated"):
        decode_frames_speculative(stage2, prompt, boi_id=BOI, options=greedy, given_frames=(0, 2),
                                  generated_frames=(1,), given=first.expand(-1, 2, -1, -1))
    # With nothing given, frame 1 still sees all of frame 2, which comes after it.
    masks = tuple(model_layer_masks(stage2))
    assert _mask_problem(stage2.config.layout, masks, (), (0, 1, 2, 3, 4)) == \
        "no generated slot sees a later one (causal in slot order)"
    assert _mask_problem(stage2.config.layout, masks, (0, 2, 4), (1, 3)) is None
    # Stage 1's frame 2 sees frame 1 (causal over frames): it cannot be given while frame 1 is generated.
    with pytest.raises(ConfigError, match=r"no given frame sees a generated one; this 'sequential'"):
        decode_frames_speculative(model, prompt, boi_id=BOI, options=greedy, given_frames=(0, 2),
                                  generated_frames=(1, 3), given=first.expand(-1, 2, -1, -1))


def test_the_cache_drops_only_slots_of_the_last_pass():
    torch.manual_seed(0)
    model = build_model("tiny_stage1", overrides=SMALL).eval()
    cache = model.new_cache()
    slots = torch.arange(4)
    cache.begin_pass(slots)
    cache.truncate(1)
    assert len(cache) == 3 and cache.temporal_slots.tolist() == [0, 1, 2]
    with pytest.raises(ShapeError, match=r"only the 3 slots of the last pass can be dropped"):
        cache.truncate(4)


# ---------------------------------------------------------------------------------------- stage 2
@pytest.fixture(scope="module")
def shipped_stage2():
    """The shipped tiny stage 2 (4x4 temporal windows, as tiny/sample builds it), float64."""
    model = build_model("tiny_stage2")
    load_model_weights(model, asset_path("tiny/stage2.safetensors"))
    return model.eval().double()


def _given_windows(layout, batch: int, seed: int) -> torch.Tensor:
    """Three given frames per row whose middle one is its neighbours' mix (some drafts then match)."""
    g = torch.Generator().manual_seed(seed)
    outer = torch.randint(0, 256, (batch, 2, layout.frame_height, layout.frame_width), generator=g)
    middle = torch.where(torch.rand(outer[:, 0].shape, generator=g) < 0.7, outer[:, 0], outer[:, 1])
    return torch.stack([outer[:, 0], middle, outer[:, 1]], dim=1)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(batch=st.integers(1, 3), max_draft=st.sampled_from([1, 3, 16, None]), windowed=st.booleans(),
       guided=st.booleans(), unmasked_prefix=st.booleans())
def test_stage2_in_between_frames_are_those_of_sequential_greedy_decoding(batch, max_draft, windowed, guided,
                                                                          unmasked_prefix):
    overrides = dict(SMALL) if windowed else dict(SMALL, temporal={"window": None, "shift": None})
    torch.manual_seed(1)
    model = build_model("tiny_stage2", overrides=overrides).eval().double()
    layout = model.config.layout
    prompt = _prompt(layout, batch)
    negative = _prompt(layout, 1, seed=9).expand(batch) if guided else None
    options = DecodeOptions(GreedySampler(), guidance=3.0 if guided else 1.0, negative=negative,
                            unmasked_prefix=unmasked_prefix)
    frames = dict(given_frames=(0, 2, 4), generated_frames=(1, 3), given=_given_windows(layout, batch, 5))
    plain = decode_frames(model, prompt, boi_id=BOI, options=options, **frames)
    fast = decode_frames_speculative(model, prompt, boi_id=BOI, options=options, max_draft=max_draft, **frames)
    # A random model rarely repeats its given frame, so this mostly checks the rejected drafts; the
    # accepted ones are checked on the shipped stage 2 below.
    assert torch.equal(plain.frames, fast.frames)


@pytest.mark.parametrize("guided,unmasked_prefix", [(False, False), (True, False), (False, True)])
def test_a_shipped_stage2_round_gives_the_same_frames_in_fewer_passes(shipped_stage2, guided, unmasked_prefix):
    # Five frames 2 fps apart of a validation clip, through the shipped tokenizer.
    clip = MovingShapes(num_clips=1, split="val", min_seconds=2.5, max_seconds=2.5)[0]
    pixels = torch.from_numpy(clip.frames[0:20:4]).permute(0, 3, 1, 2)
    frames = VQVAE.load(asset_path("tiny/vqvae")).eval().encode(pixels).unsqueeze(0)
    layout = shipped_stage2.config.layout
    prompt = _prompt(layout, 1)
    common = dict(guidance=3.0 if guided else 1.0, negative=_prompt(layout, 1, seed=9) if guided else None,
                  unmasked_prefix=unmasked_prefix, parallel=True)
    plain = interpolate_round(shipped_stage2, frames, prompt, boi_id=BOI,
                              options=DecodeOptions(GreedySampler(), **common))
    fast = interpolate_round(shipped_stage2, frames, prompt, boi_id=BOI,
                             options=DecodeOptions(GreedySampler(), speculative=True, **common))
    assert torch.equal(plain.frames, fast.frames)
    assert fast.passes * 3 < plain.passes * 2, (fast.passes, plain.passes)  # 92 -> 38-44


def test_a_full_batch_of_windows_is_refused_alike():
    # 16 windows fill a pass, so nothing is drafted; a sampling sampler or compile is refused all the same.
    torch.manual_seed(0)
    model = build_model("tiny_stage2", overrides=SMALL).eval()
    layout = model.config.layout
    frames = torch.zeros(1, 33, layout.frame_height, layout.frame_width, dtype=torch.long)
    for options in (DecodeOptions(TopKSampler(k=3), speculative=True),
                    DecodeOptions(GreedySampler(), speculative=True, compile=True)):
        with pytest.raises(ConfigError, match=r"TopKSampler samples|does not run compiled"):
            interpolate_round(model, frames, _prompt(layout, 1), boi_id=BOI, options=options)
