"""Property tests of the mask library against scalar definitions written from the paper's rules
(arXiv 2205.15868, Sec. 3.2) and the released masks (THUDM/CogVideo models/cogvideo_model.py)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import FrameRule, MaskSpec, TemporalConfig, spatial_mask, temporal_mask
from cogframe.errors import ShapeError

# ------------------------------------------------------------------- the paper's rules, literally


def spec_bin(coord: int, size: int, shift: int) -> int:
    """Swin window ``bin``: unshifted ``coord // size``; shifted bins ``[0,s), [s,s+A), ...``."""
    if shift == 0:
        return coord // size
    return 0 if coord < shift else 1 + (coord - shift) // size


def spec_frame_allowed(rule, q, k, window, shift, extent) -> bool:
    """Scalar reference of every frame rule, written from the paper's rules and the release's masks."""
    (qt, qx, qy, qp), (kt, kx, ky, kp) = q, k
    if rule is FrameRule.OWN_FRAME_CAUSAL:
        return kt == qt and kp <= qp
    if rule is FrameRule.OWN_FRAME_INTERPOLATION:
        return kt == qt and (qt % 2 == 0 or kp <= qp)
    if window is not None:
        if spec_bin(qx, window[0], shift[0]) != spec_bin(kx, window[0], shift[0]):
            return False
        if spec_bin(qy, window[1], shift[1]) != spec_bin(ky, window[1], shift[1]):
            return False
    if extent is not None and abs(qt - kt) > extent:
        return False
    if rule is FrameRule.SEQUENTIAL:
        return kt < qt or (kt == qt and kp <= qp)
    # temporal_allowed_interp
    if qt % 2 == 0:
        return kt % 2 == 0
    if kt % 2 == 0:
        return True
    if kt == qt:
        return kp <= qp
    return kt < qt


def spec_allowed(spec: MaskSpec, qs: int, ks: int, valid: list[bool]) -> bool:
    layout = spec.layout
    if ks < layout.text_len:
        return valid[ks] or (qs == ks)
    if qs < layout.text_len:
        return False

    def c(s):
        m = s - layout.text_len
        t, p = divmod(m, layout.tokens_per_frame)
        x, y = divmod(p, layout.frame_width)
        return t, x, y, p

    return spec_frame_allowed(spec.rule, c(qs), c(ks), spec.window, spec.shift, spec.temporal_extent)


# ----------------------------------------------------------------------------- strategies


@st.composite
def layouts(draw, max_frames=5):
    text_len = draw(st.integers(0, 5))
    frames = draw(st.integers(1, max_frames))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    offset = text_len + draw(st.integers(0, 3))
    tpf = h * w
    return TokenLayout(text_len, frames, h, w, offset, offset + tpf + draw(st.integers(0, 3)),
                       (frames - 1) * tpf + draw(st.integers(0, 3)))


@st.composite
def mask_cases(draw):
    layout = draw(layouts())
    stage = draw(st.sampled_from([Stage.SEQUENTIAL, Stage.INTERPOLATION]))
    channel = draw(st.sampled_from(["spatial", "temporal"]))
    windowed = draw(st.booleans())
    window = (draw(st.integers(1, layout.frame_height + 1)),
              draw(st.integers(1, layout.frame_width + 1))) if windowed else None
    shift = None
    if window is not None and draw(st.booleans()):
        shift = (draw(st.integers(0, window[0] - 1)), draw(st.integers(0, window[1] - 1)))
    extent = draw(st.one_of(st.none(), st.integers(0, 4)))
    layer = draw(st.integers(0, 3))
    if channel == "spatial":
        spec = spatial_mask(layout, stage)
    else:
        spec = temporal_mask(layout, stage, layer, TemporalConfig(window, shift, extent))
    pad = draw(st.integers(0, layout.text_len))
    batch_pad = [pad, draw(st.integers(0, layout.text_len))]
    valid = torch.tensor([[i >= p for i in range(layout.text_len)] for p in batch_pad],
                         dtype=torch.bool).reshape(2, layout.text_len)
    return layout, stage, spec, layer, valid


SETTINGS = settings(max_examples=120, deadline=None)


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(mask_cases())
def test_dense_equals_spec_definition(case):
    layout, _, spec, _, valid = case
    dense = spec.dense(text_valid=valid)
    assert dense.shape == (2, layout.seq_len, layout.seq_len)
    for b in range(2):
        v = valid[b].tolist()
        expected = torch.tensor(
            [[spec_allowed(spec, q, k, v) for k in range(layout.seq_len)]
             for q in range(layout.seq_len)], dtype=torch.bool)
        assert torch.equal(dense[b], expected)


@SETTINGS
@given(mask_cases())
def test_no_query_sees_a_later_key_in_generation_order(case):
    layout, stage, spec, _, valid = case
    slots = layout.all_slots()
    rank = layout.generation_rank(stage, slots)
    dense = spec.dense(text_valid=valid)
    later = rank[None, :] > rank[:, None]
    assert not (dense & later).any()


@SETTINGS
@given(mask_cases())
def test_every_query_sees_a_key(case):
    _, _, spec, _, valid = case
    assert spec.dense(text_valid=valid).any(-1).all()


