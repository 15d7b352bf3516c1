"""Reading chosen frames of a video file without decoding the whole file (not a plugin).

:class:`SeekingReader` opens a file with PyAV (``av``, FFmpeg's libraries), lists the stream's
packets once (demuxing only: no pixels are decoded) to learn every frame's presentation time and
where the keyframes are, and then decodes a requested frame by seeking to the last keyframe at or
before it and decoding forward up to it. Frames that share a group of pictures are decoded in one
forward pass. The cost of drawing a few frames is a few groups of pictures instead of the whole
clip (benchmarks/video_decode.py; docs/benchmarks.md "Video decoding").

Frame ``i`` is the ``i``-th frame in presentation order, the same numbering a full decode
(:func:`cogframe.core.io.video.read_video`) gives a constant-frame-rate file, and the pixels are
the decoder's own, so the frames equal a full decode's (tests/test_datasets.py checks it on
exported mp4 files). For variable-frame-rate files a full decode through the ffmpeg command line
resamples to a constant rate and can number frames differently; this reader keeps the file's own
frames.

GIFs, and every format when PyAV is not installed, fall back to the full decode.
"""

from __future__ import annotations

import bisect
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from cogframe.core.io.video import FFMPEG_EXTENSIONS, read_video
from cogframe.errors import DataError

__all__ = ["SeekingReader", "av_available", "open_reader", "read_frames"]


def av_available() -> bool:
    """Whether PyAV imports here (the seeking path); False means whole-file decoding."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class SeekingReader:
    """One open video file whose frames are decoded on request.

    Args:
        path: A file FFmpeg reads (``.mp4``, ``.webm``, ``.mkv``, ``.avi``, ``.mov``).

    Attributes:
        num_frames: Frames in the file (packets with a presentation time in its first video stream).
        fps: The stream's average frame rate.

    Raises:
        DataError: The file cannot be opened, has no video stream, no frames or no frame rate.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import av

        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise DataError(f"cannot open video {self.path}: {exc}. The file is corrupt or not a video; "
                            "re-export it or remove it from the dataset.") from exc
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        import av

        if not self._container.streams.video:
            raise DataError(f"{self.path} has no video stream; remove it from the dataset.")
        self._stream = stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise DataError(f"video {self.path} has no usable frame rate in its metadata; re-encode it "
                            "with an explicit rate, e.g. ffmpeg -i in.mp4 -r 8 out.mp4.")
        pts, keyframes = [], []
        try:
            for packet in self._container.demux(stream):
                if packet.pts is None:  # the flush packet at the end, or a packet without a time
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise DataError(f"cannot read video {self.path}: {exc}. The file is corrupt; re-export it or "
                            "remove it from the dataset.") from exc
        if not pts:
            raise DataError(f"video {self.path} has no frames; re-export it or remove it from the dataset.")
        # Packets arrive in decode order; B-frames make that differ from presentation order.
        self._pts = sorted(pts)
        self._keyframes = sorted(keyframes) or [self._pts[0]]
        self.num_frames = len(self._pts)

    def _keyframe_before(self, pts: int) -> int:
        at = bisect.bisect_right(self._keyframes, pts) - 1
        return self._keyframes[max(at, 0)]

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Decodes frames ``indices`` (any order, repeats allowed) as ``uint8 [len, H, W, 3]`` RGB.

        Raises:
            DataError: An index is out of range, or decoding fails.
        """
        import av

        wanted = [int(i) for i in indices]
        bad = [i for i in wanted if not 0 <= i < self.num_frames]
        if bad:
            raise DataError(f"frame {bad[0]} of {self.path} does not exist: the file has {self.num_frames} "
                            f"frames (valid indices 0..{self.num_frames - 1}).")
        targets = sorted({self._pts[i] for i in wanted})
        got: dict[int, np.ndarray] = {}
        try:
            pending = 0
            while pending < len(targets):
                target = targets[pending]
                # Seek to the keyframe of the next frame still missing, then decode forward through
                # every wanted frame of that stretch (they come in presentation order).
                self._container.seek(self._keyframe_before(target), backward=True, any_frame=False,
                                     stream=self._stream)
                for frame in self._container.decode(self._stream):
                    if frame.pts is None:
                        continue
                    if frame.pts in got or frame.pts < target:
                        continue
                    if frame.pts == targets[pending]:
                        got[frame.pts] = frame.to_ndarray(format="rgb24")
                        pending += 1
                    elif frame.pts > targets[pending]:
                        raise DataError(f"decoding {self.path} skipped the frame at pts {targets[pending]} "
                                        "(the file's timestamps are inconsistent); re-encode it.")
                    if pending == len(targets):
                        break
                    # The next wanted frame lies behind a later keyframe: a seek is cheaper than
                    # decoding the frames in between.
                    if self._keyframe_before(targets[pending]) > frame.pts:
                        break
                    target = targets[pending]
                else:
                    if pending < len(targets):
                        raise DataError(f"decoding {self.path} ended before the frame at pts "
                                        f"{targets[pending]}; the file is truncated, re-export it.")
        except av.error.FFmpegError as exc:
            raise DataError(f"cannot decode video {self.path}: {exc}. The file is corrupt; re-export it or "
                            "remove it from the dataset.") from exc
        return np.stack([got[self._pts[i]] for i in wanted])

    def time_of(self, index: int) -> float:
        """Presentation time of frame ``index`` in seconds from the stream's start."""
        base = self._stream.time_base or Fraction(1, 1)
        return float((self._pts[index] - self._pts[0]) * base)

    def close(self) -> None:
        """Closes the file."""
        self._container.close()

    def __enter__(self) -> "SeekingReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FullDecodeReader:
    """The fallback: the whole file decoded once by :func:`read_video` (GIF, or no PyAV)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._frames, self.fps = read_video(self.path)
        self.num_frames = int(self._frames.shape[0])

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        wanted = [int(i) for i in indices]
        bad = [i for i in wanted if not 0 <= i < self.num_frames]
        if bad:
            raise DataError(f"frame {bad[0]} of {self.path} does not exist: the file has {self.num_frames} "
                            f"frames (valid indices 0..{self.num_frames - 1}).")
        return self._frames[wanted]

    def close(self) -> None:
        self._frames = None

    def __enter__(self) -> "_FullDecodeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_reader(path: str | os.PathLike, seek: bool = True) -> SeekingReader | _FullDecodeReader:
    """A reader of ``path``: seeking (PyAV) for FFmpeg formats when ``seek`` and PyAV is installed,
    else one whole-file decode.

    Raises:
        DataError: Missing, unsupported or undecodable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video file {path} does not exist; check the path.")
    if seek and path.suffix.lower() in FFMPEG_EXTENSIONS and av_available():
        return SeekingReader(path)
    return _FullDecodeReader(path)


def read_frames(path: str | os.PathLike, indices: Sequence[int], seek: bool = True) -> tuple[np.ndarray, float]:
    """Frames ``indices`` of the file at ``path`` and its frame rate (see :func:`open_reader`)."""
    with open_reader(path, seek=seek) as reader:
        return reader.frames(indices), reader.fps
