"""The attention mask of CogView2's direct super-resolution (DSR) model, as one predicate.

Rows follow :class:`~cogframe.core.model.sr_layout.SuperResolutionLayout` (THUDM/CogView2
sr_pipeline/dsr_model.py ``sparse_attention_2d_light``, sr_pipeline/dsr_sampling.py):

* Text and low-res queries run the frozen base attention: text sees the valid text only; a
  low-res query sees the valid text and the low-res grid, bidirectionally in the release
  (``attention_mask[:96, 96:] = 0`` is the only restriction), or causally in raster order
  (the text-to-image model's own frame mask) when ``lowres="causal"``. Nobody in these rows sees
  a high-res key. A pad query also sees itself, only so its softmax row is never empty.
* A high-res query at ``(X, Y)`` sees the high-res keys in a ``high`` window around ``(X, Y)``
  and the low-res keys in a ``low`` window around ``(X // scale, Y // scale)``, in **one** softmax,
  and no text. A window of size ``k`` spans offsets ``-(k // 2) .. k - 1 - k // 2`` (centred for
  odd ``k``; one more row before than after for even ``k``), as the local-attention kernel's
  ``rH = kH >> 1`` does (Sleepychord/Image-Local-Attention src/kernels.cuh ``cc2k``).
* Borders: ``border="mask"`` (the release's CUDA kernel fills out-of-grid scores with -10000)
  drops keys outside the grid. ``border="zero"`` reproduces the pure-torch ``F.unfold`` twin,
  which zero-pads: every out-of-grid position is a key with ``k = 0``, ``v = 0`` that scores 0
  (plus ``add_scalar`` on the low-res side), so it takes softmax mass but adds nothing. A boolean
  mask cannot express those phantom keys, nor the ``add_scalar`` bias on the low-res scores, so
  :meth:`SuperResolutionMask.dense` refuses them for high-res queries; the ``sr_local_window``
  backend computes both exactly.

docs/attention.md ("Super-resolution") has the release facts and the file each comes from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cogframe.core.model.sr_layout import SuperResolutionLayout
from cogframe.errors import ShapeError

if TYPE_CHECKING:
    import torch

__all__ = ["SR_RULE", "Border", "LocalWindows", "SuperResolutionMask", "window_span"]

SR_RULE = "super_resolution"
"""The mask rule name attention backends declare in ``Capabilities(masks=...)``."""


class Border(str, enum.Enum):
    """What a local window does where it reaches past the grid."""

    MASK = "mask"
    """Out-of-grid keys do not exist (the release's CUDA kernel: -10000 scores)."""
    ZERO = "zero"
    """Out-of-grid keys are zero vectors that score 0 (the ``F.unfold`` zero-padding twin)."""


def window_span(size: int) -> tuple[int, int]:
    """Inclusive ``(lowest, highest)`` offset of a window of ``size`` cells from its centre."""
    return -(size // 2), size - 1 - size // 2


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ShapeError(f"{name} must be two positive sizes (rows, cols), got {value!r}.")
    return pair


@dataclass(frozen=True)
class LocalWindows:
    """Window shapes and border handling of the DSR plus channel (a preset/recipe choice).

    Args:
        high: ``(rows, cols)`` of the high-res window around a query's own cell. The release
            uses ``(2 k - 1, k)`` with ``kernel_size`` ``k = 5``: 9 rows x 5 columns
            (``f_similar(q1, k1, kernel_size*2-1, kernel_size, False)``).
        low: ``(rows, cols)`` of the low-res window around the query's low-res cell (release
            ``kernel_size2`` = 5: 5 x 5).
        border: ``"mask"`` (release kernel) or ``"zero"`` (``F.unfold`` twin); see the module doc.
        add_scalar: Constant added to every high->low-res score (the release's ``add_scalar``;
            0 in its DSR pipeline).
        lowres: ``"bidirectional"`` (release) or ``"causal"`` attention among low-res rows.
    """

    high: tuple[int, int] = (9, 5)
    low: tuple[int, int] = (5, 5)
    border: Border = Border.MASK
    add_scalar: float = 0.0
    lowres: str = "bidirectional"

    def __post_init__(self) -> None:
        object.__setattr__(self, "high", _pair(self.high, "windows.high"))
        object.__setattr__(self, "low", _pair(self.low, "windows.low"))
        try:
            object.__setattr__(self, "border", Border(self.border))
        except ValueError:
            raise ShapeError(f"windows.border must be 'mask' or 'zero', got {self.border!r}.") from None
        if self.lowres not in ("bidirectional", "causal"):
            raise ShapeError(
                f"windows.lowres must be 'bidirectional' (the release) or 'causal', got {self.lowres!r}.")
        object.__setattr__(self, "add_scalar", float(self.add_scalar))


@dataclass(frozen=True)
class SuperResolutionMask:
    """Visibility of every (query slot, key slot) pair of a DSR layer; one rule for all rows.

    Args:
        layout: The DSR layout the slots refer to.
        windows: Window shapes, border and the low-res rule.
    """

    layout: SuperResolutionLayout
    windows: LocalWindows = LocalWindows()

    @property
    def rule(self):
        """The rule name backends match on (``Capabilities(masks=("super_resolution",))``)."""
        return _Rule.SUPER_RESOLUTION

    @property
    def is_temporal(self) -> bool:
        """Not a CogVideo temporal-channel rule (window backends for those skip it)."""
        return False

    @property
    def exact_as_boolean(self) -> bool:
        """Whether a boolean mask over the real keys gives this attention exactly."""
        return self.windows.border is Border.MASK and self.windows.add_scalar == 0.0

    def allowed(
        self, q_slots: torch.Tensor, k_slots: torch.Tensor, text_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, *broadcast(q_slots, k_slots)]`` bool: which real keys a query sees.

        Args:
            q_slots: Query slots, broadcastable against ``k_slots``.
            k_slots: Key slots.
            text_valid: ``[B, text_len]`` bool (None: all text valid).
        """
        import torch

        layout, win = self.layout, self.windows
        text_valid = layout.check_text_valid(text_valid, device=k_slots.device)
        q, k = layout.coords(q_slots), layout.coords(k_slots)
        # Low-res rows: text-to-image style (valid text, then the low-res grid).
        if win.lowres == "causal":
            low_low = q.is_low & k.is_low & (k_slots <= q_slots)
        else:
            low_low = q.is_low & k.is_low
        # High-res rows: two local windows, no text.
        s = layout.scale
        (hlo_r, hhi_r), (hlo_c, hhi_c) = window_span(win.high[0]), window_span(win.high[1])
        (llo_r, lhi_r), (llo_c, lhi_c) = window_span(win.low[0]), window_span(win.low[1])
        dxh, dyh = k.x - q.x, k.y - q.y
        high_high = (q.is_high & k.is_high & (dxh >= hlo_r) & (dxh <= hhi_r)
                     & (dyh >= hlo_c) & (dyh <= hhi_c))
        qcx = torch.div(q.x, s, rounding_mode="floor")
        qcy = torch.div(q.y, s, rounding_mode="floor")
        dxl, dyl = k.x - qcx, k.y - qcy
        high_low = (q.is_high & k.is_low & (dxl >= llo_r) & (dxl <= lhi_r)
                    & (dyl >= llo_c) & (dyl <= lhi_c))
        image = (low_low | high_high | high_low).unsqueeze(0)
        # Text keys: every text or low-res query sees the valid text; a pad text query itself.
        n_text = layout.text_len
        if n_text:
            idx = k_slots.clamp(min=0, max=n_text - 1)
            key_valid = text_valid[:, idx.reshape(-1)].reshape(text_valid.shape[0], *idx.shape)
        else:
            key_valid = torch.zeros((text_valid.shape[0], *k_slots.shape), dtype=torch.bool,
                                    device=k_slots.device)
        base_query = ~q.is_high
        text = k.is_text & base_query & (key_valid | (q.is_text & (q_slots == k_slots)))
        return image | text

    def phantom_keys(self, q_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Out-of-grid window positions of each query: ``(low-res count, high-res count)``.

        With ``border="zero"`` each is a zero key scoring 0 (``add_scalar`` on the low-res side);
        with ``"mask"`` they are dropped. Zero for text and low-res queries.
        """
        import torch

        layout, win = self.layout, self.windows
        q = layout.coords(q_slots)

        def inside(centre, size, extent):
            lo, hi = window_span(size)
            return (torch.clamp(centre + hi, max=extent - 1) - torch.clamp(centre + lo, min=0) + 1)

        s = layout.scale
        high_in = (inside(q.x, win.high[0], layout.high_height)
                   * inside(q.y, win.high[1], layout.high_width))
        low_in = (inside(torch.div(q.x, s, rounding_mode="floor"), win.low[0], layout.low_height)
                  * inside(torch.div(q.y, s, rounding_mode="floor"), win.low[1], layout.low_width))
        zero = torch.zeros_like(q_slots)
        n_low = torch.where(q.is_high, win.low[0] * win.low[1] - low_in, zero)
        n_high = torch.where(q.is_high, win.high[0] * win.high[1] - high_in, zero)
        return n_low, n_high

    def dense(
        self,
        q_slots: torch.Tensor | None = None,
        k_slots: torch.Tensor | None = None,
        text_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Dense ``[B, Sq, Sk]`` bool mask (default: every slot), for the dense backends.

        Raises:
            ShapeError: high-res queries with ``border="zero"`` or a non-zero ``add_scalar``,
                which no boolean mask expresses (use the ``sr_local_window`` backend).
        """
        if q_slots is None:
            q_slots = self.layout.all_slots()
        if k_slots is None:
            k_slots = self.layout.all_slots(device=q_slots.device)
        if not self.exact_as_boolean and bool((q_slots >= self.layout.high_start).any()):
            raise ShapeError(
                f"the super-resolution mask with border={self.windows.border.value!r} and "
                f"add_scalar={self.windows.add_scalar} has out-of-grid zero keys or a bias on the "
                "low-res scores, which a dense boolean mask cannot express: use the "
                "'sr_local_window' attention backend for the high-res channel, or set "
                "windows.border=mask and windows.add_scalar=0."
            )
        return self.allowed(q_slots[:, None], k_slots[None, :], text_valid)

    def mask_mod(self, q_slots: torch.Tensor, k_slots: torch.Tensor,
                 text_valid: torch.Tensor | None = None):
        """A ``flex_attention`` mask_mod of the same predicate (rows mapped through the slots)."""
        text_valid = self.layout.check_text_valid(text_valid, device=k_slots.device)
        spec = self

        def mod(b, h, q_idx, kv_idx):
            return spec.allowed(q_slots[q_idx], k_slots[kv_idx], text_valid[b].unsqueeze(0)).squeeze(0)

        return mod

    def describe(self) -> str:
        """One line for messages and ``cogframe mask``."""
        w = self.windows
        return (f"{SR_RULE} high={w.high[0]}x{w.high[1]} low={w.low[0]}x{w.low[1]} "
                f"border={w.border.value} add_scalar={w.add_scalar} lowres={w.lowres}")


class _Rule(str, enum.Enum):
    SUPER_RESOLUTION = SR_RULE
