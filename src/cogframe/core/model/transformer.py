"""The CogVideo transformer, top to bottom (arXiv 2205.15868; THUDM/CogVideo models/cogvideo_model.py).

Read it in order:

1. :class:`ModelConfig` — every size of the model (defined with the presets in ``config.py``).
2. :class:`MLP`, :class:`SpatialAttention` — the CogView2 layer parts (the frozen, inherited
   "spatial" channel).
3. :class:`TemporalChannel` — the trainable "plus" channel of CogVideo and its mixing factor.
4. :class:`TransformerLayer` — Sandwich-LN layer with dual-channel attention.
5. :class:`CogVideoTransformer` — embeddings, layers, tied head restricted to image ids, and
   incremental decoding through :class:`KVCache`.

Module names follow SwissArmyTransformer's (``query_key_value``, ``dense``,
``input_layernorm`` ...) so the released checkpoints map onto them one to one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cogframe.core.model.attention import AttentionBackend, dense_sdpa_attention, shared_dense_masks
# ModelConfig lives in the torch-free config.py (validation needs it without torch); re-exported here.
from cogframe.core.model.config import ModelConfig
from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import MaskSpec, TemporalConfig, spatial_mask, temporal_mask
from cogframe.errors import ShapeError

__all__ = [
    "ModelConfig",
    "MLP",
    "SpatialAttention",
    "TemporalChannel",
    "TransformerLayer",
    "CogVideoTransformer",
    "KVCache",
    "ConcatKVCache",
    "DecodeMask",
    "decode_mask",
    "FrameRows",
    "LayerKV",
    "loss_fn",
]


# ================================================================================== layer parts
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation, as SwissArmyTransformer's ``gelu_impl``."""
    return F.gelu(x, approximate="tanh")


