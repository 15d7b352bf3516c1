"""Property tests of the super-resolution layout and mask against a literal transcription of the
release's rule (THUDM/CogView2 sr_pipeline/dsr_model.py ``sparse_attention_2d_light`` and
dsr_sampling.py; the window loop of Sleepychord/Image-Local-Attention src/kernels.cuh ``cc2k``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.sr_config import SR_PRESETS, sr_model_config, sr_preset_names
from cogframe.core.model.sr_layout import SuperResolutionLayout
from cogframe.core.model.sr_masks import Border, LocalWindows, SuperResolutionMask
from cogframe.errors import ConfigError, ShapeError

SETTINGS = settings(max_examples=60, deadline=None)

# ------------------------------------------------------------------- the rule, literally


def kernel_window(centre: int, size: int) -> list[int]:
    """The cells ``cc2k`` visits along one axis: ``centre - (size >> 1) + i`` for ``i < size``."""
    return [centre - (size >> 1) + i for i in range(size)]


def region(layout: SuperResolutionLayout, slot: int):
    """("text", -1, -1) / ("low", x, y) / ("high", x, y) of a slot, from the layout's sizes."""
    if slot < layout.text_len:
        return "text", -1, -1
    m = slot - layout.text_len
    if m < layout.low_height * layout.low_width:
        return "low", m // layout.low_width, m % layout.low_width
    m -= layout.low_height * layout.low_width
    return "high", m // (layout.low_width * layout.scale), m % (layout.low_width * layout.scale)


def literal_allowed(layout, windows, q_slot, k_slot, text_valid) -> bool:
    """Whether query slot sees key slot: text/low-res rows as dsr_sampling's attention_mask,
    high-res rows as the two f_similar windows (no text)."""
    qr, qx, qy = region(layout, q_slot)
    kr, kx, ky = region(layout, k_slot)
    if qr == "high":
        if kr == "high":
            return kx in kernel_window(qx, windows.high[0]) and ky in kernel_window(qy, windows.high[1])
        if kr == "low":
            s = layout.scale
            return kx in kernel_window(qx // s, windows.low[0]) and ky in kernel_window(qy // s, windows.low[1])
        return False
    if kr == "text":
        return bool(text_valid[k_slot]) or (qr == "text" and q_slot == k_slot)
    if kr == "high" or qr == "text":
        return False
    return windows.lowres == "bidirectional" or k_slot <= q_slot


def literal_phantoms(layout, windows, q_slot) -> tuple[int, int]:
    qr, qx, qy = region(layout, q_slot)
    if qr != "high":
        return 0, 0
    s = layout.scale
    low = sum(not (0 <= x < layout.low_height and 0 <= y < layout.low_width)
              for x in kernel_window(qx // s, windows.low[0]) for y in kernel_window(qy // s, windows.low[1]))
    high = sum(not (0 <= x < layout.low_height * s and 0 <= y < layout.low_width * s)
               for x in kernel_window(qx, windows.high[0]) for y in kernel_window(qy, windows.high[1]))
    return low, high


@st.composite
def cases(draw):
    text_len = draw(st.integers(0, 3))
    layout = SuperResolutionLayout(
        text_len=text_len, low_height=draw(st.integers(1, 4)), low_width=draw(st.integers(1, 4)),
        scale=draw(st.integers(1, 3)), image_position_offset=8, base_position_rows=40,
        lowres_position_shift=draw(st.integers(0, 1)))
    windows = LocalWindows(high=(draw(st.integers(1, 6)), draw(st.integers(1, 6))),
                           low=(draw(st.integers(1, 5)), draw(st.integers(1, 5))),
                           lowres=draw(st.sampled_from(["bidirectional", "causal"])))
    pad = draw(st.integers(0, text_len))
    valid = [False] * pad + [True] * (text_len - pad)
    n = layout.seq_len
    q = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=12, unique=True))
    k = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20, unique=True))
    return layout, windows, valid, q, k


@SETTINGS
@given(cases())
def test_mask_equals_the_literal_rule(case):
    layout, windows, valid, q, k = case
    mask = SuperResolutionMask(layout, windows)
    text_valid = torch.tensor([valid], dtype=torch.bool).reshape(1, layout.text_len)
    got = mask.dense(torch.tensor(q), torch.tensor(k), text_valid)[0]
    for i, qs in enumerate(q):
        for j, ks in enumerate(k):
            assert bool(got[i, j]) == literal_allowed(layout, windows, qs, ks, valid), (qs, ks)


