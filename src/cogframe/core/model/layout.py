"""The typed token layout of one CogVideo sample.

Everything positional in cogframe derives from a :class:`TokenLayout`: which sequence slot is
text and which is a frame token, the (t, x, y, p) coordinates of frame slots, the BOI-shift input
convention, position ids and which position table serves them, loss masks per stage, and the
stage-2 inference order. No module outside the presets writes literal offsets such as 64, 464,
2064 or 912; they are all properties of a layout.

Conventions (THUDM/CogVideo pretrain_cogvideo.py ``get_batch`` and
``get_masks_and_position_ids_video``):

* A model input has ``text_len`` text slots (left-padded) followed by ``frames`` blocks of
  ``frame_height * frame_width`` frame slots: ``seq_len = text_len + frames * tokens_per_frame``.
* Slot ``j`` of frame ``k`` holds the input token ``f_k[j - 1]`` and, for ``j = 0``, the BOI token;
  it predicts ``f_k[j]``. So masks are defined on *slots*, not on token contents.
* Frame slot ``m`` (counted from the first frame slot) has position id
  ``image_position_offset + m``. Text token ``i`` of a prompt has position ``i``; padding gets 0.
* Positions below ``extra_position_start`` (text and the first frame) are served by the inherited
  ("base") position table; the rest by the extra table of the video model, at row
  ``position - extra_position_start``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from cogframe.errors import ShapeError

if TYPE_CHECKING:
    import torch

# torch is imported inside the methods that build tensors, not here: the layout's sizes and
# checks serve `cogframe validate`, which must not pay torch's import time.

__all__ = ["Stage", "SlotCoords", "TokenLayout"]


class Stage(str, enum.Enum):
    """Which model a layout serves; decides loss masks, masks and the generation order."""

    TEXT_TO_IMAGE = "text_to_image"
    """CogView2-style single-frame model (the inherited spatial channel)."""
    SEQUENTIAL = "sequential"
    """CogVideo stage 1: key frames one after another; frame 0 is given."""
    INTERPOLATION = "interpolation"
    """CogVideo stage 2: even frames are given, odd frames are generated between them."""

    @classmethod
    def parse(cls, value: "Stage | str") -> "Stage":
        """Accept a Stage or its string value, with an error listing the valid values."""
        if isinstance(value, Stage):
            return value
        try:
            return cls(str(value))
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise ShapeError(f"unknown stage {value!r}; use one of: {valid}.") from None


class SlotCoords(NamedTuple):
    """Vectorised coordinates of slots (all tensors have the shape of the slot tensor).

    Text slots have ``is_frame = False`` and ``t = x = y = p = -1``.
    """

    is_frame: torch.Tensor
    t: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    p: torch.Tensor


@dataclass(frozen=True)
class TokenLayout:
    """Shape of one sample: text slots, then ``frames`` frames of ``frame_height x frame_width``.

    Args:
        text_len: Number of text slots (the prompt is left-padded to this length).
        frames: Number of frames in the sample (1 for a text-to-image model).
        frame_height: Token rows per frame (the paper's X).
        frame_width: Token columns per frame (the paper's Y).
        image_position_offset: Position id of the first frame slot (the BOI slot).
        base_position_rows: Rows of the inherited position table.
        extra_position_rows: Rows of the video model's extra position table (0: none).
    """

    text_len: int
    frames: int
    frame_height: int
    frame_width: int
    image_position_offset: int
    base_position_rows: int
    extra_position_rows: int = 0

    def __post_init__(self) -> None:
        for name in ("text_len", "frames", "frame_height", "frame_width",
                     "image_position_offset", "base_position_rows", "extra_position_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ShapeError(f"TokenLayout.{name} must be an integer, got {value!r}.")
        if self.text_len < 0:
            raise ShapeError(f"TokenLayout.text_len must be >= 0, got {self.text_len}.")
        for name in ("frames", "frame_height", "frame_width"):
            if getattr(self, name) < 1:
                raise ShapeError(f"TokenLayout.{name} must be >= 1, got {getattr(self, name)}.")
        if self.image_position_offset < self.text_len:
            raise ShapeError(
                f"TokenLayout.image_position_offset ({self.image_position_offset}) is below "
                f"text_len ({self.text_len}): text and frame positions would collide. Raise "
                "image_position_offset to at least text_len."
            )
        if self.extra_position_start > self.base_position_rows:
            raise ShapeError(
                f"the first frame needs positions up to {self.extra_position_start - 1}, but the "
                f"base position table has {self.base_position_rows} rows. Raise "
                "base_position_rows or lower image_position_offset / the frame size."
            )
        needed = (self.frames - 1) * self.tokens_per_frame
        if needed > self.extra_position_rows:
            raise ShapeError(
                f"frames 1..{self.frames - 1} need {needed} extra position rows, but "
                f"extra_position_rows is {self.extra_position_rows}. Set extra_position_rows >= "
                f"{needed} or use fewer frames."
            )

    # ----------------------------------------------------------------------------- sizes
    @property
    def tokens_per_frame(self) -> int:
        """Frame slots per frame (``frame_height * frame_width``)."""
        return self.frame_height * self.frame_width

    @property
    def frame_tokens(self) -> int:
        """Frame slots in the whole sample."""
        return self.frames * self.tokens_per_frame

    @property
    def seq_len(self) -> int:
        """Model input length: text slots plus frame slots (one less than the raw sample)."""
        return self.text_len + self.frame_tokens

    @property
    def frame_start(self) -> int:
        """Sequence index of the first frame slot (the first BOI)."""
        return self.text_len

    @property
    def extra_position_start(self) -> int:
        """First position id served by the extra (video) position table."""
        return self.image_position_offset + self.tokens_per_frame

    def frame_slot(self, t: int, p: int) -> int:
        """Sequence index of raster position ``p`` in frame ``t`` (natural order)."""
        if not 0 <= t < self.frames:
            raise ShapeError(f"frame index {t} is outside 0..{self.frames - 1}.")
        if not 0 <= p < self.tokens_per_frame:
            raise ShapeError(f"raster position {p} is outside 0..{self.tokens_per_frame - 1}.")
        return self.text_len + t * self.tokens_per_frame + p

    def frame_range(self, t: int) -> range:
        """Sequence indices of frame ``t`` in natural order."""
        start = self.frame_slot(t, 0)
        return range(start, start + self.tokens_per_frame)

    # ----------------------------------------------------------------------------- coordinates
    def coords(self, slots: torch.Tensor) -> SlotCoords:
        """Coordinates of natural slot indices (any shape, integer tensor)."""
        import torch

        slots = slots.long()
        is_frame = slots >= self.text_len
        m = (slots - self.text_len).clamp(min=0)
        t = torch.div(m, self.tokens_per_frame, rounding_mode="floor")
        p = m - t * self.tokens_per_frame
        x = torch.div(p, self.frame_width, rounding_mode="floor")
        y = p - x * self.frame_width
        neg = torch.full_like(slots, -1)
        return SlotCoords(
            is_frame,
            torch.where(is_frame, t, neg),
            torch.where(is_frame, x, neg),
            torch.where(is_frame, y, neg),
            torch.where(is_frame, p, neg),
        )

    def all_slots(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Every slot in natural order: ``arange(seq_len)``."""
        import torch

        return torch.arange(self.seq_len, device=device)

    # ----------------------------------------------------------------------------- positions
    def position_ids(
        self,
        slots: torch.Tensor | None = None,
        text_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Position ids of ``slots`` (natural indices), per sample.

        Args:
            slots: ``[S]`` natural slot indices (default: all, in natural order). Reordered
                slots keep their natural positions (stage-2 inference, ``process_stage2``).
            text_valid: ``[B, text_len]`` bool, True for real (non-pad) text. Text must be
                left-padded. Default: all text valid.

        Returns:
            ``[B, S]`` long tensor (``B = 1`` when ``text_valid`` is None).
        """
        import torch

        if slots is None:
            slots = self.all_slots()
        slots = slots.long()
        text_valid = self.check_text_valid(text_valid, device=slots.device)
        # Real text token i of a prompt sits at position i; left padding gets 0 (and is masked).
        text_pos = (text_valid.long().cumsum(-1) - 1).clamp(min=0)
        text_pos = torch.where(text_valid, text_pos, torch.zeros_like(text_pos))
        frame_pos = self.image_position_offset + (slots - self.text_len)
        is_text = slots < self.text_len
        batch = text_valid.shape[0]
        if self.text_len:
            gathered = text_pos[:, slots.clamp(max=self.text_len - 1)]
        else:
            gathered = torch.zeros(batch, slots.numel(), dtype=torch.long, device=slots.device)
        return torch.where(is_text.unsqueeze(0), gathered, frame_pos.unsqueeze(0).expand(batch, -1))

    def check_text_valid(
        self, text_valid: torch.Tensor | None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Validate a ``[B, text_len]`` text mask (None: all valid, batch 1)."""
        import torch

        if text_valid is None:
            return torch.ones(1, self.text_len, dtype=torch.bool, device=device)
        if text_valid.dim() != 2 or text_valid.shape[1] != self.text_len:
            raise ShapeError(
                f"text_valid must have shape [batch, text_len={self.text_len}], got "
                f"{tuple(text_valid.shape)}: dimension 1 must equal the layout's text_len."
            )
        return text_valid.bool()

    # ----------------------------------------------------------------------------- inputs/labels
    def build_input(
        self, text: torch.Tensor, frames: torch.Tensor, boi_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input and labels of a sample with the BOI-shift convention (``get_batch``).

        Args:
            text: ``[B, text_len]`` left-padded text ids.
            frames: ``[B, frames, frame_height, frame_width]`` image token ids.
            boi_id: Id of the [BOI] token.

        Returns:
            ``(input_ids, labels)``, both ``[B, seq_len]``. Text labels are -100; frame slot
            ``(k, j)`` holds ``f_k[j-1]`` (BOI for ``j = 0``) and is labelled ``f_k[j]``.
        """
        import torch

        self.check_frames(frames)
        if text.dim() != 2 or text.shape[1] != self.text_len:
            raise ShapeError(
                f"text must have shape [batch, text_len={self.text_len}], got {tuple(text.shape)}."
            )
        if text.shape[0] != frames.shape[0]:
            raise ShapeError(
                f"text has batch {text.shape[0]} but frames has batch {frames.shape[0]} "
                "(dimension 0 must agree)."
            )
        batch = frames.shape[0]
        flat = frames.reshape(batch, self.frames, self.tokens_per_frame).long()
        shifted = torch.cat([torch.full_like(flat[..., :1], boi_id), flat[..., :-1]], dim=-1)
        input_ids = torch.cat([text.long(), shifted.reshape(batch, -1)], dim=1)
        labels = torch.cat(
            [torch.full_like(text, -100, dtype=torch.long), flat.reshape(batch, -1)], dim=1
        )
        return input_ids, labels

    def check_frames(self, frames: torch.Tensor) -> None:
        """Raise a ShapeError naming the dimension when ``frames`` does not fit the layout."""
        expected = (self.frames, self.frame_height, self.frame_width)
        if frames.dim() != 4:
            raise ShapeError(
                f"frame tokens must be [batch, frames, height, width], got {frames.dim()} dims."
            )
        for dim, (name, want) in enumerate(zip(("frames", "height", "width"), expected), start=1):
            if frames.shape[dim] != want:
                raise ShapeError(
                    f"frame tokens dimension {dim} ({name}) is {frames.shape[dim]}, but the layout "
                    f"expects {want}."
                )

    # ----------------------------------------------------------------------------- stages
    def given_frames(self, stage: Stage | str) -> tuple[int, ...]:
        """Frames a stage receives as input rather than generating (they get no loss)."""
        stage = Stage.parse(stage)
        if stage is Stage.TEXT_TO_IMAGE:
            return ()
        if stage is Stage.SEQUENTIAL:
            return (0,) if self.frames > 1 else ()
        return tuple(range(0, self.frames, 2))

    def target_frames(self, stage: Stage | str) -> tuple[int, ...]:
        """Frames a stage generates (and is trained on)."""
        given = set(self.given_frames(stage))
        return tuple(t for t in range(self.frames) if t not in given)

    def loss_mask(self, stage: Stage | str, device: torch.device | str | None = None, *,
                  first_frame: bool = False) -> torch.Tensor:
        """``[seq_len]`` bool: True where the label counts in the loss (frames 1-4 in
        stage 1, frames 1 and 3 in stage 2; pretrain_cogvideo.py).

        Args:
            stage: The model's stage.
            device: Where the mask lives.
            first_frame: Stage 1 only: count frame 0 too. The release never trains it (CogView2
                draws it); a stage 1 without an inherited text-to-image model has to.
        """
        import torch

        stage = Stage.parse(stage)
        if first_frame and stage is not Stage.SEQUENTIAL:
            raise ValueError(f"first_frame=True is a stage-1 (sequential) option, not one of {stage.value}")
        mask = torch.zeros(self.seq_len, dtype=torch.bool, device=device)
        frames = sorted({*self.target_frames(stage), *((0,) if first_frame else ())})
        for t in frames:
            r = self.frame_range(t)
            mask[r.start:r.stop] = True
        return mask

    def prefix_frames(self, stage: Stage | str) -> tuple[int, ...]:
        """Frames fed at once, as a bidirectional prefix, before generation starts.

        Only the interpolation stage has them (its given frames). Stage 1's first frame is
        "given" for the loss, but it is itself generated token by token (by the base channel).
        """
        if Stage.parse(stage) is Stage.INTERPOLATION:
            return self.given_frames(stage)
        return ()

    def inference_frame_order(self, stage: Stage | str) -> tuple[int, ...]:
        """Order in which frames are laid out for generation.

        Sequential and text-to-image: natural. Interpolation: the given frames first (one
        non-autoregressive prefix), then the generated ones: [F0, F2, F4, F1, F3] for 5 frames.
        """
        prefix = self.prefix_frames(stage)
        return prefix + tuple(t for t in range(self.frames) if t not in prefix)

    def inference_slots(self, stage: Stage | str, device=None) -> torch.Tensor:
        """Natural slot indices in inference order: text, then frames by inference_frame_order."""
        import torch

        parts = [torch.arange(self.text_len)]
        parts += [torch.arange(r.start, r.stop) for r in map(self.frame_range,
                                                              self.inference_frame_order(stage))]
        return torch.cat(parts).to(device)

    def generation_rank(self, stage: Stage | str, slots: torch.Tensor) -> torch.Tensor:
        """Rank of each slot in its stage's generation order (equal ranks: produced together).

        Text and prefix frames have rank 0 (they are inputs, seen bidirectionally). Every other
        frame slot is produced one at a time in inference order, so its rank is ``1 +`` its
        index in that order. A valid mask never lets a query see a key of higher rank.
        """
        import torch

        prefix = set(self.prefix_frames(stage))
        c = self.coords(slots)
        ranks = torch.zeros_like(slots, dtype=torch.long)
        next_rank = 1
        for t in self.inference_frame_order(stage):
            if t in prefix:
                continue
            ranks = torch.where(c.t == t, next_rank + c.p, ranks)
            next_rank += self.tokens_per_frame
        return ranks
