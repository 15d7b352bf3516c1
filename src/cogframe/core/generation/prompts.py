"""Text conditions of the sampling passes, with their frame-rate (duration) prefixes.

Core decodes token ids; tokenisation happens through a text tokenizer object the caller built
(kind ``text_tokenizer``) with ``encode_prompt(caption, text_len, prefix=...) -> (ids, valid)``.
The frame rate reaches the model as a duration prefix (the release's ``"4.0秒" <n> caption``,
``cogvideo_pipeline.py``): 5 frames at ``fps`` span
``4 / fps`` seconds, so stage 1 at 1 fps reads ``"4.0s"`` and the three stage-2 rounds at 2, 4,
8 fps read ``"2.0s"``, ``"1.0s"``, ``"0.5s"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from cogframe.core.io.frame_rate import DEFAULT_PREFIX_FORMAT, duration_prefix
from cogframe.errors import ConfigError, ShapeError

__all__ = ["TextPrompt", "VideoPrompts", "encode_prompts", "interpolation_rates", "video_prompts"]


@dataclass(frozen=True)
class TextPrompt:
    """The text slots of a batch of samples.

    Args:
        ids: ``[B, text_len]`` left-padded token ids.
        valid: ``[B, text_len]`` bool, True on real tokens (None: all real).
    """

    ids: torch.Tensor
    valid: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.ids.dim() != 2:
            raise ShapeError(f"prompt ids must be [batch, text_len], got shape {tuple(self.ids.shape)}.")
        if self.valid is not None and self.valid.shape != self.ids.shape:
            raise ShapeError(
                f"prompt valid mask has shape {tuple(self.valid.shape)} but the ids have "
                f"{tuple(self.ids.shape)}; give one flag per text slot."
            )

    @property
    def batch(self) -> int:
        """Number of prompts."""
        return int(self.ids.shape[0])

    def mask(self) -> torch.Tensor:
        """The valid mask, all True when none was given."""
        if self.valid is None:
            return torch.ones_like(self.ids, dtype=torch.bool)
        return self.valid.bool()

    def expand(self, batch: int) -> "TextPrompt":
        """Broadcast a single prompt to ``batch`` rows (a batch of that size is returned as is)."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ShapeError(
                f"a prompt batch of {self.batch} cannot serve {batch} samples; give one prompt or "
                f"{batch} prompts."
            )
        return TextPrompt(self.ids.expand(batch, -1), self.mask().expand(batch, -1))

    def repeat_interleave(self, repeats: int) -> "TextPrompt":
        """Each prompt ``repeats`` times in a row (one per stage-2 window of that sample)."""
        return TextPrompt(self.ids.repeat_interleave(repeats, 0), self.mask().repeat_interleave(repeats, 0))

    def check(self, text_len: int) -> None:
        """Raise when the prompt does not fit ``text_len`` or a row has no real token."""
        if self.ids.shape[1] != text_len:
            raise ShapeError(
                f"prompt has {self.ids.shape[1]} text slots but the model's layout has text_len "
                f"{text_len}; encode prompts with text_len={text_len}."
            )
        if text_len and bool((~self.mask().any(1)).any()):
            empty = (~self.mask().any(1)).nonzero().squeeze(-1).tolist()
            raise ConfigError(
                f"empty prompt in batch rows {empty}: every prompt needs at least one real text "
                "token; give a caption (or a generic one such as 'video' for a negative prompt)."
            )


def encode_prompts(
    tokenizer, captions: Sequence[str], text_len: int, prefix: str | None = None
) -> TextPrompt:
    """Tokenise a batch of captions with the same prefix.

    Args:
        tokenizer: Object with ``encode_prompt(caption, text_len, prefix=...) -> (ids, valid)``.
        captions: One caption per sample.
        text_len: Text slots of the model.
        prefix: Duration prefix such as ``"4.0s"`` (None: no prefix, e.g. the first frame).
    """
    if isinstance(captions, str):
        captions = [captions]
    if not captions:
        raise ConfigError("no captions given: pass at least one caption to sample from.")
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ConfigError(f"caption {i} is empty: every sample needs a non-empty caption.")
    pairs = [tokenizer.encode_prompt(c, text_len, prefix=prefix) for c in captions]
    ids = torch.stack([torch.as_tensor(p[0], dtype=torch.long) for p in pairs])
    valid = torch.stack([torch.as_tensor(p[1], dtype=torch.bool) for p in pairs])
    return TextPrompt(ids, valid)


