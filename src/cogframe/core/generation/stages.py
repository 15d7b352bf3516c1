"""Generation as an ordered list of stages: the batch they pass on and the one protocol they share.

A text-to-video run is a list of stages applied to one :class:`VideoBatch` (CogVideo, arXiv
2205.15868, and its release ``cogvideo_pipeline.py``: key frames, then three interpolation
rounds; CogView2's super-resolution would be one more stage)::

    batch = VideoBatch(captions=("a red circle moving left",), seed=0)
    batch = run_stages([key_frames, interpolation], batch, decode=image_tokenizer_decode)
    batch.pixels        # uint8 [B, T, H, W, 3]; batch.passes / batch.seconds per stage

A stage (registry kind ``stage``) is any object with

* ``name``: the key of its forward passes and seconds in the batch (``"key_frames"``);
* ``space``: ``"tokens"`` (it reads and writes ``batch.tokens``, LongTensor ``[B, T, h, w]``)
  or ``"pixels"`` (it reads and writes ``batch.pixels``, uint8 ``[B, T, H, W, 3]``);
* ``output_fps``: the frame rate of the frames it returns, known when it is built (a task checks
  trained frame rates and prompt lengths of every stage before loading any weights);
* ``models``: the recipe sections whose models it runs (``("stage2",)``), loaded before the
  first batch;
* ``__call__(batch) -> batch``: the next batch, made with :meth:`VideoBatch.advance`, which
  records the stage's forward passes (per text branch) and the new frame rate.

:func:`run_stages` is the whole pipeline: it decodes the token grids to pixels the first time a
pixel stage comes (and once more at the end, if no stage did), times every stage and the
decoding, and refuses a token stage after the frames became pixels. It knows no stage by name,
so a third-party stage plugs in by being listed in the recipe.

This module imports no torch: the batch only carries tensors.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

from cogframe.errors import ConfigError

__all__ = ["DECODE", "GenerationStage", "VideoBatch", "run_stages"]

DECODE = "decode"  # the key under which run_stages records the decoding time


@dataclass(frozen=True)
class VideoBatch:
    """A batch of videos between two stages.

    Attributes:
        captions: One caption per video (the raw user text; each stage builds its own prompts).
        seed: The sampling seed of the batch (rows are separate random streams).
        fps: Frame rate of the current frames (None before the first stage).
        rounds: Interpolation rounds done so far (separates the random streams of later rounds).
        tokens: LongTensor ``[B, T, h, w]`` token grids, or None before the first stage.
        pixels: uint8 ``[B, T, H, W, 3]`` frames once decoded, else None.
        key_frames: Frame count after the first stage (what interpolation started from).
        passes: Forward passes per text branch, by stage name (None when a stage cannot tell).
        seconds: Wall-clock seconds by stage name, plus ``"decode"``.
    """

    captions: tuple[str, ...]
    seed: int
    fps: float | None = None
    rounds: int = 0
    tokens: Any = None
    pixels: Any = None
    key_frames: int | None = None
    passes: dict[str, int | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of videos."""
        return len(self.captions)

    @property
    def frames(self) -> int | None:
        """Current frame count (None before the first stage)."""
        current = self.pixels if self.pixels is not None else self.tokens
        return None if current is None else int(current.shape[1])

    def advance(self, stage: str, *, tokens: Any = None, pixels: Any = None, passes: int | None = None,
                fps: float | None = None, rounds: int = 0) -> "VideoBatch":
        """The batch after ``stage``: new frames, its passes added, frame rate and rounds updated.

        Args:
            stage: The stage's name (its passes are added to an earlier stage's of that name).
            tokens: New token grids (a token stage).
            pixels: New pixel frames (a pixel stage).
            passes: Forward passes per text branch the stage ran (None: not counted).
            fps: The new frame rate (default: unchanged).
            rounds: Interpolation rounds the stage added.
        """
        passes_so_far = dict(self.passes)
        before = passes_so_far.get(stage, 0)
        passes_so_far[stage] = None if passes is None or before is None else before + passes
        new = dataclasses.replace(
            self, tokens=self.tokens if tokens is None else tokens,
            pixels=self.pixels if pixels is None else pixels, passes=passes_so_far,
            fps=self.fps if fps is None else float(fps), rounds=self.rounds + int(rounds))
        if new.key_frames is None:
            new = dataclasses.replace(new, key_frames=new.frames)
        return new


class GenerationStage(Protocol):
    """One step of a generation (see the module docstring)."""

    name: str
    space: Literal["tokens", "pixels"]
    output_fps: float
    models: tuple[str, ...]

    def __call__(self, batch: VideoBatch) -> VideoBatch:
        """Returns the next batch (made with :meth:`VideoBatch.advance`)."""
        ...


def _timed(batch: VideoBatch, key: str, seconds: float) -> VideoBatch:
    return dataclasses.replace(batch, seconds={**batch.seconds, key: batch.seconds.get(key, 0.0) + seconds})


def _decoded(batch: VideoBatch, decode: Callable[[Any], Any]) -> VideoBatch:
    clock = time.perf_counter()
    pixels = decode(batch.tokens)
    return _timed(dataclasses.replace(batch, pixels=pixels), DECODE, time.perf_counter() - clock)


def run_stages(stages: Sequence[GenerationStage], batch: VideoBatch, *,
               decode: Callable[[Any], Any]) -> VideoBatch:
    """Runs ``stages`` in order on ``batch`` and returns the decoded result.

    Args:
        stages: The built stages, in recipe order; the first one must create the token grids.
        batch: The starting batch (captions and seed; no frames yet).
        decode: Token grids ``[B, T, h, w]`` -> uint8 frames ``[B, T, H, W, 3]`` (the image tokenizer).

    Returns:
        The batch with ``pixels`` set, every stage's passes and every stage's and the decoding's seconds.

    Raises:
        ConfigError: A token stage after a pixel stage, or no stage produced frames.
    """
    for index, stage in enumerate(stages):
        space = getattr(stage, "space", None)
        if space not in ("tokens", "pixels"):
            raise ConfigError(f"stage {index} ({getattr(stage, 'name', type(stage).__name__)}) declares space "
                              f"{space!r}; a stage works on 'tokens' or 'pixels' (set the class attribute)")
        if space == "pixels" and batch.pixels is None:
            if batch.tokens is None:
                raise ConfigError(f"stage {index} ({stage.name}) works on pixels but no stage before it made "
                                  "frames; list a token stage such as key_frames first")
            batch = _decoded(batch, decode)
        elif space == "tokens" and batch.pixels is not None:
            raise ConfigError(f"stage {index} ({stage.name}) works on token grids but comes after a pixel "
                              "stage; list every token stage before the pixel stages (repeat, linear_blend)")
        clock = time.perf_counter()
        batch = _timed(stage(batch), stage.name, time.perf_counter() - clock)
    if batch.tokens is None and batch.pixels is None:
        raise ConfigError("no stage produced frames; list a key-frame stage (key_frames) first")
    return batch if batch.pixels is not None else _decoded(batch, decode)