@SETTINGS
@given(cases())
def test_every_row_sees_something_and_no_row_leaks(case):
    layout, windows, valid, _, _ = case
    mask = SuperResolutionMask(layout, windows)
    text_valid = torch.tensor([valid], dtype=torch.bool).reshape(1, layout.text_len)
    dense = mask.dense(text_valid=text_valid)[0]
    assert bool(dense.any(-1).all())                                  # no empty softmax row
    assert not bool(dense[: layout.high_start, layout.high_start:].any())  # base rows never see high-res
    assert not bool(dense[layout.high_start:, : layout.text_len].any())   # high-res rows never see text
    # A high-res query always sees its own cell and its low-res parent cell.
    for j in layout.high_range():
        _, x, y = region(layout, j)
        assert bool(dense[j, j])
        assert bool(dense[j, layout.low_slot(x // layout.scale, y // layout.scale)])


@SETTINGS
@given(cases())
def test_phantom_keys_count_the_out_of_grid_window(case):
    layout, windows, _, q, _ = case
    n_low, n_high = SuperResolutionMask(layout, windows).phantom_keys(torch.tensor(q))
    for i, qs in enumerate(q):
        assert (int(n_low[i]), int(n_high[i])) == literal_phantoms(layout, windows, qs)


def test_dense_refuses_what_a_boolean_mask_cannot_say():
    layout = sr_model_config("tiny_dsr").layout
    base_rows = torch.arange(layout.high_start)
    for windows in (LocalWindows(border="zero"), LocalWindows(add_scalar=0.5)):
        mask = SuperResolutionMask(layout, windows)
        assert not mask.exact_as_boolean
        mask.dense(base_rows, base_rows)  # the base rows are boolean-exact
        with pytest.raises(ShapeError, match="sr_local_window"):
            mask.dense()
    assert SuperResolutionMask(layout).rule.value == "super_resolution"


# ------------------------------------------------------------------- layout


@SETTINGS
@given(cases())
def test_coordinates_and_slots_round_trip(case):
    layout = case[0]
    c = layout.coords(layout.all_slots())
    for slot in range(layout.seq_len):
        kind, x, y = region(layout, slot)
        assert (bool(c.is_text[slot]), bool(c.is_low[slot]), bool(c.is_high[slot])) == (
            kind == "text", kind == "low", kind == "high")
        assert (int(c.x[slot]), int(c.y[slot])) == (x, y)
        if kind == "low":
            assert layout.low_slot(x, y) == slot
        if kind == "high":
            assert layout.high_slot(x, y) == slot


def test_positions_follow_the_release():
    layout = sr_model_config("cogview2_dsr").layout
    assert (layout.text_len, layout.low_tokens, layout.high_tokens, layout.seq_len) == (96, 400, 3600, 4096)
    assert layout.base_position_rows + layout.high_tokens == 4624  # the release's new_sequence_length
    valid = torch.zeros(1, 96, dtype=torch.bool)
    valid[:, 90:] = True
    pos = layout.position_ids(text_valid=valid)[0]
    assert pos[:90].tolist() == [0] * 90 and pos[90:96].tolist() == list(range(6))
    assert pos[96:496].tolist() == list(range(513, 913))       # torch.arange(513, 513 + 400)
    assert pos[496:].tolist() == list(range(1024, 4624))       # torch.arange(1024, 1024 + 3600)


def test_build_input_and_labels():
    layout = sr_model_config("tiny_dsr").layout
    text = torch.randint(300, 384, (2, layout.text_len))
    low = torch.randint(0, 256, (2, layout.low_height, layout.low_width))
    high = torch.randint(0, 256, (2, layout.high_height, layout.high_width))
    ids, labels = layout.build_input(text, low, 299, high)
    assert ids.shape == labels.shape == (2, layout.seq_len)
    assert torch.equal(ids[:, layout.low_start:layout.high_start], low.reshape(2, -1))
    assert bool((ids[:, layout.high_start:] == 299).all())
    assert bool((labels[:, : layout.high_start] == -100).all())
    assert torch.equal(layout.high_grid(labels), high)
    assert torch.equal(layout.loss_mask(), labels[0] != -100)
    assert layout.build_input(text, low, 299)[1] is None
    with pytest.raises(ShapeError, match="dimension 1"):
        layout.build_input(text, high, 299)


def test_presets_and_config_errors():
    assert sr_preset_names() == sorted(SR_PRESETS) == ["cogview2_dsr", "tiny_dsr"]
    tiny = sr_model_config("tiny_dsr")
    assert (tiny.layout.high_height, tiny.layout.high_width) == (24, 24)
    assert tiny.windows.high == (9, 5) and tiny.windows.low == (5, 5)
    assert sr_model_config("tiny_dsr", {"layout": {"scale": 2}}).layout.high_height == 16
    assert sr_model_config("tiny_dsr", {"windows": {"border": "zero"}}).windows.border is Border.ZERO
    with pytest.raises(ConfigError, match="tiny_dsr"):
        sr_model_config("tiny_dsrr")
    with pytest.raises(ConfigError, match="Did you mean 'scale'"):
        sr_model_config("tiny_dsr", {"layout": {"scal": 2}})
    with pytest.raises(ConfigError, match="frame grid"):
        sr_model_config("tiny_dsr", {"layout": {"low_height": 4}})
    with pytest.raises(ConfigError, match="lowres_position_shift"):
        sr_model_config("tiny_dsr", {"layout": {"lowres_position_shift": 1}})
    with pytest.raises(ConfigError, match="text-to-image"):
        sr_model_config("tiny_dsr", {"backbone": "tiny_stage1"})
    with pytest.raises(ConfigError, match="border"):
        sr_model_config("tiny_dsr", {"windows": {"border": "wrap"}})
