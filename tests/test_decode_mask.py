"""``DecodeMask`` (KV-cached decoding's masks): a table lookup equal to the predicate, bit for bit."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import MaskSpec, TemporalConfig, spatial_mask, temporal_mask
from cogframe.core.model.transformer import MASK_TABLE_MAX_SLOTS, DecodeMask, decode_mask

LAYOUT = TokenLayout(6, 3, 4, 4, 6, 6 + 16, 2 * 16)


def _masks() -> list[MaskSpec]:
    out = []
    for stage in (Stage.SEQUENTIAL, Stage.INTERPOLATION):
        out.append(spatial_mask(LAYOUT, stage))
        for layer in (0, 1):
            for config in (TemporalConfig(), TemporalConfig((2, 2), None, 1), TemporalConfig((3, 2), (1, 1))):
                out.append(temporal_mask(LAYOUT, stage, layer, config))
    return out


MASKS = _masks()


def _draw_slots(data) -> tuple[torch.Tensor, torch.Tensor]:
    """A pass's query slots (up to 12) and the cached key slots, distinct and in any order."""
    n = LAYOUT.seq_len
    q = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=12, unique=True))
    k = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    return torch.tensor(q), torch.tensor(k)


@settings(max_examples=60, deadline=None)
@given(mask_index=st.integers(0, len(MASKS) - 1), data=st.data())
def test_decode_mask_equals_the_predicate(mask_index, data):
    mask = MASKS[mask_index]
    q_slots, k_slots = _draw_slots(data)
    batch = data.draw(st.integers(1, 3))
    pads = data.draw(st.lists(st.integers(0, LAYOUT.text_len - 1), min_size=batch, max_size=batch))
    text_valid = torch.ones(batch, LAYOUT.text_len, dtype=torch.bool)
    for row, pad in enumerate(pads):
        text_valid[row, :pad] = False  # left padding
    fast = decode_mask(mask)
    assert isinstance(fast, DecodeMask) and fast != mask and decode_mask(mask) is fast
    for tv in (text_valid, None):
        assert torch.equal(fast.dense(q_slots, k_slots, tv), mask.dense(q_slots, k_slots, tv))
    # The structured description is the plain mask's (what swin3d and flex read).
    assert (fast.rule, fast.window, fast.shift, fast.temporal_extent) == \
        (mask.rule, mask.window, mask.shift, mask.temporal_extent)


def test_long_layouts_fall_back_to_the_predicate():
    frames = MASK_TABLE_MAX_SLOTS // 16 + 1
    layout = TokenLayout(4, frames, 4, 4, 4, 4 + 16, (frames - 1) * 16)
    mask = temporal_mask(layout, Stage.SEQUENTIAL, 0)
    slots = torch.tensor([layout.seq_len - 1])
    keys = torch.arange(layout.seq_len)
    assert torch.equal(decode_mask(mask).dense(slots, keys), mask.dense(slots, keys))
    assert decode_mask(None) is None


@settings(max_examples=60, deadline=None)
@given(mask_index=st.integers(0, len(MASKS) - 1), data=st.data())
def test_visible_keys_are_exactly_the_keys_some_query_may_see(mask_index, data):
    """Attending to the visible keys only is exact: the others are masked for every query."""
    mask = MASKS[mask_index]
    q_slots, k_slots = _draw_slots(data)
    seen = mask.dense(q_slots, k_slots, None)[0].any(0)  # [Sk]: some query may see the key
    keep = decode_mask(mask).visible_keys(q_slots, k_slots)
    if keep is None:
        assert bool(seen.all())
    else:
        assert not bool(seen.all())
        assert torch.equal(keep, seen.nonzero().squeeze(-1))  # in key order, no repeats


def test_windowed_masks_bound_the_keys_a_query_sees_and_full_causal_ones_do_not():
    layout = TokenLayout(4, 5, 8, 8, 4, 4 + 64, 4 * 64)
    last = torch.tensor([layout.seq_len - 1])
    cached = torch.arange(layout.seq_len)
    windowed = decode_mask(temporal_mask(layout, Stage.SEQUENTIAL, 0, TemporalConfig((2, 2), None, 1)))
    keep = windowed.visible_keys(last, cached)
    assert keep is not None and keep.numel() < layout.seq_len // 4
    full = decode_mask(temporal_mask(layout, Stage.SEQUENTIAL, 0, TemporalConfig()))
    assert full.visible_keys(last, cached) is None