def interpolation_rates(key_fps: float = 1.0, rounds: int = 3) -> list[float]:
    """Window frame rates of the stage-2 rounds: each round doubles the rate (1 -> 2, 4, 8)."""
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}.")
    return [float(key_fps) * 2 ** (r + 1) for r in range(rounds)]


@dataclass(frozen=True)
class VideoPrompts:
    """Every text condition of a two-stage generation.

    Attributes:
        first_frame: Prompt of the base-only first frame (no duration prefix).
        key_frames: Stage-1 prompt (``"4.0s" <n> caption`` at 1 fps).
        rounds: One stage-2 prompt per interpolation round.
        negative_key_frames / negative_rounds: Negative (guidance) prompts, or None.
    """

    first_frame: TextPrompt
    key_frames: TextPrompt
    rounds: tuple[TextPrompt, ...]
    negative_key_frames: TextPrompt | None = None
    negative_rounds: tuple[TextPrompt, ...] | None = None


def video_prompts(
    tokenizer,
    captions: Sequence[str],
    text_len: int,
    *,
    key_fps: float = 1.0,
    rounds: int = 3,
    frames: int = 5,
    prefix_format: str = DEFAULT_PREFIX_FORMAT,
    known_rates: Sequence[float] | None = None,
    first_frame_suffix: str = "",
    video_suffix: str = "",
    negative_caption: str | None = None,
) -> VideoPrompts:
    """Build all prompts of ``generate_video`` through a text tokenizer.

    As the release (``cogvideo_pipeline.py``) does: the first frame reads the caption plus
    ``first_frame_suffix``; stage 1 reads ``"4.0s" <n> caption + video_suffix``; every stage-2
    round reads its duration prefix and the **raw caption** (``process_stage2`` encodes the
    caption without the suffix). The release appends its video suffix (" 视频") only when
    stage-1 guidance is on, so pass ``video_suffix`` only then.

    Args:
        tokenizer: Has ``encode_prompt(caption, text_len, prefix=...)``.
        captions: One caption per video.
        text_len: Text slots of both models.
        key_fps: Frame rate of the key frames (1 fps: ``"4.0s"``).
        rounds: Stage-2 rounds (3: 5 -> 33 frames).
        frames: Frames per model window (the duration is ``(frames - 1) / fps``).
        prefix_format: Duration format of the training data, e.g. ``"{:.1f}s"``.
        known_rates: The rates the models were trained with; a rate outside it is an error.
        first_frame_suffix: Appended to the first-frame caption (CogVideo: " HD photography").
        video_suffix: Appended to the stage-1 caption only (CogVideo: " 视频", with stage-1 guidance).
        negative_caption: Caption of the guidance branch (CogVideo: "video"); None: no guidance.
    """
    rates = [float(key_fps)] + interpolation_rates(key_fps, rounds)
    if known_rates is not None:
        known = {float(r) for r in known_rates}
        unknown = [r for r in rates if r not in known]
        if unknown:
            raise ConfigError(
                f"frame rates {unknown} were not seen in training (known: {sorted(known)}); change "
                "key_fps/rounds so every round's rate is a trained one."
            )
    prefixes = [duration_prefix(r, frames, prefix_format) for r in rates]
    first = encode_prompts(tokenizer, [c + first_frame_suffix for c in captions], text_len)
    videos = [encode_prompts(tokenizer, [c + video_suffix for c in captions], text_len, prefixes[0])]
    videos += [encode_prompts(tokenizer, list(captions), text_len, p) for p in prefixes[1:]]
    negatives = None
    if negative_caption is not None:
        negatives = [encode_prompts(tokenizer, [negative_caption], text_len, p) for p in prefixes]
    return VideoPrompts(
        first_frame=first,
        key_frames=videos[0],
        rounds=tuple(videos[1:]),
        negative_key_frames=negatives[0] if negatives else None,
        negative_rounds=tuple(negatives[1:]) if negatives else None,
    )