@SETTINGS
@given(mask_cases())
def test_frame_queries_see_all_valid_text_and_no_pad(case):
    layout, _, spec, _, valid = case
    dense = spec.dense(text_valid=valid)
    frame_rows = dense[:, layout.text_len:, : layout.text_len]
    assert torch.equal(frame_rows, valid[:, None, :].expand_as(frame_rows))
    # text queries never see frames
    assert not dense[:, : layout.text_len, layout.text_len:].any()


@SETTINGS
@given(mask_cases())
def test_temporal_keys_in_window_and_extent(case):
    layout, _, spec, layer, valid = case
    if not spec.is_temporal:
        return
    dense = spec.dense(text_valid=valid)[0]
    slots = layout.all_slots()
    c = layout.coords(slots)
    q_idx, k_idx = torch.nonzero(dense[layout.text_len:, layout.text_len:], as_tuple=True)
    q_idx, k_idx = q_idx + layout.text_len, k_idx + layout.text_len
    if spec.window is not None:
        if layer % 2 == 0:
            assert spec.shift == (0, 0)
        for axis, coord in ((0, c.x), (1, c.y)):
            size, shift = spec.window[axis], spec.shift[axis]
            bq = [spec_bin(int(v), size, shift) for v in coord[q_idx]]
            bk = [spec_bin(int(v), size, shift) for v in coord[k_idx]]
            assert bq == bk
    if spec.temporal_extent is not None:
        assert ((c.t[q_idx] - c.t[k_idx]).abs() <= spec.temporal_extent).all()


@SETTINGS
@given(mask_cases())
def test_given_frames_never_see_generated_frames(case):
    layout, stage, spec, _, valid = case
    if stage is not Stage.INTERPOLATION:
        return
    dense = spec.dense(text_valid=valid)[0]
    t = layout.coords(layout.all_slots()).t
    given = (t >= 0) & (t % 2 == 0)
    generated = (t >= 0) & (t % 2 == 1)
    assert not dense[given][:, generated].any()


@SETTINGS
@given(mask_cases(), st.data())
def test_subset_and_reordered_slots_agree_with_dense(case, data):
    layout, stage, spec, _, valid = case
    full = spec.dense(text_valid=valid)
    order = layout.inference_slots(stage)
    q = torch.tensor(data.draw(st.lists(st.integers(0, layout.seq_len - 1), min_size=1, max_size=6)))
    sub = spec.dense(q, order, text_valid=valid)
    assert torch.equal(sub, full[:, q][:, :, order])
    mod = spec.mask_mod(q, order, valid)
    for b in range(2):
        for i in range(len(q)):
            for j in range(len(order)):
                got = bool(mod(torch.tensor(b), torch.tensor(0), torch.tensor(i), torch.tensor(j)))
                assert got == bool(sub[b, i, j])


# ----------------------------------------------------------------------------- the 9B masks


def test_cogvideo_stage2_window_counts_match_spec_reference():
    layout = TokenLayout(64, 5, 20, 20, 512, 1024, 2000)
    cfg = TemporalConfig(window=(10, 10))
    for layer in (0, 1):
        spec = temporal_mask(layout, "interpolation", layer, cfg)
        assert spec.shift == ((0, 0) if layer == 0 else (5, 5))
        dense = spec.dense()[0, 64:, 64:]
        gen = torch.Generator().manual_seed(layer)
        q = torch.randint(0, 2000, (3000,), generator=gen)
        k = torch.randint(0, 2000, (3000,), generator=gen)
        for qi, ki in zip(q.tolist(), k.tolist()):
            ref = spec_allowed(spec, qi + 64, ki + 64, [True] * 64)
            assert bool(dense[qi, ki]) == ref


def test_released_stage1_temporal_is_full_causal():
    layout = TokenLayout(4, 3, 2, 3, 4, 10, 12)
    spec = temporal_mask(layout, "sequential", 1, TemporalConfig())
    frames = spec.dense()[0, 4:, 4:]
    assert torch.equal(frames, torch.ones(18, 18, dtype=torch.bool).tril())


def test_bad_window_and_shift_are_refused():
    layout = TokenLayout(2, 2, 4, 4, 2, 18, 16)
    for kwargs, needle in [
        (dict(window=(0, 2)), "positive"),
        (dict(window=(2, 2), shift=(2, 0)), "0 <= shift < window"),
        (dict(shift=(1, 1)), "needs a window"),
        (dict(temporal_extent=-1), "temporal_extent"),
    ]:
        try:
            MaskSpec(layout, FrameRule.SEQUENTIAL, **kwargs)
        except ShapeError as exc:
            assert needle in str(exc)
        else:
            raise AssertionError(f"{kwargs} accepted")


def test_text_to_image_has_no_temporal_channel():
    layout = TokenLayout(2, 1, 2, 2, 2, 8, 0)
    try:
        temporal_mask(layout, "text_to_image", 0)
    except ShapeError as exc:
        assert "no temporal channel" in str(exc)
    else:
        raise AssertionError("accepted")