class MLP(nn.Module):
    """``dense_4h_to_h(gelu(dense_h_to_4h(x)))``, shared by both channels."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.ffn_size)
        self.dense_4h_to_h = nn.Linear(config.ffn_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(gelu_tanh(self.dense_h_to_4h(x)))


def split_heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, S, 3d]`` -> three ``[B, H, S, d/H]``; rows are ``[Q; K; V]``, head h at 64h.."""
    batch, seq, _ = qkv.shape
    q, k, v = qkv.chunk(3, dim=-1)
    return tuple(t.reshape(batch, seq, num_heads, -1).transpose(1, 2) for t in (q, k, v))


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, S, D]`` -> ``[B, S, H*D]``."""
    batch, heads, seq, dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * dim)


class SpatialAttention(nn.Module):
    """The base (CogView2) self-attention: the frozen spatial channel of a video model."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class TemporalChannel(nn.Module):
    """CogVideo's trainable attention-plus channel of one layer (``attention_plus`` in models/cogvideo_model.py).

    ``alpha_logit`` is the paper's ``a``: the frame output is
    ``sigmoid(a) * base + (1 - sigmoid(a)) * plus``; ``a = 0`` gives 0.5 at initialisation.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.alpha_logit = nn.Parameter(torch.zeros(config.hidden_size))


# ================================================================================== KV cache
class LayerKV:
    """Keys/values of one layer, per channel, in buffers preallocated to the layout's length.

    ``spatial_k`` / ``temporal_k`` ... are ``[B, H, capacity, D]``; only the first
    ``len(cache.spatial_slots)`` / ``len(cache.temporal_slots)`` positions hold keys. A pass
    writes its new keys in place after them and attends to a view of the filled part, so no
    pass copies the keys already cached (a growing ``torch.cat`` copies O(S) per pass and
    O(S^2) per decoding run).
    """

    __slots__ = ("cache", "spatial_k", "spatial_v", "temporal_k", "temporal_v")

    def __init__(self, cache: "KVCache"):
        self.cache = cache
        self.spatial_k = self.spatial_v = self.temporal_k = self.temporal_v = None

    def _buffers(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, heads, _, dim = k.shape
        shape = (batch, heads, self.cache.capacity, dim)
        return k.new_empty(shape), k.new_empty(shape)

    # Never traced by torch.compile: compiled decoding marks these eager (eager_decode_helpers),
    # since the write positions are Python ints that change every pass and a traced write would
    # recompile per pass.
    def extend_spatial(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's spatial keys/values in place; return views of all cached ones."""
        if self.spatial_k is None:
            self.spatial_k, self.spatial_v = self._buffers(k)
        lo, hi = self.cache.spatial_range
        self.spatial_k[:, :, lo:hi] = k
        self.spatial_v[:, :, lo:hi] = v
        return self.spatial_k[:, :, :hi], self.spatial_v[:, :, :hi]

    def extend_temporal(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's temporal keys/values in place; return views of all cached ones."""
        if self.temporal_k is None:
            self.temporal_k, self.temporal_v = self._buffers(k)
        lo, hi = self.cache.temporal_range
        self.temporal_k[:, :, lo:hi] = k
        self.temporal_v[:, :, lo:hi] = v
        return self.temporal_k[:, :, :hi], self.temporal_v[:, :, :hi]


# Below this many cached keys a decoding pass attends to all of them: the lookup and the gathers of
# KVCache.visible cost more than the attention they save (the tiny models' 336-slot layouts: the
# demo was 2-8 % slower with them on; benchmarks/kv_cache.py at 416-2016 keys: 1.1-1.2x faster).
VISIBLE_KEYS_MIN = 512

# Layouts up to this many slots get a precomputed mask table (seq_len^2 bools: 16 MB at 4096);
# longer ones (e.g. a 33-frame stage-2 layout) evaluate the predicate per pass as before.
MASK_TABLE_MAX_SLOTS = 4096


class DecodeMask(MaskSpec):
    """A :class:`MaskSpec` whose :meth:`dense` reads a table of the whole layout's mask.

    A KV-cached decoding pass asks for the mask of a few new query slots against every cached
    key. Evaluating the predicate for it costs ~40 small tensor ops over the keys per pass and
    channel (a third of a pass at 512 wide, and it grows with the prefix); this class evaluates
    the predicate once for all ``seq_len x seq_len`` slot pairs (all text valid), memoised per
    mask and device, and each pass gathers its rows and columns and applies the text padding,
    about ten ops. The booleans are exactly the predicate's (tests/test_decode_mask.py); everything
    but :meth:`dense` (``allowed``, ``mask_mod``, the window fields the structured backends
    read) is the plain mask's. Equal to another mask only if that one is a ``DecodeMask`` too,
    so dense masks shared within a pass are never mixed up with the plain mask's.
    """

    def dense(self, q_slots=None, k_slots=None, text_valid=None) -> torch.Tensor:
        layout = self.layout
        if q_slots is None or k_slots is None or layout.seq_len > MASK_TABLE_MAX_SLOTS:
            return super().dense(q_slots, k_slots, text_valid)
        table = _mask_table(self, str(q_slots.device))
        allowed = table.index_select(0, q_slots).index_select(1, k_slots).unsqueeze(0)  # [1, Sq, Sk]
        if text_valid is None or not layout.text_len:
            return allowed
        text_valid = layout.check_text_valid(text_valid, device=k_slots.device)
        # The table has every text key visible. A pad key is visible to itself only (a pad query
        # sees itself so that its softmax row is not empty), exactly as MaskSpec.allowed says.
        pad = ~text_valid[:, k_slots.clamp(max=layout.text_len - 1)] & (k_slots < layout.text_len)
        visible = ~pad.unsqueeze(1) | (q_slots.unsqueeze(1) == k_slots.unsqueeze(0))  # [B, Sq, Sk]
        return allowed & visible

    def visible_keys(self, q_slots: torch.Tensor, k_slots: torch.Tensor) -> torch.Tensor | None:
        """Positions in ``k_slots`` of the keys some query of ``q_slots`` may see (None: all of them).

        With text all valid; padding only hides more keys, so the set is never too small. A
        windowed mask (the release's 3D windows) lets a query see a bounded number of the cached
        keys however long the prefix is: attending to these alone is exact (the others get
        weight exp(-inf) = 0) and its cost stays flat along the sequence.
        """
        if self.layout.seq_len > MASK_TABLE_MAX_SLOTS:
            return None
        table = _mask_table(self, str(q_slots.device))
        seen = table.index_select(0, q_slots).any(0).index_select(0, k_slots)  # [Sk]
        if bool(seen.all()):
            return None
        return seen.nonzero().squeeze(-1)


@lru_cache(maxsize=8)
def _mask_table(mask: DecodeMask, device: str) -> torch.Tensor:
    """``[seq_len, seq_len]`` bool: the predicate of ``mask`` for every slot pair, text all valid."""
    slots = mask.layout.all_slots(device=device)
    return MaskSpec.dense(mask, slots, slots, None)[0]


@lru_cache(maxsize=32)
def decode_mask(mask: MaskSpec | None) -> MaskSpec | None:
    """The :class:`DecodeMask` of ``mask`` (memoised; None stays None)."""
    if mask is None or isinstance(mask, DecodeMask):
        return mask
    return DecodeMask(**{f.name: getattr(mask, f.name) for f in dataclasses.fields(mask)})


@contextlib.contextmanager
def eager_decode_helpers() -> Iterator[None]:
    """Within the block, torch.compile runs the KV-cache writes and the mask lookup eagerly.

    Compiled decoding (``DecodeOptions.compile``) traces every layer's forward; these helpers are
    Python bookkeeping (a memoised lookup of mask objects, writes at per-pass integer positions)
    that would only break or recompile the graph. They are wrapped in ``torch.compiler.disable``
    here, for the block only, instead of by a decorator: decorating them at import would import
    ``torch._dynamo`` into every process that imports the model, compiled or not (2.1 s of
    start-up on a 2-core AMD EPYC, docs/benchmarks.md). Restored afterwards, also on error.
    """
    global decode_mask
    saved = LayerKV.extend_spatial, LayerKV.extend_temporal, decode_mask, KVCache.visible
    LayerKV.extend_spatial, LayerKV.extend_temporal, decode_mask = (
        torch.compiler.disable(fn) for fn in saved[:3])
    # Attending to the visible keys only gives each pass its own key count, which would make the
    # compiled layers recompile pass after pass: compiled decoding attends to every cached key.
    KVCache.visible = torch.compiler.disable(_every_key)
    try:
        yield
    finally:
        LayerKV.extend_spatial, LayerKV.extend_temporal, decode_mask, KVCache.visible = saved


def _every_key(cache, channel, mask, q_slots, k_slots) -> None:
    """:meth:`KVCache.visible` of compiled decoding: every cached key (masked)."""
    return None


def _retained_spatial_index(layout: TokenLayout, spatial_slots: torch.Tensor, frames) -> torch.Tensor:
    """Positions in ``spatial_slots`` of the text slots and of the slots of ``frames`` (kept keys)."""
    coords = layout.coords(spatial_slots)
    keep = ~coords.is_frame
    for t in frames:
        keep |= coords.t == t
    return keep.nonzero().squeeze(-1)


class KVCache:
    """Keys and values of every slot seen so far, per layer and channel (preallocated).

    Capacity is the layout's ``seq_len``: a decoding run feeds every slot at most once, so the
    buffers (allocated at the first pass, with that pass's batch, heads, dtype and device) never
    grow. Each pass appends in place (:meth:`begin_pass` reserves the positions, the layers write
    their keys there), so the time of a pass does not grow with the number of cached slots
    beyond the attention itself.

    The spatial channel only ever looks at text and the query's own frame, so callers may
    drop the spatial keys of finished frames with :meth:`retain_spatial_frames` (the released
    sampler's "limited spatial channel memory", models/cogvideo_cache_model.py); the temporal
    channel keeps all. Dropping compacts the spatial buffers once per finished frame (the
    kept keys move to the front; nothing moves when they already are), never once per pass.
    Masks are evaluated on the cached slot ids, so dropping keys never changes results for
    queries that could not see them. For the same reason each pass attends only to the cached
    keys some of its queries may see (:meth:`visible`): under the 3D-window masks that is a
    bounded set, so a pass's time stays flat along the sequence instead of growing with it.

    Args:
        num_layers: Transformer layers.
        capacity: Most slots one run feeds (the layout's ``seq_len``).
    """

    def __init__(self, num_layers: int, capacity: int):
        if capacity < 1:
            raise ShapeError(f"a KV cache needs a capacity of at least 1 slot, got {capacity}.")
        self.capacity = int(capacity)
        self.layers = [LayerKV(self) for _ in range(num_layers)]
        self._slots: torch.Tensor | None = None  # [2, capacity]: row 0 spatial, row 1 temporal
        self._spatial_len = self._temporal_len = 0
        self.spatial_range = self.temporal_range = (0, 0)
        self.spatial_slots: torch.Tensor | None = None
        self.temporal_slots: torch.Tensor | None = None
        self._visible: dict[tuple[str, int], torch.Tensor | None] = {}

    def __len__(self) -> int:
        """Number of slots fed so far."""
        return self._temporal_len

    def visible(self, channel: str, mask: MaskSpec | None, q_slots: torch.Tensor,
                k_slots: torch.Tensor) -> torch.Tensor | None:
        """:meth:`DecodeMask.visible_keys` of this pass's cached keys of ``channel``, once per pass and mask.

        Every layer with the same mask (all spatial channels; the temporal channels of the
        unshifted, then of the shifted layers) shares one lookup. None (attend to every cached
        key, masked) below :data:`VISIBLE_KEYS_MIN` keys and when the visible keys are more than
        half of them, where gathering would cost more than it saves.
        """
        if k_slots.numel() < VISIBLE_KEYS_MIN or not isinstance(mask, DecodeMask):
            return None
        key = (channel, id(mask))
        if key not in self._visible:
            keep = mask.visible_keys(q_slots, k_slots)
            # Gathering copies the kept keys: it pays only when it drops most of them.
            self._visible[key] = keep if keep is not None and 2 * keep.numel() <= k_slots.numel() else None
        return self._visible[key]

    def begin_pass(self, slots: torch.Tensor) -> None:
        """Reserve cache positions for the ``[S]`` slots of a forward pass.

        The layers then write their keys there (:meth:`LayerKV.extend_spatial`) and attend to
        ``spatial_slots`` / ``temporal_slots``, which this sets to the filled part (one view
        each, shared by every layer of the pass).

        Raises:
            ShapeError: The pass would hold more slots than the capacity.
        """
        n = int(slots.numel())
        if self._temporal_len + n > self.capacity:
            raise ShapeError(
                f"the KV cache holds {self._temporal_len} of {self.capacity} slots and cannot take "
                f"{n} more: a decoding run feeds each slot of the layout at most once; start a new "
                "cache (model.new_cache()) for a new run."
            )
        if self._slots is None:
            self._slots = torch.empty((2, self.capacity), dtype=torch.long, device=slots.device)
        self._visible = {}
        s0, t0 = self._spatial_len, self._temporal_len
        self._spatial_len, self._temporal_len = s0 + n, t0 + n
        self.spatial_range, self.temporal_range = (s0, s0 + n), (t0, t0 + n)
        if s0 == t0:  # nothing dropped yet: one write fills both rows
            self._slots[:, s0:s0 + n] = slots
        else:
            self._slots[0, s0:s0 + n] = slots
            self._slots[1, t0:t0 + n] = slots
        self.spatial_slots = self._slots[0, :s0 + n]
        self.temporal_slots = self._slots[1, :t0 + n]

    def truncate(self, n: int) -> None:
        """Forget the last ``n`` slots of the last pass (rejected drafts of speculative decoding).

        Their keys stay in the buffers and the next pass writes over them. Only slots of the
        last pass may go: an earlier pass's keys may already have moved (``retain_spatial_frames``).

        Raises:
            ShapeError: ``n`` is negative or more than the last pass fed.
        """
        fed = self.temporal_range[1] - self.temporal_range[0]  # what the last pass fed, less any dropped
        if not 0 <= n <= fed:
            raise ShapeError(f"truncate({n}): only the {fed} slots of the last pass can be dropped.")
        if n == 0:
            return
        self._spatial_len -= n
        self._temporal_len -= n
        self.spatial_range = (self.spatial_range[0], self._spatial_len)
        self.temporal_range = (self.temporal_range[0], self._temporal_len)
        self.spatial_slots = self._slots[0, :self._spatial_len]
        self.temporal_slots = self._slots[1, :self._temporal_len]
        self._visible = {}

    def retain_spatial_frames(self, layout: TokenLayout, frames) -> None:
        """Keep spatial keys of text and of the given frames only (exact: see class doc)."""
        if self.spatial_slots is None:
            return
        index = _retained_spatial_index(layout, self.spatial_slots, frames)
        kept = int(index.numel())
        if kept == self._spatial_len:
            return
        # Kept keys that already form a prefix stay where they are (sequential decoding: text).
        moved = not bool((index == torch.arange(kept, device=index.device)).all())
        if moved:
            self._slots[0, :kept] = self.spatial_slots.index_select(0, index)
            for kv in self.layers:
                for name in ("spatial_k", "spatial_v"):
                    buf = getattr(kv, name)
                    if buf is not None:
                        buf[:, :, :kept] = buf[:, :, :self._spatial_len].index_select(2, index)
        self._spatial_len = kept
        self.spatial_slots = self._slots[0, :kept]

    def select_batch(self, index: torch.Tensor) -> None:
        """Reorder/select batch rows of every cached tensor (e.g. after dropping samples)."""
        for kv in self.layers:
            for name in ("spatial_k", "spatial_v", "temporal_k", "temporal_v"):
                t = getattr(kv, name)
                if t is not None:
                    setattr(kv, name, t.index_select(0, index))


class ConcatKVCache:
    """The growing cache cogframe had before :class:`KVCache`: ``torch.cat`` on every pass.

    Same interface and results as :class:`KVCache`; each pass copies every cached key (O(S^2)
    bytes per run). Kept as the reference the tests and ``benchmarks/kv_cache.py`` compare the
    preallocated cache with (``model.cache_class = ConcatKVCache``).
    """

    def __init__(self, num_layers: int, capacity: int | None = None):
        self.layers = [_ConcatLayerKV() for _ in range(num_layers)]
        self.spatial_slots: torch.Tensor | None = None
        self.temporal_slots: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.temporal_slots is None else int(self.temporal_slots.numel())

    def visible(self, channel, mask, q_slots, k_slots) -> None:
        """Every cached key, masked (the behaviour before :meth:`KVCache.visible`)."""
        return None

    def begin_pass(self, slots: torch.Tensor) -> None:
        self.spatial_slots = _cat(self.spatial_slots, slots, 0)
        self.temporal_slots = _cat(self.temporal_slots, slots, 0)

    def retain_spatial_frames(self, layout: TokenLayout, frames) -> None:
        if self.spatial_slots is None:
            return
        index = _retained_spatial_index(layout, self.spatial_slots, frames)
        self.spatial_slots = self.spatial_slots[index]
        for kv in self.layers:
            kv.spatial_k = kv.spatial_k.index_select(2, index)
            kv.spatial_v = kv.spatial_v.index_select(2, index)

    def select_batch(self, index: torch.Tensor) -> None:
        for kv in self.layers:
            for name in ("spatial_k", "spatial_v", "temporal_k", "temporal_v"):
                t = getattr(kv, name)
                if t is not None:
                    setattr(kv, name, t.index_select(0, index))


def _cat(old: torch.Tensor | None, new: torch.Tensor, dim: int) -> torch.Tensor:
    return new if old is None else torch.cat([old, new], dim=dim)


@dataclass
class _ConcatLayerKV:
    spatial_k: torch.Tensor | None = None
    spatial_v: torch.Tensor | None = None
    temporal_k: torch.Tensor | None = None
    temporal_v: torch.Tensor | None = None

    def extend_spatial(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.spatial_k, self.spatial_v = _cat(self.spatial_k, k, 2), _cat(self.spatial_v, v, 2)
        return self.spatial_k, self.spatial_v

    def extend_temporal(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.temporal_k, self.temporal_v = _cat(self.temporal_k, k, 2), _cat(self.temporal_v, v, 2)
        return self.temporal_k, self.temporal_v


# ================================================================================== layer
class TransformerLayer(nn.Module):
    """One Sandwich-LN layer: ``h = x + LN3(attn(LN1 x))``, ``out = h + LN4(MLP(LN2 h))``.

    In a video model the attention is dual-channel (arXiv 2205.15868, Sec. 3.2): both channels read the same
    ``LN1(x)``; text rows use the base channel only; frame rows mix
    ``sigmoid(a) * Dense_base(ctx_spatial) + (1 - sigmoid(a)) * Dense_plus(ctx_temporal)``.
    """

    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        self.config = config
        self.layer_id = layer_id
        d, eps = config.hidden_size, config.layernorm_eps
        self.input_layernorm = nn.LayerNorm(d, eps=eps)
        self.attention = SpatialAttention(config)
        self.third_layernorm = nn.LayerNorm(d, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(config)
        self.fourth_layernorm = nn.LayerNorm(d, eps=eps)
        self.temporal = TemporalChannel(config) if config.has_temporal_channel else None
        self.spatial_mask = spatial_mask(config.layout, config.stage)
        self.temporal_mask: MaskSpec | None = (
            temporal_mask(config.layout, config.stage, layer_id, config.temporal)
            if config.has_temporal_channel else None
        )

    def forward(
        self,
        x: torch.Tensor,
        q_slots: torch.Tensor,
        text_valid: torch.Tensor | None,
        spatial_attention: AttentionBackend,
        temporal_attention: AttentionBackend,
        cache: KVCache | None = None,
        use_temporal: bool = True,
        text_bias: float = 0.0,
        frame_rows: "FrameRows | None" = None,
    ) -> torch.Tensor:
        cfg = self.config
        dropout_p = cfg.attention_dropout if self.training else 0.0
        u = self.input_layernorm(x)
        kv = cache.layers[self.layer_id] if cache is not None else None
        spatial, temporal = self.spatial_mask, self.temporal_mask
        if cache is not None:  # decoding: masks read from a table of the layout (DecodeMask)
            spatial, temporal = decode_mask(spatial), decode_mask(temporal)

        # Spatial (base) channel: every row, keys = cached + new.
        q0, k0, v0 = split_heads(self.attention.query_key_value(u), cfg.num_heads)
        k_slots = q_slots
        if cache is not None:
            k0, v0 = kv.extend_spatial(k0, v0)
            k_slots = cache.spatial_slots
            k0, v0, k_slots = _visible_only(cache.visible("spatial", spatial, q_slots, k_slots), k0, v0, k_slots)
        ctx0 = spatial_attention(q0, k0, v0, spatial, q_slots, k_slots, text_valid,
                                 dropout_p=dropout_p, text_bias=text_bias)
        attn_out = self.attention.dense(merge_heads(ctx0))

        if self.temporal is None:
            # Plain CogView2 layer: output dropout after the attention dense, as SAT does.
            attn_out = F.dropout(attn_out, cfg.hidden_dropout, self.training)
        else:
            # Temporal keys cover text too (plus-channel QKV applied to text hidden states).
            q1, k1, v1 = split_heads(self.temporal.query_key_value(u), cfg.num_heads)
            tk_slots = q_slots
            rows = frame_rows if frame_rows is not None else FrameRows.of(q_slots, cfg.layout.text_len)
            if cache is not None:
                k1, v1 = kv.extend_temporal(k1, v1)
                tk_slots = cache.temporal_slots
                k1, v1, tk_slots = _visible_only(cache.visible("temporal", temporal, rows.slots, tk_slots),
                                                 k1, v1, tk_slots)
            if use_temporal and rows.count:
                ctx1 = temporal_attention(
                    rows.select(q1, 2), k1, v1, temporal, rows.slots, tk_slots, text_valid,
                    dropout_p=dropout_p, text_bias=text_bias,
                )
                plus = self.temporal.dense(merge_heads(ctx1))
                alpha = torch.sigmoid(self.temporal.alpha_logit)
                mixed = alpha * rows.select(attn_out, 1) + (1 - alpha) * plus
                attn_out = rows.replace(attn_out, 1, mixed.to(attn_out.dtype))

        h = x + self.third_layernorm(attn_out)
        mlp_out = F.dropout(self.mlp(self.post_attention_layernorm(h)), cfg.hidden_dropout,
                            self.training)
        return h + self.fourth_layernorm(mlp_out)


def _visible_only(keep: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor, k_slots: torch.Tensor):
    """The cached keys, values and slots at the positions ``keep`` (all of them when None)."""
    if keep is None:
        return k, v, k_slots
    return k.index_select(2, keep), v.index_select(2, keep), k_slots.index_select(0, keep)


class FrameRows:
    """The rows of a forward pass that hold frame slots (the temporal channel's queries).

    Computed once per forward and shared by every layer. When every row is a frame row (every
    generation pass of the decoder) selecting and scattering them back is the identity, so
    :meth:`select` and :meth:`replace` skip the ``index_select`` / ``index_copy``.

    Args:
        index: Row indices of the frame rows, or None when every row is one.
        slots: ``[n]`` slots of the frame rows.
    """

    __slots__ = ("index", "slots", "count")

    def __init__(self, index: torch.Tensor | None, slots: torch.Tensor):
        self.index, self.slots, self.count = index, slots, int(slots.numel())

    @classmethod
    def of(cls, q_slots: torch.Tensor, text_len: int) -> "FrameRows":
        """The frame rows of the ``[S]`` slots ``q_slots``."""
        is_frame = q_slots >= text_len
        if bool(is_frame.all()):
            return cls(None, q_slots)
        index = is_frame.nonzero().squeeze(-1)
        return cls(index, q_slots.index_select(0, index))

    def select(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The frame rows of ``x`` along ``dim``."""
        return x if self.index is None else x.index_select(dim, self.index)

    def replace(self, x: torch.Tensor, dim: int, rows: torch.Tensor) -> torch.Tensor:
        """``x`` with its frame rows along ``dim`` replaced by ``rows``."""
        return rows if self.index is None else x.index_copy(dim, self.index, rows)


# ================================================================================== model
class CogVideoTransformer(nn.Module):
    """CogView2 (text-to-image) or CogVideo (stage 1 / stage 2) transformer.

    Args:
        config: Sizes and stage.
        spatial_attention: Backend for the spatial (base) channel; default dense SDPA.
        temporal_attention: Backend for the temporal (plus) channel; default dense SDPA.
    """

    def __init__(
        self,
        config: ModelConfig,
        spatial_attention: AttentionBackend | None = None,
        temporal_attention: AttentionBackend | None = None,
    ):
        super().__init__()
        self.config = config
        self.spatial_attention = spatial_attention or dense_sdpa_attention
        self.temporal_attention = temporal_attention or dense_sdpa_attention
        self.activation_checkpointing = False
        layout = config.layout
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(layout.base_position_rows, config.hidden_size)
        self.extra_position_embeddings = (
            nn.Embedding(layout.extra_position_rows, config.hidden_size)
            if config.has_temporal_channel and layout.extra_position_rows else None
        )
        self.layers = nn.ModuleList(TransformerLayer(config, i) for i in range(config.num_layers))
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_eps)
        self.reset_parameters()

    # ------------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SAT's init: N(0, std) weights, scaled residual outputs, zero biases, unit LNs.

        The temporal channel is then initialised as CogVideo's ``reinit`` does it: QKV copied
        from the base, dense N(0, std) unscaled, ``a = 0``, extra positions tiled from frame 0.
        """
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith("attention.dense") or name.endswith("dense_4h_to_h")
                nn.init.normal_(module.weight, 0.0, out_std if scaled else std)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.init_temporal_from_base()

    @torch.no_grad()
    def init_temporal_from_base(self) -> None:
        """CogVideo's ``reinit`` of the new parameters from the inherited ones (models/cogvideo_model.py)."""
        if not self.config.has_temporal_channel:
            return
        for layer in self.layers:
            layer.temporal.query_key_value.weight.copy_(layer.attention.query_key_value.weight)
            layer.temporal.query_key_value.bias.copy_(layer.attention.query_key_value.bias)
            nn.init.normal_(layer.temporal.dense.weight, 0.0, self.config.init_std)
            nn.init.zeros_(layer.temporal.dense.bias)
            nn.init.zeros_(layer.temporal.alpha_logit)
        if self.extra_position_embeddings is not None:
            layout = self.config.layout
            start = layout.image_position_offset
            frame_rows = self.position_embeddings.weight[start:start + layout.tokens_per_frame]
            rows = self.extra_position_embeddings.weight.shape[0]
            reps = -(-rows // layout.tokens_per_frame)
            self.extra_position_embeddings.weight.copy_(frame_rows.repeat(reps, 1)[:rows])

    # ------------------------------------------------------------------------ parameter groups
    def is_new_parameter(self, name: str) -> bool:
        """Whether a parameter is one CogVideo adds (trainable) rather than inherits (frozen)."""
        return name.startswith("extra_position_embeddings.") or ".temporal." in name

    def freeze_inherited(self) -> None:
        """Freeze every inherited parameter; only the video additions keep gradients."""
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_new_parameter(name))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count (tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Word + position embeddings; positions past frame 0 read the extra table (``position_embedding_forward``)."""
        extra_start = self.config.layout.extra_position_start
        h = self.word_embeddings(input_ids)
        base = self.position_embeddings(position_ids.clamp(max=extra_start - 1))
        if self.extra_position_embeddings is not None:
            extra = self.extra_position_embeddings((position_ids - extra_start).clamp(min=0))
            base = torch.where((position_ids >= extra_start).unsqueeze(-1), extra, base)
        elif bool((position_ids >= extra_start).any()):
            raise ShapeError(
                "positions beyond the first frame need the extra position table, which a "
                "text-to-image model does not have: use a video stage preset."
            )
        return F.dropout(h + base, self.config.embedding_dropout, self.training)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        slots: torch.Tensor | None = None,
        text_valid: torch.Tensor | None = None,
        cache: KVCache | None = None,
        use_temporal: bool = True,
        text_bias: float = 0.0,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Logits over image ids for every input row.

        Args:
            input_ids: ``[B, S]`` token ids (see ``TokenLayout.build_input``).
            slots: ``[S]`` natural slot of each row (default ``arange(S)``: the layout's first
                S slots in natural order). Reordered or partial inputs pass their slots.
            text_valid: ``[B, text_len]`` bool, False on left padding.
            cache: When given, rows attend to every cached slot plus themselves, and their keys
                and values are appended to the cache (incremental decoding).
            use_temporal: False runs frame rows through the base channel only (CogVideo's
                first frame is plain CogView2, ``process_stage1``).
            text_bias: Constant added to query->text logits (the release's
                ``log_text_attention_weights``, inference only).
            return_hidden: Return the final hidden states instead of logits.

        Returns:
            ``[B, S, image_vocab_size]`` logits (or ``[B, S, hidden]``).
        """
        cfg, layout = self.config, self.config.layout
        if input_ids.dim() != 2:
            raise ShapeError(f"input_ids must be [batch, seq], got {tuple(input_ids.shape)}.")
        if slots is None:
            offset = len(cache) if cache is not None else 0
            slots = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)
        if slots.shape != (input_ids.shape[1],):
            raise ShapeError(
                f"slots must have shape [{input_ids.shape[1]}] (dimension 1 of input_ids), "
                f"got {tuple(slots.shape)}."
            )
        if int(slots.max()) >= layout.seq_len:
            raise ShapeError(
                f"slot {int(slots.max())} is beyond the layout's {layout.seq_len} slots; the "
                "input is longer than the layout allows."
            )
        if text_valid is not None:
            text_valid = layout.check_text_valid(text_valid).to(input_ids.device)
            if text_valid.shape[0] != input_ids.shape[0]:
                raise ShapeError(
                    f"text_valid has batch {text_valid.shape[0]} but input_ids has batch "
                    f"{input_ids.shape[0]} (dimension 0 must agree)."
                )
        if cache is not None:
            cache.begin_pass(slots)

        position_ids = layout.position_ids(slots, text_valid).expand(input_ids.shape[0], -1)
        h = self.embed(input_ids, position_ids)
        frame_rows = FrameRows.of(slots, layout.text_len) if cfg.has_temporal_channel else None
        # The layers share their masks (the spatial mask is the same at every layer, the
        # temporal one alternates with the shift): within this pass a dense mask is built once
        # per distinct mask, not once per layer.
        with shared_dense_masks():
            for layer in self.layers:
                args = (slots, text_valid, self.spatial_attention, self.temporal_attention, cache,
                        use_temporal, text_bias, frame_rows)
                if self.activation_checkpointing and self.training and cache is None:
                    h = checkpoint(layer, h, *args, use_reentrant=False)
                else:
                    h = layer(h, *args)
        h = self.final_layernorm(h)
        if return_hidden:
            return h
        # Tied output head, restricted to image ids (SAT ``final_forward_default``).
        return h @ self.word_embeddings.weight[: cfg.image_vocab_size].t()

    cache_class: type = KVCache
    """What :meth:`new_cache` builds (tests and benchmarks set :class:`ConcatKVCache`)."""

    def new_cache(self) -> KVCache:
        """An empty KV cache for incremental decoding with this model (capacity: the layout)."""
        return self.cache_class(self.config.num_layers, self.config.layout.seq_len)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the loss-masked slots (pretrain_cogvideo.py
    ``forward_step``).

    Args:
        logits: ``[B, S, image_vocab]``.
        labels: ``[B, S]`` image ids.
        loss_mask: ``[S]`` or ``[B, S]`` bool.
    """
    mask = loss_mask.expand_as(labels)
    return F.cross_entropy(logits[mask].float(), labels[mask])
