"""CogView2's direct super-resolution (DSR) model, top to bottom (arXiv 2204.14217;
THUDM/CogView2 sr_pipeline/dsr_model.py ``DsrModel``).

Read it in order:

1. :class:`AttentionPlus` — the trainable second QKV + dense of every layer, used by the
   high-res rows (the release's ``attention_plus`` mixin).
2. :class:`SuperResolutionTransformer` — the frozen text-to-image backbone (a
   :class:`~cogframe.core.model.transformer.CogVideoTransformer` in text-to-image mode, whose
   modules it reads), the extra high-res position table, and the layer loop: text and low-res
   rows run the base attention, high-res rows the plus channel over low-res keys (base-channel
   K/V of the low-res rows, as the release's cross attention uses ``k0``/``v0``) and high-res
   keys (plus-channel K/V), one softmax. LayerNorms and MLPs are the backbone's.
3. :func:`build_super_resolution_model`, :func:`inherit_text_to_image_backbone`,
   :func:`super_resolution_from_text_to_image` — building from a preset and inheriting a
   text-to-image checkpoint, frozen.

Initialisation as the release's ``reinit``: the plus QKV *and* dense are copies of the base
attention of the same layer; the extra positions tile the backbone's frame-position block
periodically over the high-res grid (``view(s, h, s, w, d) <- old.view(1, h, 1, w, d)``).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from cogframe.core.model.attention import AttentionBackend, dense_sdpa_attention, shared_dense_masks
from cogframe.core.model.sr_config import SuperResolutionConfig, sr_model_config
from cogframe.core.model.sr_masks import SuperResolutionMask
from cogframe.core.model.transformer import CogVideoTransformer, merge_heads, split_heads
from cogframe.errors import ShapeError

__all__ = [
    "AttentionPlus",
    "SuperResolutionTransformer",
    "build_super_resolution_model",
    "inherit_text_to_image_backbone",
    "super_resolution_from_text_to_image",
]


# ================================================================================== plus channel
class AttentionPlus(nn.Module):
    """Per-layer QKV and dense of the high-res rows (``mixins.attention_plus.*`` in the release).

    Parameter names (``query_key_value.{i}``, ``dense.{i}``) follow the release's mixin so a
    converted checkpoint maps one to one.
    """

    def __init__(self, num_layers: int, hidden_size: int):
        super().__init__()
        self.query_key_value = nn.ModuleList(nn.Linear(hidden_size, 3 * hidden_size)
                                             for _ in range(num_layers))
        self.dense = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_layers))


# ================================================================================== model
class SuperResolutionTransformer(nn.Module):
    """Frozen text-to-image backbone + trainable high-res attention channel and positions.

    Args:
        config: Backbone, layout and windows.
        base_attention: Backend of the text and low-res rows (default dense SDPA).
        plus_attention: Backend of the high-res rows (default dense SDPA with the dense mask;
            the ``sr_local_window`` plugin is the sparse one).
    """

    def __init__(
        self,
        config: SuperResolutionConfig,
        base_attention: AttentionBackend | None = None,
        plus_attention: AttentionBackend | None = None,
    ):
        super().__init__()
        self.config = config
        self.base_attention = base_attention or dense_sdpa_attention
        self.plus_attention = plus_attention or dense_sdpa_attention
        base, layout = config.backbone, config.layout
        self.backbone = CogVideoTransformer(base)
        self.extra_position_embeddings = nn.Embedding(layout.high_tokens, base.hidden_size)
        self.attention_plus = AttentionPlus(base.num_layers, base.hidden_size)
        self.mask = SuperResolutionMask(layout, config.windows)
        self.init_from_backbone()

    # ------------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_from_backbone(self) -> None:
        """The release's ``reinit``: plus channel = copy of the base attention; positions per ``position_init``."""
        for layer, qkv, dense in zip(self.backbone.layers, self.attention_plus.query_key_value,
                                     self.attention_plus.dense):
            qkv.load_state_dict(layer.attention.query_key_value.state_dict())
            dense.load_state_dict(layer.attention.dense.state_dict())
        layout = self.config.layout
        start, n = layout.image_position_offset, layout.low_tokens
        old = self.backbone.position_embeddings.weight[start:start + n]
        d, s = old.shape[-1], layout.scale
        h, w = layout.low_height, layout.low_width
        if self.config.position_init == "nearest":
            # High-res cell (X, Y) gets the position of the low-res cell it lies in, (X//s, Y//s).
            self.extra_position_embeddings.weight.view(h, s, w, s, d).copy_(
                old.view(h, 1, w, 1, d).expand(-1, s, -1, s, -1))
        else:
            # The release: cell (X, Y) gets base frame position (X mod h, Y mod w), periodic tiling.
            self.extra_position_embeddings.weight.view(s, h, s, w, d).copy_(
                old.view(1, h, 1, w, d).expand(s, -1, s, -1, -1))

    # ------------------------------------------------------------------------ parameter groups
    def is_new_parameter(self, name: str) -> bool:
        """Whether a parameter is one DSR adds (trainable) rather than inherits (frozen)."""
        return not name.startswith("backbone.")

    def freeze_backbone(self) -> None:
        """Freeze every backbone parameter (the release's ``disable_untrainable_params``)."""
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_new_parameter(name))

    # ------------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, text_valid: torch.Tensor | None) -> torch.Tensor:
        """Word + position embeddings; high-res rows read the extra table (``position_embedding_forward``)."""
        layout, bb = self.config.layout, self.backbone
        position_ids = layout.position_ids(text_valid=text_valid).to(input_ids.device)
        position_ids = position_ids.expand(input_ids.shape[0], -1)
        n = layout.high_start
        pos = torch.cat([bb.position_embeddings(position_ids[:, :n]),
                         self.extra_position_embeddings(position_ids[:, n:] - layout.extra_position_start)],
                        dim=1)
        return F.dropout(bb.word_embeddings(input_ids) + pos, self.config.backbone.embedding_dropout,
                         self.training)

    def _layer(self, i: int, x: torch.Tensor, text_valid, slots, text_bias: float) -> torch.Tensor:
        cfg, layout = self.config.backbone, self.config.layout
        layer = self.backbone.layers[i]
        dropout_p = cfg.attention_dropout if self.training else 0.0
        base_slots, high_slots, key_slots = slots
        n_base, n_text = layout.high_start, layout.text_len
        u = layer.input_layernorm(x)
        # Base channel: text + low-res rows, frozen weights, the text-to-image style mask.
        q0, k0, v0 = split_heads(layer.attention.query_key_value(u[:, :n_base]), cfg.num_heads)
        ctx0 = self.base_attention(q0, k0, v0, self.mask, base_slots, base_slots, text_valid,
                                   dropout_p=dropout_p, text_bias=text_bias)
        # Plus channel: high-res queries over [low-res keys of the base channel; high-res keys].
        q1, k1, v1 = split_heads(self.attention_plus.query_key_value[i](u[:, n_base:]), cfg.num_heads)
        keys = torch.cat([k0[:, :, n_text:], k1], dim=2)
        values = torch.cat([v0[:, :, n_text:], v1], dim=2)
        ctx1 = self.plus_attention(q1, keys, values, self.mask, high_slots, key_slots, text_valid,
                                   dropout_p=dropout_p)
        attn_out = torch.cat([layer.attention.dense(merge_heads(ctx0)),
                              self.attention_plus.dense[i](merge_heads(ctx1))], dim=1)
        # No dropout after the attention dense: the release's attention_forward returns it as is.
        h = x + layer.third_layernorm(attn_out)
        mlp_out = F.dropout(layer.mlp(layer.post_attention_layernorm(h)), cfg.hidden_dropout,
                            self.training)
        return h + layer.fourth_layernorm(mlp_out)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        text_valid: torch.Tensor | None = None,
        text_bias: float = 0.0,
        high_only: bool = False,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Logits over image ids for every row (one non-autoregressive pass).

        Args:
            input_ids: ``[B, seq_len]`` ids from ``SuperResolutionLayout.build_input``.
            text_valid: ``[B, text_len]`` bool, False on left padding.
            text_bias: Constant added to query->text logits of the base rows (the release's
                ``log_attention_weights``; 0 in its DSR pipeline).
            high_only: Return only the high-res rows (``[B, high_tokens, V]``).
            return_hidden: Return final hidden states instead of logits.

        Returns:
            ``[B, seq_len, image_vocab_size]`` logits (or the high-res rows, or hidden states).
        """
        cfg, layout = self.config.backbone, self.config.layout
        if input_ids.dim() != 2 or input_ids.shape[1] != layout.seq_len:
            raise ShapeError(
                f"input_ids must be [batch, seq_len={layout.seq_len}] (text {layout.text_len}, "
                f"low-res {layout.low_tokens}, high-res {layout.high_tokens}), got "
                f"{tuple(input_ids.shape)}.")
        device = input_ids.device
        if text_valid is not None:
            text_valid = layout.check_text_valid(text_valid).to(device)
            if text_valid.shape[0] != input_ids.shape[0]:
                raise ShapeError(
                    f"text_valid has batch {text_valid.shape[0]} but input_ids has batch "
                    f"{input_ids.shape[0]} (dimension 0 must agree).")
        slots = (torch.arange(layout.high_start, device=device),
                 torch.arange(layout.high_start, layout.seq_len, device=device),
                 torch.arange(layout.low_start, layout.seq_len, device=device))
        h = self.embed(input_ids, text_valid)
        with shared_dense_masks():  # every layer uses the same mask: build a dense one once
            for i in range(cfg.num_layers):
                h = self._layer(i, h, text_valid, slots, text_bias)
        if high_only:
            h = h[:, layout.high_start:]
        h = self.backbone.final_layernorm(h)
        if return_hidden:
            return h
        # Tied head restricted to image ids (the release's ``final_forward``).
        return h @ self.backbone.word_embeddings.weight[: cfg.image_vocab_size].t()

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


# ================================================================================== builders
def build_super_resolution_model(
    config: SuperResolutionConfig | str,
    *,
    overrides: Mapping | None = None,
    base_attention: AttentionBackend | None = None,
    plus_attention: AttentionBackend | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SuperResolutionTransformer:
    """An SR preset name (``tiny_dsr``, ``cogview2_dsr``) or config -> a model (backbone not frozen).

    ``device="meta"`` builds the 6B model without memory.
    """
    if not isinstance(config, SuperResolutionConfig):
        config = sr_model_config(config, overrides)
    with torch.device(device or "cpu"):
        model = SuperResolutionTransformer(config, base_attention, plus_attention)
    if dtype is not None:
        model = model.to(dtype)
    return model


@torch.no_grad()
def inherit_text_to_image_backbone(
    model: SuperResolutionTransformer, state_dict: Mapping[str, torch.Tensor], *, freeze: bool = True
) -> list[str]:
    """Load a text-to-image state dict (``CogVideoTransformer`` names) as the backbone.

    The new parameters are then re-initialised from it (:meth:`~SuperResolutionTransformer.init_from_backbone`).

    Returns:
        Names of the backbone parameters loaded (without the ``backbone.`` prefix).

    Raises:
        ShapeError: missing/unexpected keys or shape mismatches, all listed.
    """
    own = dict(model.backbone.named_parameters())
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [f"{n}: checkpoint {tuple(state_dict[n].shape)} vs model {tuple(p.shape)}"
             for n, p in own.items() if n in state_dict and tuple(state_dict[n].shape) != tuple(p.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            parts.append("shape mismatches: " + "; ".join(wrong))
        raise ShapeError(
            "the text-to-image checkpoint does not fit the super-resolution backbone ("
            + " | ".join(parts) + "). Use the text-to-image model the SR preset names as its "
            "backbone (same layers, hidden size, vocabulary and position table).")
    for name, param in own.items():
        param.copy_(state_dict[name].to(param.dtype))
    model.init_from_backbone()
    if freeze:
        model.freeze_backbone()
    return sorted(own)


def super_resolution_from_text_to_image(
    config: SuperResolutionConfig | str,
    state_dict: Mapping[str, torch.Tensor],
    *,
    overrides: Mapping | None = None,
    base_attention: AttentionBackend | None = None,
    plus_attention: AttentionBackend | None = None,
    freeze: bool = True,
) -> SuperResolutionTransformer:
    """Build a DSR model whose frozen backbone is the given text-to-image model."""
    model = build_super_resolution_model(config, overrides=overrides, base_attention=base_attention,
                                         plus_attention=plus_attention)
    inherit_text_to_image_backbone(model, state_dict, freeze=freeze)
    return model
