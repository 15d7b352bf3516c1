"""Attention masks of CogVideo as predicates over (query slot, key slot).

One predicate per rule, written with tensor operations only, serves three consumers:

* dense boolean materialisation (``MaskSpec.dense``) for the naive and sdpa backends,
* ``flex_attention``'s ``mask_mod`` (``MaskSpec.mask_mod``), which evaluates it per element,
* the property tests, which compare it with scalar definitions written from the paper's rules
  (arXiv 2205.15868, Sec. 3.2) and the release's masks (THUDM/CogVideo models/cogvideo_model.py).

A :class:`MaskSpec` is also the *structured description* efficient backends read: the rule, the
3D window, this layer's shift and the temporal extent, so the ``swin3d`` backend can partition
windows instead of materialising ``S x S`` booleans.

Semantics shared by every rule (THUDM/CogVideo models/cogvideo_model.py):

* Text queries see all non-pad text bidirectionally (and never frames). A pad query sees the
  valid text and itself, only so that its softmax row is not empty; its output is unused.
* Frame queries see all non-pad text and no pad, in one softmax with the frame keys.
* Frame-to-frame visibility is the rule's; masks are defined on natural slots, so reordered
  inputs (stage-2 inference) use the same predicate.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cogframe.core.model.layout import SlotCoords, Stage, TokenLayout
from cogframe.errors import ShapeError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that compute on tensors, not here: mask rules and
# TemporalConfig serve `cogframe validate` (which backend declares which rule) without torch.

__all__ = [
    "FrameRule",
    "MaskSpec",
    "TemporalConfig",
    "spatial_mask",
    "temporal_mask",
    "window_bin",
]


class FrameRule(str, enum.Enum):
    """Which frame slots a frame query may see (text visibility is common to all rules)."""

    OWN_FRAME_CAUSAL = "own_frame_causal"
    """Spatial channel, stage 1 and text-to-image: own frame, slots ``<= p``."""
    OWN_FRAME_INTERPOLATION = "own_frame_interpolation"
    """Spatial channel, stage 2: own frame; given (even) frames bidirectional, others causal."""
    SEQUENTIAL = "sequential"
    """Temporal channel, stage 1: earlier frames whole, own frame causal. Without a window this
    is the released full-causal mask; with one it is the paper's 3D-window sequential mask."""
    INTERPOLATION = "interpolation"
    """Temporal channel, stage 2: given frames see given frames; a generated frame sees every
    given frame, earlier generated frames, and itself causally (the release's stage-2 mask)."""


