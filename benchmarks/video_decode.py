"""Benchmark drawing 5 frames from a long clip: whole-file decode vs seek + decode forward.

Workload: what ``prepare`` does per clip of a ``video_folder``. A 60-second clip is generated
here (moving bars over noise, so every frame differs; never downloaded) at 160x160 and 8 or 24
fps, encoded with libx264 (``yuv420p``, CRF 23) through imageio-ffmpeg, either with x264's
default keyframe interval (250 frames) or with one keyframe every 2 seconds, common in
camera and web footage. The 5 frames are the ones the ``lowest_fps`` sampler picks (0.25 fps:
frames 4 s apart, from a seeded random start), the same draw for every method.

* ``full decode``: :func:`cogframe.core.io.video.read_video` (imageio, the ffmpeg command line,
  every frame), then indexing: what ``video_folder`` did before.
* ``seek``: :class:`cogframe.plugins._video_decode.SeekingReader`: open, list the packets
  (no pixels decoded), then seek to the keyframe before each wanted frame and decode forward to it.

Both include opening the file. Times are the median of ``--repeats`` runs after one warm-up; the
frames of both methods are checked to be equal.

Usage::

    python benchmarks/video_decode.py --repeats 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SECONDS, SIZE = 60, 160


def make_clip(path: Path, fps: int, gop: int | None) -> None:
    """Writes the 60-second test clip (frames generated in chunks to keep memory small)."""
    import imageio.v2 as iio2

    params = ["-crf", "23"] + (["-g", str(gop)] if gop else [])
    writer = iio2.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                             macro_block_size=1, output_params=params, ffmpeg_log_level="error")
    rng = np.random.default_rng(0)
    for t in range(SECONDS * fps):
        frame = rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
        frame[(2 * t) % (SIZE - 8):(2 * t) % (SIZE - 8) + 8, :, 0] = 250
        frame[:, (3 * t) % SIZE, 1] = 220
        writer.append_data(frame)
    writer.close()


def five_frames(num_frames: int, fps: float) -> list[int]:
    from cogframe.plugins.frame_rate import LowestFps

    return LowestFps()(num_frames, fps, random.Random(0)).frame_indices


def time_full(path: Path) -> tuple[float, np.ndarray]:
    from cogframe.core.io.video import read_video

    start = time.perf_counter()
    frames, fps = read_video(path)
    picked = frames[five_frames(frames.shape[0], fps)]
    return time.perf_counter() - start, picked


def time_seek(path: Path) -> tuple[float, np.ndarray]:
    from cogframe.plugins._video_decode import SeekingReader

    start = time.perf_counter()
    with SeekingReader(path) as reader:
        picked = reader.frames(five_frames(reader.num_frames, reader.fps))
    return time.perf_counter() - start, picked


def median_time(fn, path: Path, repeats: int) -> tuple[float, np.ndarray]:
    fn(path)  # warm-up: page cache, imports
    runs = [fn(path) for _ in range(repeats)]
    return statistics.median(t for t, _ in runs), runs[0][1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fps", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import av

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}, PyAV {av.__version__}, median of {args.repeats}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fps in args.fps:
            for gop, gop_name in ((None, "250 (x264 default)"), (2 * fps, f"{2 * fps} (2 s)")):
                path = Path(tmp) / f"clip_{fps}_{gop}.mp4"
                make_clip(path, fps, gop)
                full_s, full_frames = median_time(time_full, path, args.repeats)
                seek_s, seek_frames = median_time(time_seek, path, args.repeats)
                if not np.array_equal(full_frames, seek_frames):
                    raise SystemExit(f"frames differ between the methods for {path.name}")
                rows.append({"fps": fps, "frames": SECONDS * fps, "keyframe_interval": gop_name,
                             "mb": round(path.stat().st_size / 2**20, 2), "full_s": full_s, "seek_s": seek_s,
                             "speedup": full_s / seek_s})
    print("| clip (60 s, 160x160) | keyframe interval | file | full decode | seek | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['fps']} fps, {r['frames']} frames | {r['keyframe_interval']} | {r['mb']} MiB | "
              f"{r['full_s'] * 1000:.0f} ms | {r['seek_s'] * 1000:.0f} ms | {r['speedup']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
