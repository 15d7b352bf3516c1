"""Video files: mp4/gif round trips (frame count, fps, pixels), atomic writes, resize, contact sheets."""

from __future__ import annotations

import numpy as np
import pytest

from cogframe.core.io import video as video_mod
from cogframe.core.io.atomic import is_temp_file
from cogframe.core.io.video import VideoClip, contact_sheet, read_video, resize_center_crop, write_video
from cogframe.errors import DataError, ShapeError


def _moving_square(frames: int = 12, size: int = 32) -> np.ndarray:
    out = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        # Moves one pixel every 3 frames, so consecutive frames are often identical: GIF writers
        # like to merge those, and the reader must still return every frame.
        out[t, 4:12, 4 + t // 3:12 + t // 3] = (255, 0, 0)
    out[:, 20:26, 20:26] = (0, 255, 255)
    return out


def test_mp4_round_trip_32x32(tmp_path):
    frames = _moving_square()
    path = write_video(tmp_path / "clip.mp4", frames, fps=8)
    back, fps = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == 8.0
    # H.264 is lossy (and yuv420p halves chroma), but the content must be clearly the same.
    assert np.abs(back.astype(int) - frames).mean() < 6


def test_mp4_keeps_small_sizes(tmp_path):
    frames = _moving_square(6, size=8)  # imageio's default macro block (16) would rescale this to 16x16
    back, _ = read_video(write_video(tmp_path / "small.mp4", frames, fps=4))
    assert back.shape == (6, 8, 8, 3)


def test_mp4_odd_size_is_a_clear_error(tmp_path):
    with pytest.raises(ShapeError, match="height 7.*even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 7, 8, 3), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps,expected_fps", [(10, 10.0), (4, 4.0), (8, 1000 / 120)])
def test_gif_round_trip_keeps_every_frame(tmp_path, fps, expected_fps):
    frames = _moving_square()
    back, got_fps = read_video(write_video(tmp_path / "clip.gif", frames, fps=fps))
    assert back.shape == frames.shape
    np.testing.assert_array_equal(back, frames)  # GIF is lossless for <= 256 colours
    assert got_fps == pytest.approx(expected_fps)  # GIF delays are whole centiseconds


def test_gif_static_clip_keeps_frame_count(tmp_path):
    frames = np.repeat(_moving_square(1), 7, axis=0)
    back, fps = read_video(write_video(tmp_path / "static.gif", frames, fps=5))
    assert back.shape[0] == 7 and fps == 5.0


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(tmp, frames, fps, ext):
        tmp.write_bytes(b"half a video")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(video_mod, "_write_ffmpeg", broken)
    with pytest.raises(RuntimeError):
        write_video(tmp_path / "clip.mp4", _moving_square(), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "clip.gif"
    write_video(path, _moving_square(4), fps=4)
    write_video(path, _moving_square(6), fps=4)
    assert read_video(path)[0].shape[0] == 6
    assert not any(is_temp_file(p) for p in tmp_path.iterdir())


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(DataError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_video(tmp_path / "missing.gif")
    with pytest.raises(DataError, match="unsupported extension"):
        read_video(tmp_path / "clip.txt")


def test_resize_center_crop():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 20:60] = 200  # the centre 40x40 is bright, the sides are black
    out = resize_center_crop(frames, 20)
    assert out.shape == (2, 20, 20, 3) and out.dtype == np.uint8
    assert out[:, 2:-2, 2:-2].min() >= 190  # the crop keeps the centre
    assert resize_center_crop(frames, (10, 30)).shape == (2, 10, 30, 3)
    assert resize_center_crop(out, 20) is out


def test_contact_sheet(tmp_path):
    import imageio.v3 as iio

    path = contact_sheet(_moving_square(5, size=8), tmp_path / "sheet.png", cols=3)
    assert iio.imread(path).shape == (2 * 8 + 1, 3 * 8 + 2, 3)


def test_video_clip_validates():
    clip = VideoClip(_moving_square(8), fps=8.0, caption="x")
    assert clip.num_frames == 8 and clip.duration == 1.0
    with pytest.raises(ShapeError, match="uint8"):
        VideoClip(np.zeros((2, 4, 4, 3), np.float32), fps=8.0, caption="x")
    with pytest.raises(ShapeError, match=r"\[T, H, W, 3\]"):
        VideoClip(np.zeros((4, 4, 3), np.uint8), fps=8.0, caption="x")
