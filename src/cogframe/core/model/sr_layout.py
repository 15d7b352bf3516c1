"""The typed token layout of CogView2's direct super-resolution (DSR) model.

One sample is ``[text][low-res grid][high-res grid]`` (CogView2, arXiv 2204.14217; the release's
``--layout 96,496,4096`` in THUDM/CogView2 sr_pipeline/direct_sr.py): every size comes from a
:class:`SuperResolutionLayout`, never from literal offsets.

Conventions (THUDM/CogView2 sr_pipeline/dsr_sampling.py ``filling_sequence_dsr`` and
sr_pipeline/dsr_model.py ``position_embedding_forward``):

* Text slots ``[0, text_len)`` hold the left-padded prompt; real token ``i`` has position ``i``,
  padding position 0 (as :class:`~cogframe.core.model.layout.TokenLayout`).
* Low-res slot ``p`` (raster order over ``low_height x low_width``) holds the *given* low-res
  token ``f_low[p]`` itself: there is no BOI shift, the whole low-res image is an input. Its
  position is ``image_position_offset + lowres_position_shift + p`` in the base table (the
  release puts its BOI in the text part and the low-res tokens at 513.., so the shift is 1).
* High-res slot ``j`` (raster order over the ``scale``-times larger grid) holds a placeholder
  (the release feeds ``<start_of_image>``) and predicts ``f_high[j]``: one non-autoregressive pass.
  Its position is ``base_position_rows + j``, served by the extra table at row ``j``
  (``position_id - max_sequence_length`` in the release).
* Rows before :attr:`SuperResolutionLayout.high_start` (text + low-res) run the frozen base
  attention; high-res rows run the trainable plus channel.

Importing this module does not import torch (recipes are checked without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from cogframe.errors import ShapeError

if TYPE_CHECKING:
    import torch

__all__ = ["SRCoords", "SuperResolutionLayout"]


class SRCoords(NamedTuple):
    """Vectorised coordinates of DSR slots (tensors of the slot tensor's shape).

    ``x``/``y`` are the row/column on the slot's own grid (low-res or high-res); text slots have
    ``x = y = -1``.
    """

    is_text: torch.Tensor
    is_low: torch.Tensor
    is_high: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class SuperResolutionLayout:
    """Shape of one DSR sample: text, a low-res grid, and the ``scale``-times larger high-res grid.

    Args:
        text_len: Text slots (the prompt is left-padded to this length).
        low_height: Token rows of the low-res grid.
        low_width: Token columns of the low-res grid.
        scale: High-res grid = ``scale`` x the low-res grid on each axis (3 in the release).
        image_position_offset: The backbone's position of its first frame slot; the extra
            high-res positions are tiled from the ``low_height x low_width`` rows starting here.
        base_position_rows: Rows of the backbone's position table; high-res positions follow it.
        lowres_position_shift: Low-res cell ``p`` has position
            ``image_position_offset + lowres_position_shift + p`` (1 in the release).
    """

    text_len: int
    low_height: int
    low_width: int
    scale: int
    image_position_offset: int
    base_position_rows: int
    lowres_position_shift: int = 1

    def __post_init__(self) -> None:
        for name in ("text_len", "low_height", "low_width", "scale", "image_position_offset",
                     "base_position_rows", "lowres_position_shift"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ShapeError(f"SuperResolutionLayout.{name} must be an integer, got {value!r}.")
        if self.text_len < 0 or self.lowres_position_shift < 0:
            raise ShapeError("SuperResolutionLayout.text_len and lowres_position_shift must be >= 0.")
        for name in ("low_height", "low_width", "scale"):
            if getattr(self, name) < 1:
                raise ShapeError(f"SuperResolutionLayout.{name} must be >= 1, got {getattr(self, name)}.")
        if self.text_len > self.image_position_offset:
            raise ShapeError(
                f"text_len ({self.text_len}) exceeds image_position_offset "
                f"({self.image_position_offset}): text positions would run into image positions. "
                "Shorten the text or use a backbone with a larger image_position_offset."
            )
        end = self.lowres_position_start + self.low_tokens
        if end > self.base_position_rows:
            raise ShapeError(
                f"low-res positions {self.lowres_position_start}..{end - 1} do not fit the base "
                f"position table of {self.base_position_rows} rows. Lower lowres_position_shift "
                "(0 puts low-res cell p at the backbone's frame slot p) or the low-res grid."
            )

    # ----------------------------------------------------------------------------- sizes
    @property
    def high_height(self) -> int:
        """Token rows of the high-res grid."""
        return self.low_height * self.scale

    @property
    def high_width(self) -> int:
        """Token columns of the high-res grid."""
        return self.low_width * self.scale

    @property
    def low_tokens(self) -> int:
        """Cells of the low-res grid."""
        return self.low_height * self.low_width

    @property
    def high_tokens(self) -> int:
        """Cells of the high-res grid (also the rows of the extra position table)."""
        return self.high_height * self.high_width

    @property
    def low_start(self) -> int:
        """Sequence index of low-res cell 0."""
        return self.text_len

    @property
    def high_start(self) -> int:
        """Sequence index of high-res cell 0; rows before it run the base channel."""
        return self.text_len + self.low_tokens

    @property
    def seq_len(self) -> int:
        """Model input length."""
        return self.high_start + self.high_tokens

    @property
    def lowres_position_start(self) -> int:
        """Position id of low-res cell 0."""
        return self.image_position_offset + self.lowres_position_shift

    @property
    def extra_position_start(self) -> int:
        """Position id of high-res cell 0 (row 0 of the extra table)."""
        return self.base_position_rows

    def low_slot(self, x: int, y: int) -> int:
        """Sequence index of low-res cell ``(x, y)``."""
        if not (0 <= x < self.low_height and 0 <= y < self.low_width):
            raise ShapeError(f"low-res cell ({x}, {y}) is outside {self.low_height}x{self.low_width}.")
        return self.low_start + x * self.low_width + y

    def high_slot(self, x: int, y: int) -> int:
        """Sequence index of high-res cell ``(x, y)``."""
        if not (0 <= x < self.high_height and 0 <= y < self.high_width):
            raise ShapeError(
                f"high-res cell ({x}, {y}) is outside {self.high_height}x{self.high_width}.")
        return self.high_start + x * self.high_width + y

    def low_range(self) -> range:
        """Sequence indices of the low-res grid."""
        return range(self.low_start, self.high_start)

    def high_range(self) -> range:
        """Sequence indices of the high-res grid."""
        return range(self.high_start, self.seq_len)

    # ----------------------------------------------------------------------------- coordinates
    def coords(self, slots: torch.Tensor) -> SRCoords:
        """Region and grid coordinates of natural slot indices (any shape, integer tensor)."""
        import torch

        slots = slots.long()
        is_low = (slots >= self.low_start) & (slots < self.high_start)
        is_high = slots >= self.high_start
        low_p = (slots - self.low_start).clamp(min=0)
        high_p = (slots - self.high_start).clamp(min=0)
        x = torch.where(is_high, torch.div(high_p, self.high_width, rounding_mode="floor"),
                        torch.div(low_p, self.low_width, rounding_mode="floor"))
        y = torch.where(is_high, high_p % self.high_width, low_p % self.low_width)
        neg = torch.full_like(slots, -1)
        is_text = ~(is_low | is_high)
        return SRCoords(is_text, is_low, is_high, torch.where(is_text, neg, x),
                        torch.where(is_text, neg, y))

    def all_slots(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Every slot in natural order."""
        import torch

        return torch.arange(self.seq_len, device=device)

    # ----------------------------------------------------------------------------- positions
    def position_ids(
        self, slots: torch.Tensor | None = None, text_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, S]`` position ids of ``slots`` (default: all); see the module doc."""
        import torch

        if slots is None:
            slots = self.all_slots()
        slots = slots.long()
        text_valid = self.check_text_valid(text_valid, device=slots.device)
        batch = text_valid.shape[0]
        text_pos = (text_valid.long().cumsum(-1) - 1).clamp(min=0)
        text_pos = torch.where(text_valid, text_pos, torch.zeros_like(text_pos))
        if self.text_len:
            text = text_pos[:, slots.clamp(max=self.text_len - 1)]
        else:
            text = torch.zeros(batch, slots.numel(), dtype=torch.long, device=slots.device)
        low = self.lowres_position_start + (slots - self.low_start)
        high = self.extra_position_start + (slots - self.high_start)
        image = torch.where(slots >= self.high_start, high, low)
        return torch.where((slots < self.text_len).unsqueeze(0), text,
                           image.unsqueeze(0).expand(batch, -1))

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

    # ----------------------------------------------------------------------------- inputs
    def check_grid(self, tokens: torch.Tensor, which: str) -> None:
        """Raise a ShapeError naming the dimension when a ``[B, h, w]`` token grid does not fit."""
        want = ((self.low_height, self.low_width) if which == "low"
                else (self.high_height, self.high_width))
        if tokens.dim() != 3:
            raise ShapeError(f"{which}-res tokens must be [batch, height, width], got {tokens.dim()} dims.")
        for dim, (name, size) in enumerate(zip(("height", "width"), want), start=1):
            if tokens.shape[dim] != size:
                raise ShapeError(
                    f"{which}-res tokens dimension {dim} ({name}) is {tokens.shape[dim]}, but the "
                    f"layout expects {size} (low-res {self.low_height}x{self.low_width}, "
                    f"scale {self.scale})."
                )

    def build_input(
        self,
        text: torch.Tensor,
        low: torch.Tensor,
        placeholder_id: int,
        high: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model input (and labels) of a DSR sample.

        Args:
            text: ``[B, text_len]`` left-padded text ids.
            low: ``[B, low_height, low_width]`` low-res image ids (given).
            placeholder_id: Id every high-res slot holds (the release uses its BOI id).
            high: ``[B, high_height, high_width]`` high-res image ids (training targets), or None.

        Returns:
            ``(input_ids [B, seq_len], labels)``; labels are ``[B, seq_len]`` with -100 outside
            the high-res grid (only it is predicted), or None when ``high`` is None.
        """
        import torch

        self.check_grid(low, "low")
        if text.dim() != 2 or text.shape[1] != self.text_len:
            raise ShapeError(
                f"text must have shape [batch, text_len={self.text_len}], got {tuple(text.shape)}.")
        if text.shape[0] != low.shape[0]:
            raise ShapeError(
                f"text has batch {text.shape[0]} but the low-res tokens have batch {low.shape[0]} "
                "(dimension 0 must agree).")
        batch = low.shape[0]
        fill = torch.full((batch, self.high_tokens), placeholder_id, dtype=torch.long,
                          device=low.device)
        input_ids = torch.cat([text.long(), low.reshape(batch, -1).long(), fill], dim=1)
        if high is None:
            return input_ids, None
        self.check_grid(high, "high")
        if high.shape[0] != batch:
            raise ShapeError(
                f"high-res tokens have batch {high.shape[0]} but the low-res tokens have batch "
                f"{batch} (dimension 0 must agree).")
        ignore = torch.full((batch, self.high_start), -100, dtype=torch.long, device=low.device)
        labels = torch.cat([ignore, high.reshape(batch, -1).long()], dim=1)
        return input_ids, labels

    def loss_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[seq_len]`` bool: True on the high-res rows (the only predicted ones)."""
        import torch

        mask = torch.zeros(self.seq_len, dtype=torch.bool, device=device)
        mask[self.high_start:] = True
        return mask

    def high_grid(self, per_slot: torch.Tensor) -> torch.Tensor:
        """``[B, seq_len or high_tokens, ...]`` -> ``[B, high_height, high_width, ...]``."""
        if per_slot.shape[1] == self.seq_len:
            per_slot = per_slot[:, self.high_start:]
        if per_slot.shape[1] != self.high_tokens:
            raise ShapeError(
                f"dimension 1 is {per_slot.shape[1]}; expected {self.seq_len} (every slot) or "
                f"{self.high_tokens} (the high-res rows).")
        return per_slot.reshape(per_slot.shape[0], self.high_height, self.high_width,
                                *per_slot.shape[2:])
