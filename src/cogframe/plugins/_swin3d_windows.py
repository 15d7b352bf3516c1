"""Window partitions: the index tables that turn a 3D-window attention call into per-window attention.

The ``swin3d`` backend computes the temporal channel window by window (models/cogvideo_model.py, THUDM/CogVideo): roll the frame
grid by ``-shift``, cut it into ``(rows, cols)`` windows that hold every frame's tokens of that
window (frame-major, then row-major), attend inside each window with the text keys joined into the
same softmax, and put the results back. A :class:`WindowPartition` holds that recipe as plain index
tensors plus the per-window additive mask, so one call is a few ``index_select`` s and one fused
``scaled_dot_product_attention`` over ``[windows, heads, tokens, head_dim]``.

Where the windows come from (per axis, see :func:`axis_partition`): the bins of
:func:`~cogframe.core.model.masks.window_bin` in *original* coordinates are ``[0, s), [s, s + w), ...``.
Listing them in roll order (the bins from ``s`` on, then the wrapped strip ``[0, s)``) and packing
them into partitions of width ``w`` is exactly "roll by ``-s`` and cut ``w``-wide windows". When
the grid is a multiple of the window, the wrapped strip shares a partition with the last bin and
the mask (``window_bin`` equality, evaluated by ``MaskSpec.frame_allowed``) separates them: Swin's
region mask. When it is not, a bin that would straddle two partitions starts a new one and the gap
is padding, which the mask hides. Either way every pair of slots in one bin lands in one window,
so the result is exact for any grid, window and shift.

The partition is built from the slot tables alone, which is what lets it serve reordered inputs
(stage-2 inference order) and key sets that are not the whole sequence: rows are located through
the slot -> row inverse, never assumed to be in natural order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from cogframe.core.model.layout import SlotCoords
from cogframe.core.model.masks import MaskSpec, window_bin
from cogframe.errors import ShapeError

__all__ = ["WindowPartition", "axis_partition", "build_partition"]


@dataclass(frozen=True)
class WindowPartition:
    """How to run one (mask, q_slots, k_slots) call as per-window attention.

    Attributes:
        windows: Number of spatial windows ``nW`` (each spans every query/key frame).
        q_tokens: Query tokens per window ``Nq`` (query frames x window area, padding included).
        text_keys: Text keys present in ``k`` (``n_text``); they come first in every window.
        q_index: ``[nW * Nq]`` rows of ``q`` to gather; padding points at row 0 (its output is
            dropped, and its bias row is all zeros so its softmax stays finite).
        k_frame_index: ``[nW, Nk]`` rows of ``k``/``v`` holding each window's frame keys; padding
            points at row 0 and is masked with -inf for every real query.
        bias: ``[nW, Nq, n_text + Nk]`` additive mask: ``text_bias`` in the text columns, 0 / -inf
            from the frame rule in the frame columns. Text padding is applied per call.
        text_q_rows: Rows of ``q`` holding text queries (they use the dense text-only path).
        text_k_rows: Rows of ``k`` holding text keys, in the order of the text columns.
        out_index: ``[Sq]`` where each query row's output sits in ``cat([window outputs
            flattened, text-query outputs])``.
    """

    windows: int
    q_tokens: int
    text_keys: int
    q_index: torch.Tensor
    k_frame_index: torch.Tensor
    bias: torch.Tensor
    text_q_rows: torch.Tensor
    text_k_rows: torch.Tensor
    out_index: torch.Tensor


@lru_cache(maxsize=64)
def axis_partition(size: int, window: int, shift: int) -> tuple[tuple[int, ...], int]:
    """Original coordinates of one axis laid out as windows, in roll order.

    Args:
        size: Grid length along the axis (``frame_height`` or ``frame_width``).
        window: Window length along the axis.
        shift: This layer's shift along the axis (``0 <= shift < window``).

    Returns:
        ``(order, width)``: ``order`` lists original coordinates (``-1`` = padding) so that
        ``order[i * width:(i + 1) * width]`` is partition ``i``; ``width = min(window, size)``
        (a window wider than the grid needs no padding: there is only one partition).
    """
    width = min(window, size)
    coords = torch.arange(size)
    bins = window_bin(coords, window, shift).tolist()
    groups: dict[int, list[int]] = {}
    for coord, b in zip(range(size), bins):
        groups.setdefault(b, []).append(coord)
    # Roll order: the bin holding coordinate `shift` first, the wrapped strip [0, shift) last.
    ordered = sorted(groups.values(), key=lambda g: (g[0] - shift) % size)
    order: list[int] = []
    for group in ordered:
        used = len(order) % width
        if used and used + len(group) > width:
            order.extend([-1] * (width - used))  # never split a bin across two windows
        order.extend(group)
    if len(order) % width:
        order.extend([-1] * (width - len(order) % width))
    return tuple(order), width


def _frames_of(slots: torch.Tensor, text_len: int, tokens_per_frame: int, frames: int) -> torch.Tensor:
    """Per-frame count of the frame slots among ``slots`` (``[frames]`` long)."""
    frame_slots = slots[slots >= text_len]
    t = torch.div(frame_slots - text_len, tokens_per_frame, rounding_mode="floor")
    return torch.bincount(t, minlength=frames)


def _check_slots(slots: torch.Tensor, name: str, seq_len: int) -> None:
    if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= seq_len):
        raise ShapeError(
            f"{name} holds slot indices outside 0..{seq_len - 1} (the layout's seq_len is "
            f"{seq_len}): pass natural slot indices of this layout."
        )


def _select(coords: SlotCoords, window: int, dim: int) -> SlotCoords:
    """Window ``window`` of ``[nW, N]`` coordinates, with a broadcast axis at ``dim``."""
    return SlotCoords(*(field[window].unsqueeze(dim) for field in coords))


class _WindowGrid:
    """The window partition of one mask's frame grid (both axes, see :func:`axis_partition`)."""

    def __init__(self, mask: MaskSpec):
        layout = mask.layout
        (ox, self.wx), (oy, self.wy) = (
            axis_partition(layout.frame_height, mask.window[0], mask.shift[0]),
            axis_partition(layout.frame_width, mask.window[1], mask.shift[1]))
        self.nx, self.ny = len(ox) // self.wx, len(oy) // self.wy
        self.x_of = torch.tensor(ox).view(self.nx, 1, 1, self.wx, 1)
        self.y_of = torch.tensor(oy).view(1, self.ny, 1, 1, self.wy)
        self.layout = layout

    def positions(self, frames: torch.Tensor, slots: torch.Tensor) -> tuple[SlotCoords, torch.Tensor]:
        """Coordinates and rows of the ``[nW, T * wx * wy]`` window positions of ``frames``.

        Positions are frame-major, then row-major inside the window (as the release's window partition). Rows index
        ``slots``; -1 marks padding and slots that ``slots`` does not contain.
        """
        layout = self.layout
        shape = (self.nx, self.ny, frames.numel(), self.wx, self.wy)
        x, y = self.x_of.expand(shape), self.y_of.expand(shape)
        t = frames.view(1, 1, -1, 1, 1).expand(shape)
        on_grid = (x >= 0) & (y >= 0)
        p = x * layout.frame_width + y
        slot = torch.where(on_grid, layout.text_len + t * layout.tokens_per_frame + p, 0)
        row_of = torch.full((layout.seq_len,), -1, dtype=torch.long)
        row_of[slots] = torch.arange(slots.numel())
        rows = torch.where(on_grid, row_of[slot], -1)
        windows = self.nx * self.ny
        coords = SlotCoords(*(a.reshape(windows, -1) for a in (on_grid, t, x, y, p)))
        return coords, rows.reshape(windows, -1)