def window_bin(coord: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """Index of the window that holds ``coord`` along one axis, in original coordinates.

    Unshifted windows are ``[0, size), [size, 2 size), ...``; with a shift ``s`` they are
    ``[0, s), [s, s + size), ...``. This equals rolling by ``-s``, cutting ``size``-wide windows
    and applying Swin's region mask (the wrapped strip is its own region). A last window that is
    narrower than ``size`` (a grid not divisible by the window) is simply a smaller bin.
    """
    import torch

    return torch.div(coord + (size - shift) % size, size, rounding_mode="floor")


@dataclass(frozen=True)
class MaskSpec:
    """The mask of one attention channel at one layer, as a structured description.

    Args:
        layout: The token layout the slots refer to.
        rule: Frame-to-frame visibility.
        window: ``(rows, cols)`` of the 3D window, or None for no spatial window.
        shift: This layer's ``(rows, cols)`` shift of the window grid (already resolved for
            the layer's parity); must be ``0 <= shift < window``.
        temporal_extent: Keys must lie within this many frames of the query
            (``|q.t - k.t| <= extent``); None means every frame.
    """

    layout: TokenLayout
    rule: FrameRule
    window: tuple[int, int] | None = None
    shift: tuple[int, int] = (0, 0)
    temporal_extent: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", FrameRule(self.rule))
        if self.window is not None:
            window = tuple(int(w) for w in self.window)
            if len(window) != 2 or min(window) < 1:
                raise ShapeError(f"window must be two positive sizes (rows, cols), got {self.window}.")
            object.__setattr__(self, "window", window)
            shift = tuple(int(s) for s in self.shift)
            for axis, (w, s) in enumerate(zip(window, shift)):
                if not 0 <= s < w:
                    raise ShapeError(
                        f"shift {shift} is invalid for window {window}: axis {axis} needs "
                        f"0 <= shift < window (Swin uses window // 2)."
                    )
            object.__setattr__(self, "shift", shift)
        elif tuple(self.shift) != (0, 0):
            raise ShapeError("a shift needs a window: set window=(rows, cols) or shift=(0, 0).")
        if self.temporal_extent is not None and self.temporal_extent < 0:
            raise ShapeError(f"temporal_extent must be >= 0 or None, got {self.temporal_extent}.")

    # ------------------------------------------------------------------------- frame rule
    @property
    def is_temporal(self) -> bool:
        """Whether this is a temporal-channel rule (frames see other frames)."""
        return self.rule in (FrameRule.SEQUENTIAL, FrameRule.INTERPOLATION)

    def frame_allowed(self, q: SlotCoords, k: SlotCoords) -> torch.Tensor:
        """Frame-to-frame visibility for broadcastable query/key coordinates."""
        import torch

        same_frame = k.t == q.t
        causal_in_frame = same_frame & (k.p <= q.p)
        if self.rule is FrameRule.OWN_FRAME_CAUSAL:
            return causal_in_frame
        q_given = q.t % 2 == 0
        k_given = k.t % 2 == 0
        if self.rule is FrameRule.OWN_FRAME_INTERPOLATION:
            return same_frame & (q_given | (k.p <= q.p))
        if self.rule is FrameRule.SEQUENTIAL:
            allowed = (k.t < q.t) | causal_in_frame
        else:  # INTERPOLATION
            from_generated = k_given | causal_in_frame | (~k_given & (k.t < q.t))
            allowed = torch.where(q_given, k_given, from_generated)
        if self.window is not None:
            (wx, wy), (sx, sy) = self.window, self.shift
            allowed = allowed & (window_bin(q.x, wx, sx) == window_bin(k.x, wx, sx))
            allowed = allowed & (window_bin(q.y, wy, sy) == window_bin(k.y, wy, sy))
        if self.temporal_extent is not None:
            allowed = allowed & ((q.t - k.t).abs() <= self.temporal_extent)
        return allowed

    # ------------------------------------------------------------------------- full predicate
    def allowed(
        self,
        q_slots: torch.Tensor,
        k_slots: torch.Tensor,
        text_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Boolean visibility of natural slots; the single source of truth of the mask.

        Args:
            q_slots: Query slots, any shape broadcastable against ``k_slots``.
            k_slots: Key slots.
            text_valid: ``[B, text_len]`` bool (None: all text valid). Only used when the
                broadcast slots carry no batch dimension: the result gets a leading ``B``.

        Returns:
            ``[B, *broadcast(q_slots, k_slots)]`` bool.
        """
        layout = self.layout
        text_valid = layout.check_text_valid(text_valid, device=k_slots.device)
        q, k = layout.coords(q_slots), layout.coords(k_slots)
        frames = q.is_frame & k.is_frame & self.frame_allowed(q, k)
        key_text_valid = _gather_text_valid(text_valid, k_slots, layout.text_len)
        key_is_text = ~k.is_frame
        query_is_text = ~q.is_frame
        # Pad text queries also see themselves so their softmax row is never empty.
        text = key_is_text & (key_text_valid | (query_is_text & (q_slots == k_slots)))
        return frames.unsqueeze(0) | text

    def dense(
        self,
        q_slots: torch.Tensor | None = None,
        k_slots: torch.Tensor | None = None,
        text_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Dense ``[B, Sq, Sk]`` bool mask (default slots: the whole layout, natural order)."""
        if q_slots is None:
            q_slots = self.layout.all_slots()
        if k_slots is None:
            k_slots = self.layout.all_slots(device=q_slots.device)
        return self.allowed(q_slots[:, None], k_slots[None, :], text_valid)

    def mask_mod(
        self,
        q_slots: torch.Tensor,
        k_slots: torch.Tensor,
        text_valid: torch.Tensor | None = None,
    ):
        """A ``flex_attention`` mask_mod evaluating the same predicate per element.

        ``q_idx``/``kv_idx`` index the rows of q and k; they are mapped through the slot tables,
        so reordered or incremental inputs need no special case.
        """
        text_valid = self.layout.check_text_valid(text_valid, device=k_slots.device)
        spec = self

        def mod(b, h, q_idx, kv_idx):
            qs, ks = q_slots[q_idx], k_slots[kv_idx]
            return spec.allowed(qs, ks, text_valid[b].unsqueeze(0)).squeeze(0)

        return mod

    def describe(self) -> str:
        """One-line human description (used by `cogframe mask` and error messages)."""
        parts = [self.rule.value]
        if self.window is not None:
            parts.append(f"window={self.window[0]}x{self.window[1]}")
            parts.append(f"shift={self.shift[0]},{self.shift[1]}")
        if self.temporal_extent is not None:
            parts.append(f"extent={self.temporal_extent}")
        return " ".join(parts)


def _gather_text_valid(text_valid: torch.Tensor, k_slots: torch.Tensor, text_len: int) -> torch.Tensor:
    """``text_valid[b, k]`` for every key slot (False for frame slots), shape ``[B, *k]``."""
    import torch

    if text_len == 0:
        return torch.zeros((text_valid.shape[0], *k_slots.shape), dtype=torch.bool,
                           device=k_slots.device)
    # A 1-D index keeps flex_attention's eager mask_mod (vmapped over 0-d slots) happy: a 0-d
    # index would need a data-dependent integer.
    idx = k_slots.clamp(min=0, max=text_len - 1)
    flat = text_valid[:, idx.reshape(-1)].reshape(text_valid.shape[0], *k_slots.shape)
    return flat & (k_slots < text_len)


@dataclass(frozen=True)
class TemporalConfig:
    """How the temporal channel of a video model attends (a preset/recipe choice).

    Args:
        window: ``(rows, cols)`` of the 3D window; None for full (unwindowed) attention, as in
            the released stage-1 model.
        shift: Shift applied on odd layers; default ``window // 2`` (Swin). Even layers are
            never shifted.
        temporal_extent: Only attend to frames within this distance; None for all.
    """

    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None
    temporal_extent: int | None = None

    def shift_for_layer(self, layer: int) -> tuple[int, int]:
        """The shift at ``layer``: zero on even layers, the configured shift on odd ones."""
        if self.window is None or layer % 2 == 0:
            return (0, 0)
        if self.shift is None:
            return (self.window[0] // 2, self.window[1] // 2)
        return tuple(self.shift)


def spatial_mask(layout: TokenLayout, stage: Stage | str) -> MaskSpec:
    """Mask of the spatial (base, CogView2) channel: text plus the query's own frame."""
    rule = (FrameRule.OWN_FRAME_INTERPOLATION if Stage.parse(stage) is Stage.INTERPOLATION
            else FrameRule.OWN_FRAME_CAUSAL)
    return MaskSpec(layout, rule)


def temporal_mask(
    layout: TokenLayout, stage: Stage | str, layer: int, config: TemporalConfig | None = None
) -> MaskSpec:
    """Mask of the temporal (plus) channel at ``layer``."""
    config = config or TemporalConfig()
    stage = Stage.parse(stage)
    if stage is Stage.TEXT_TO_IMAGE:
        raise ShapeError("a text-to-image model has no temporal channel; use a video stage.")
    rule = FrameRule.INTERPOLATION if stage is Stage.INTERPOLATION else FrameRule.SEQUENTIAL
    return MaskSpec(layout, rule, window=config.window, shift=config.shift_for_layer(layer),
                    temporal_extent=config.temporal_extent)
