"""TokenLayout: sizes, BOI-shift, positions, loss masks and inference order (the release's layout)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.presets import model_config
from cogframe.errors import ShapeError


@pytest.fixture(scope="module")
def cogvideo():
    return model_config("cogvideo_9b_stage1").layout


def test_cogvideo_layout_numbers(cogvideo):
    # The release's layout 64,464,2064: 64 text + 5 x 400 frame slots; the raw sample is one longer (2065).
    assert cogvideo.seq_len == 2064
    assert cogvideo.frame_start == 64
    assert cogvideo.frame_range(1).start == 464
    assert cogvideo.extra_position_start == 912
    pos = cogvideo.position_ids()[0]
    assert pos[64] == 512 and pos[463] == 911 and pos[464] == 912 and pos[-1] == 2511


def test_left_padded_text_positions(cogvideo):
    valid = torch.zeros(1, 64, dtype=torch.bool)
    valid[:, 60:] = True
    pos = cogvideo.position_ids(text_valid=valid)[0]
    assert pos[:60].eq(0).all() and pos[60:64].tolist() == [0, 1, 2, 3]


def test_boi_shift_convention():
    layout = TokenLayout(2, 2, 2, 2, 2, 6, 4)
    text = torch.tensor([[100, 101]])
    frames = torch.arange(8).reshape(1, 2, 2, 2)
    inp, lab = layout.build_input(text, frames, boi_id=99)
    assert inp.tolist() == [[100, 101, 99, 0, 1, 2, 99, 4, 5, 6]]
    assert lab.tolist() == [[-100, -100, 0, 1, 2, 3, 4, 5, 6, 7]]


def test_loss_masks_per_stage(cogvideo):
    # Stage 1 learns frames 1-4; stage 2 learns frames 1 and 3 (pretrain_cogvideo.py).
    m1 = cogvideo.loss_mask("sequential")
    assert m1[:464].sum() == 0 and m1[464:].all()
    m2 = cogvideo.loss_mask("interpolation")
    expected = torch.zeros(2064, dtype=torch.bool)
    expected[464:864] = True
    expected[1264:1664] = True
    assert torch.equal(m2, expected)
    t2i = model_config("cogview2_6b").layout
    assert t2i.loss_mask("text_to_image")[64:].all()


def test_stage_1_loss_can_count_frame_0(cogvideo):
    # A stage 1 without a text-to-image base (train.first_frame_loss) learns frame 0 as well.
    with_first = cogvideo.loss_mask("sequential", first_frame=True)
    frame_0 = cogvideo.frame_range(0)
    assert with_first[frame_0.start:frame_0.stop].all() and not with_first[:frame_0.start].any()
    assert torch.equal(with_first[frame_0.stop:], cogvideo.loss_mask("sequential")[frame_0.stop:])
    with pytest.raises(ValueError, match="stage-1"):
        cogvideo.loss_mask("interpolation", first_frame=True)


def test_stage2_inference_order_keeps_natural_positions(cogvideo):
    assert cogvideo.inference_frame_order("interpolation") == (0, 2, 4, 1, 3)
    slots = cogvideo.inference_slots("interpolation")
    pos = cogvideo.position_ids(slots)[0]
    starts = [pos[64 + 400 * i].item() for i in range(5)]
    assert starts == [512, 512 + 800, 512 + 1600, 512 + 400, 512 + 1200]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 6), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(0, 4))
def test_positions_are_unique_and_in_table(text_len, frames, h, w, slack):
    layout = TokenLayout(text_len, frames, h, w, text_len + slack, text_len + slack + h * w,
                         (frames - 1) * h * w)
    pos = layout.position_ids()[0]
    frame_pos = pos[text_len:]
    assert frame_pos.unique().numel() == frame_pos.numel()
    assert int(frame_pos.max()) < layout.extra_position_start + layout.extra_position_rows
    c = layout.coords(layout.all_slots())
    f = slice(text_len, None)
    assert torch.equal(c.x[f] * w + c.y[f], c.p[f]) and (c.t[f] < frames).all()


def test_bad_layouts_name_the_field():
    with pytest.raises(ShapeError, match="image_position_offset"):
        TokenLayout(8, 1, 2, 2, 4, 16, 0)
    with pytest.raises(ShapeError, match="extra_position_rows"):
        TokenLayout(2, 3, 2, 2, 2, 16, 4)
    with pytest.raises(ShapeError, match="base position table"):
        TokenLayout(2, 1, 4, 4, 2, 10, 0)
    layout = TokenLayout(2, 2, 2, 2, 2, 6, 4)
    with pytest.raises(ShapeError, match=r"dimension 2 \(height\)"):
        layout.build_input(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, 3, 2), 0)
    with pytest.raises(ShapeError, match="unknown stage"):
        layout.loss_mask("stage3")


def test_generation_rank_orders_stages(cogvideo):
    slots = cogvideo.all_slots()
    r1 = cogvideo.generation_rank(Stage.SEQUENTIAL, slots)
    assert torch.equal(r1[64:], torch.arange(1, 2001))
    r2 = cogvideo.generation_rank(Stage.INTERPOLATION, slots)
    assert r2[64:464].eq(0).all() and r2[464] == 1 and r2[1264] == 401
