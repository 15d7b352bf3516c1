"""Frame-rate samplers: the lowest-fps rule (property test), prefixes, errors, registry names."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.io.frame_rate import duration_prefix, min_frames_for_rate, supports_rate
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from cogframe.plugins.frame_rate import FixedFps, InterpolationWindows, LowestFps, RandomFps

RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def test_duration_prefix():
    assert duration_prefix(1.0) == "4.0s"  # 5 frames at 1 fps span 4 seconds (the release's duration prefix)
    assert duration_prefix(0.25) == "16.0s"
    assert duration_prefix(8.0) == "0.5s"
    assert duration_prefix(2.0, fmt="{:.1f}秒") == "2.0秒"
    assert duration_prefix(4.0, frames=3) == "0.5s"


def _spans(indices: list[int], num_frames: int) -> bool:
    return indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] < num_frames


@settings(max_examples=300, deadline=None)
@given(num_frames=st.integers(1, 600), native=st.sampled_from([4.0, 8.0, 24.0, 25.0, 30.0]),
       seed=st.integers(0, 2**16))
def test_lowest_fps_picks_the_lowest_rate_that_yields_five_frames(num_frames, native, seed):
    sampler = LowestFps(rates=RATES)
    usable = [r for r in RATES if supports_rate(num_frames, native, r)]
    if not usable:
        with pytest.raises(DataError, match=f"{num_frames} frames"):
            sampler(num_frames, native, random.Random(seed))
        return
    choice = sampler(num_frames, native, random.Random(seed))
    # The chosen rate yields 5 distinct in-range frames, spaced by native/fps frames...
    assert len(choice.frame_indices) == 5 and _spans(choice.frame_indices, num_frames)
    step = native / choice.fps
    gaps = [b - a for a, b in zip(choice.frame_indices, choice.frame_indices[1:])]
    assert all(abs(g - step) <= 1 for g in gaps)
    assert choice.frame_indices[-1] - choice.frame_indices[0] == pytest.approx(4 * step, abs=1)
    # ...and the next lower rate of the set would need more frames than the clip has.
    lower = [r for r in RATES if r < choice.fps]
    if lower:
        assert num_frames < min_frames_for_rate(max(lower), native)
    assert choice.prefix == duration_prefix(choice.fps)


def test_lowest_fps_examples():
    sampler = LowestFps()
    rng = random.Random(0)
    assert sampler(33, 8.0, rng).fps == 1.0   # 33 frames at 8 fps = 4 s span: exactly 1 fps
    assert sampler(32, 8.0, rng).fps == 2.0   # one frame short of that
    assert sampler(129, 8.0, rng).fps == 0.25
    choice = sampler(5, 8.0, rng)
    assert choice.fps == 8.0 and choice.frame_indices == [0, 1, 2, 3, 4] and choice.prefix == "0.5s"


def test_too_short_clip_names_length_and_minimum():
    with pytest.raises(DataError, match=r"4 frames \(0.50 s at 8 fps\).*needs 5 frames"):
        LowestFps()(4, 8.0, random.Random(0))


def test_rates_above_native_fps_are_never_used():
    with pytest.raises(DataError, match="above the clip's native 2 fps"):
        LowestFps(rates=[4, 8])(100, 2.0, random.Random(0))


def test_fixed_fps():
    choice = FixedFps(fps=1.0)(40, 8.0, random.Random(3))
    assert choice.fps == 1.0 and choice.prefix == "4.0s"
    assert [b - a for a, b in zip(choice.frame_indices, choice.frame_indices[1:])] == [8, 8, 8, 8]
    with pytest.raises(DataError, match="too short"):
        FixedFps(fps=1.0)(20, 8.0, random.Random(0))


def test_random_fps_only_picks_supported_rates():
    sampler = RandomFps(rates=RATES)
    picked = {sampler(40, 8.0, random.Random(i)).fps for i in range(200)}
    assert picked == {1.0, 2.0, 4.0, 8.0}  # 0.5 fps would need 65 frames


def test_interpolation_windows():
    sampler = InterpolationWindows()
    choices = [sampler(64, 8.0, random.Random(i)) for i in range(100)]
    assert {c.fps for c in choices} == {2.0, 4.0, 8.0}
    assert {c.prefix for c in choices} == {"2.0s", "1.0s", "0.5s"}
    assert len({c.frame_indices[0] for c in choices}) > 5  # random window starts
    assert {sampler(12, 8.0, random.Random(i)).fps for i in range(50)} == {4.0, 8.0}


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="positive"):
        LowestFps(rates=[0, 1])
    with pytest.raises(ConfigError, match="non-empty"):
        RandomFps(rates=[])
    with pytest.raises(ConfigError, match="at least 2"):
        FixedFps(frames=1)


def test_registered_and_buildable():
    regs = get_registries()
    assert {"lowest_fps", "fixed_fps", "random_fps", "interpolation_windows"} <= set(regs.names("frame_rate_sampler"))
    sampler = regs.build("frame_rate_sampler", {"name": "lowest_fps", "rates": [1, 2], "prefix_format": "{:.1f}秒"})
    assert sampler(40, 8.0, random.Random(0)).prefix == "4.0秒"


def test_default_rate_set_is_named_as_cogframes_choice_not_the_papers():
    import cogframe.core.io.frame_rate as core_rates
    import cogframe.plugins.frame_rate as plugin

    # The paper does not list its predefined set; cogframe's default must not claim to be it.
    assert not hasattr(plugin, "PAPER_RATES")
    assert core_rates.DEFAULT_RATES == RATES and "cogframe's choice" in core_rates.__doc__ + (
        plugin.__doc__ or "")
    # It contains every rate the paper does name: 0.25 and 1 fps (stage 1) and 2, 4, 8 fps (stage 2).
    assert {0.25, 1.0, 2.0, 4.0, 8.0} <= set(core_rates.DEFAULT_RATES)
    assert core_rates.INTERPOLATION_RATES == (2.0, 4.0, 8.0)
    built = get_registries().build("frame_rate_sampler", {"name": "lowest_fps"})
    assert built.rates == core_rates.DEFAULT_RATES
    assert get_registries().build("frame_rate_sampler", {"name": "interpolation_windows"}).rates == (2.0, 4.0, 8.0)
