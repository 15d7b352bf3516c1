"""The CogVideo transformer, top to bottom (arXiv 2205.15868; THUDM/CogVideo models/cogvideo_model.py).

Read it in order:

1. :class:`ModelConfig` — every size of the model; presets live in ``core/presets.py``.
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

import math
from dataclasses import dataclass, field
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from cogframe.core.model.attention import AttentionBackend, dense_sdpa_attention
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
    "LayerKV",
    "loss_fn",
]


# ================================================================================== config
@dataclass(frozen=True)
class ModelConfig:
    """All sizes and switches of a CogView2 / CogVideo model.

    Args:
        num_layers: Transformer layers.
        hidden_size: Model width ``d``.
        num_heads: Attention heads (``head_dim = d / num_heads``).
        vocab_size: Rows of the (tied) word embedding: image ids first, then text ids.
        image_vocab_size: Image ids are ``[0, image_vocab_size)``; logits cover only these.
        layout: The token layout of one sample.
        stage: Text-to-image (no temporal channel), sequential or interpolation.
        ffn_hidden_size: MLP inner size (default ``4 * hidden_size``).
        temporal: Window/shift/extent of the temporal channel (video stages only).
        hidden_dropout: Dropout on MLP outputs (and attention outputs of a text-to-image model).
        attention_dropout: Dropout on attention probabilities, both channels.
        embedding_dropout: Dropout on the summed embeddings.
        layernorm_eps: LayerNorm epsilon.
        init_std: Std of the normal init; residual output layers use
            ``init_std / sqrt(2 * num_layers)``.
    """

    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    image_vocab_size: int
    layout: TokenLayout
    stage: Stage = Stage.TEXT_TO_IMAGE
    ffn_hidden_size: int | None = None
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    embedding_dropout: float = 0.1
    layernorm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage.parse(self.stage))
        if self.hidden_size % self.num_heads:
            raise ShapeError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "pick sizes with hidden_size = num_heads * head_dim."
            )
        if not 0 < self.image_vocab_size <= self.vocab_size:
            raise ShapeError(
                f"image_vocab_size ({self.image_vocab_size}) must be in 1..vocab_size "
                f"({self.vocab_size}): image ids come first in the vocabulary."
            )
        if self.stage is Stage.TEXT_TO_IMAGE and self.layout.frames != 1:
            raise ShapeError(
                f"a text-to-image model has one frame, but the layout has {self.layout.frames}; "
                "set layout.frames=1 or choose stage sequential/interpolation."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        """Inner size of the MLP."""
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def has_temporal_channel(self) -> bool:
        """Video stages add a temporal channel to every layer."""
        return self.stage is not Stage.TEXT_TO_IMAGE


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
def _cat(old: torch.Tensor | None, new: torch.Tensor, dim: int) -> torch.Tensor:
    return new if old is None else torch.cat([old, new], dim=dim)


@dataclass
class LayerKV:
    """Cached keys/values of one layer: ``[B, H, S_cached, D]`` per channel."""

    spatial_k: torch.Tensor | None = None
    spatial_v: torch.Tensor | None = None
    temporal_k: torch.Tensor | None = None
    temporal_v: torch.Tensor | None = None

    def extend_spatial(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new spatial keys/values; return all of them."""
        self.spatial_k, self.spatial_v = _cat(self.spatial_k, k, 2), _cat(self.spatial_v, v, 2)
        return self.spatial_k, self.spatial_v

    def extend_temporal(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new temporal keys/values; return all of them."""
        self.temporal_k, self.temporal_v = _cat(self.temporal_k, k, 2), _cat(self.temporal_v, v, 2)
        return self.temporal_k, self.temporal_v


class KVCache:
    """Keys and values of every slot seen so far, per layer and channel.

    The spatial channel only ever looks at text and the query's own frame, so callers may
    drop the spatial keys of finished frames with :meth:`retain_spatial_frames` (the released
    sampler's "limited spatial channel memory", models/cogvideo_cache_model.py); the temporal channel keeps all.
    Masks are evaluated on the cached slot ids, so dropping keys never changes results for
    queries that could not see them.
    """

    def __init__(self, num_layers: int):
        self.layers = [LayerKV() for _ in range(num_layers)]
        self.spatial_slots: torch.Tensor | None = None
        self.temporal_slots: torch.Tensor | None = None

    def __len__(self) -> int:
        """Number of slots fed so far."""
        return 0 if self.temporal_slots is None else int(self.temporal_slots.numel())

    def extend_slots(self, slots: torch.Tensor) -> None:
        """Record the slots of a forward step; layers then append their keys in the same order."""
        self.spatial_slots = _cat(self.spatial_slots, slots, 0)
        self.temporal_slots = _cat(self.temporal_slots, slots, 0)

    def retain_spatial_frames(self, layout: TokenLayout, frames) -> None:
        """Keep spatial keys of text and of the given frames only (exact: see class doc)."""
        if self.spatial_slots is None:
            return
        coords = layout.coords(self.spatial_slots)
        keep = ~coords.is_frame
        for t in frames:
            keep |= coords.t == t
        index = keep.nonzero().squeeze(-1)
        self.spatial_slots = self.spatial_slots[index]
        for kv in self.layers:
            kv.spatial_k = kv.spatial_k.index_select(2, index)
            kv.spatial_v = kv.spatial_v.index_select(2, index)

    def select_batch(self, index: torch.Tensor) -> None:
        """Reorder/select batch rows of every cached tensor (e.g. after dropping samples)."""
        for kv in self.layers:
            for name in ("spatial_k", "spatial_v", "temporal_k", "temporal_v"):
                t = getattr(kv, name)
                if t is not None:
                    setattr(kv, name, t.index_select(0, index))


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
    ) -> torch.Tensor:
        cfg = self.config
        dropout_p = cfg.attention_dropout if self.training else 0.0
        u = self.input_layernorm(x)
        kv = cache.layers[self.layer_id] if cache is not None else None

        # Spatial (base) channel: every row, keys = cached + new.
        q0, k0, v0 = split_heads(self.attention.query_key_value(u), cfg.num_heads)
        k_slots = q_slots
        if cache is not None:
            k0, v0 = kv.extend_spatial(k0, v0)
            k_slots = cache.spatial_slots
        ctx0 = spatial_attention(q0, k0, v0, self.spatial_mask, q_slots, k_slots, text_valid,
                                 dropout_p=dropout_p, text_bias=text_bias)
        attn_out = self.attention.dense(merge_heads(ctx0))

        if self.temporal is None:
            # Plain CogView2 layer: output dropout after the attention dense, as SAT does.
            attn_out = F.dropout(attn_out, cfg.hidden_dropout, self.training)
        else:
            # Temporal keys cover text too (plus-channel QKV applied to text hidden states).
            q1, k1, v1 = split_heads(self.temporal.query_key_value(u), cfg.num_heads)
            tk_slots = q_slots
            if cache is not None:
                k1, v1 = kv.extend_temporal(k1, v1)
                tk_slots = cache.temporal_slots
            frame_rows = (q_slots >= cfg.layout.text_len).nonzero().squeeze(-1)
            if use_temporal and frame_rows.numel():
                ctx1 = temporal_attention(
                    q1.index_select(2, frame_rows), k1, v1, self.temporal_mask,
                    q_slots.index_select(0, frame_rows), tk_slots, text_valid,
                    dropout_p=dropout_p, text_bias=text_bias,
                )
                plus = self.temporal.dense(merge_heads(ctx1))
                alpha = torch.sigmoid(self.temporal.alpha_logit)
                base = attn_out.index_select(1, frame_rows)
                mixed = alpha * base + (1 - alpha) * plus
                attn_out = attn_out.index_copy(1, frame_rows, mixed.to(attn_out.dtype))

        h = x + self.third_layernorm(attn_out)
        mlp_out = F.dropout(self.mlp(self.post_attention_layernorm(h)), cfg.hidden_dropout,
                            self.training)
        return h + self.fourth_layernorm(mlp_out)


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
            cache.extend_slots(slots)

        position_ids = layout.position_ids(slots, text_valid).expand(input_ids.shape[0], -1)
        h = self.embed(input_ids, position_ids)
        for layer in self.layers:
            args = (slots, text_valid, self.spatial_attention, self.temporal_attention, cache,
                    use_temporal, text_bias)
            if self.activation_checkpointing and self.training and cache is None:
                h = checkpoint(layer, h, *args, use_reentrant=False)
            else:
                h = layer(h, *args)
        h = self.final_layernorm(h)
        if return_hidden:
            return h
        # Tied output head, restricted to image ids (SAT ``final_forward_default``).
        return h @ self.word_embeddings.weight[: cfg.image_vocab_size].t()

    def new_cache(self) -> KVCache:
        """An empty KV cache for incremental decoding with this model."""
        return KVCache(self.config.num_layers)


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