def build_partition(mask: MaskSpec, q_slots: torch.Tensor, k_slots: torch.Tensor,
                    dtype: torch.dtype, device: torch.device, text_bias: float = 0.0) -> WindowPartition | None:
    """Partition a call into per-window attention, or None when the call is not window-shaped.

    Window-shaped means: a temporal rule with a window, distinct slots, and queries whose frame
    slots form complete frames (any frame subset, any order; text queries may be present). Keys
    may be any distinct subset: missing keys become masked padding. Anything else (a decoding
    step with a few query slots, a spatial rule, no window) returns None and the caller uses the
    exact dense path.

    Args:
        mask: The channel's mask description.
        q_slots: ``[Sq]`` natural slots of the query rows.
        k_slots: ``[Sk]`` natural slots of the key rows.
        dtype: Dtype of the additive bias (the attention dtype).
        device: Device of the returned tensors.
        text_bias: Constant added to every frame query's text logits (baked into the bias).

    Raises:
        ShapeError: A slot lies outside the layout.
    """
    layout = mask.layout
    if mask.window is None or not mask.is_temporal:
        return None
    qs, ks = q_slots.detach().to("cpu", torch.long), k_slots.detach().to("cpu", torch.long)
    _check_slots(qs, "q_slots", layout.seq_len)
    _check_slots(ks, "k_slots", layout.seq_len)
    if torch.unique(qs).numel() != qs.numel() or torch.unique(ks).numel() != ks.numel():
        return None
    text_len, tpf = layout.text_len, layout.tokens_per_frame
    q_counts = _frames_of(qs, text_len, tpf, layout.frames)
    if ((q_counts != 0) & (q_counts != tpf)).any() or not q_counts.any():
        return None  # partial query frames: padding them to whole windows would waste work
    q_frames = q_counts.nonzero().flatten()
    k_frames = _frames_of(ks, text_len, tpf, layout.frames).nonzero().flatten()
    if k_frames.numel() == 0:
        return None

    grid = _WindowGrid(mask)
    qc, q_rows = grid.positions(q_frames, qs)
    kc, k_rows = grid.positions(k_frames, ks)
    q_real, k_real = q_rows >= 0, k_rows >= 0
    text_k_rows = (ks < text_len).nonzero().flatten()
    text_k_rows = text_k_rows[torch.argsort(ks[text_k_rows])]
    n_text = text_k_rows.numel()
    windows, q_tokens = q_rows.shape
    bias = torch.zeros(windows, q_tokens, n_text + k_rows.shape[1], dtype=dtype)
    bias[..., :n_text] = text_bias
    for w in range(windows):  # one window at a time keeps the predicate's temporaries small
        # The rule itself comes from the mask library; on original coordinates its window_bin
        # test is the shifted-window region mask.
        allowed = mask.frame_allowed(_select(qc, w, 1), _select(kc, w, 0)) & k_real[w]
        allowed |= ~q_real[w].unsqueeze(1)  # padded query rows see everything; dropped later
        bias[w, :, n_text:].masked_fill_(~allowed, float("-inf"))

    text_q_rows = (qs < text_len).nonzero().flatten()
    out_index = torch.empty(qs.numel(), dtype=torch.long)
    real_positions = q_real.flatten().nonzero().flatten()
    out_index[q_rows.flatten()[real_positions]] = real_positions
    out_index[text_q_rows] = windows * q_tokens + torch.arange(text_q_rows.numel())

    return WindowPartition(
        windows=windows, q_tokens=q_tokens, text_keys=n_text,
        q_index=q_rows.clamp(min=0).flatten().to(device),
        k_frame_index=k_rows.clamp(min=0).to(device), bias=bias.to(device),
        text_q_rows=text_q_rows.to(device),
        text_k_rows=text_k_rows.to(device), out_index=out_index.to(device),
    )
