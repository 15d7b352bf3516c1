"""Parameter counts and a per-device memory plan, computed on the meta device.

The plan answers "does this recipe fit on N devices?" before anything is rented. Assumptions
(stated in every report, since they decide the numbers):

* FSDP2 shards every parameter over the N devices and stores it in fp32; computation uses bf16
  copies of one layer at a time (plus one prefetched layer).
* Only trainable parameters have gradients (fp32, sharded) and AdamW moments (2 x fp32, sharded).
  With LoRA adapters (``model.lora``) only the adapters train; the frozen base is still counted
  as fp32 shards, and activations are as without LoRA (the adapters' own are negligible).
* Activations per layer and token are counted tensor by tensor for the dual-channel layer (see
  :func:`activation_bytes_per_token_layer`) in bf16, assuming a fused attention kernel (flash /
  memory-efficient) that keeps no ``S x S`` score matrix. With activation checkpointing a layer
  keeps only its input; one layer's activations are recomputed at a time.
* Logits (``S x image_vocab`` in fp32, plus their gradient) are added once per sample.

The direct super-resolution model (``sr_*`` below) gets the same training plan for its plus
channel, and an inference plan (:class:`InferencePlan`) for one pass over a batch of frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cogframe.core.model.transformer import CogVideoTransformer, ModelConfig

__all__ = ["ParameterCounts", "MemoryPlan", "count_parameters", "memory_plan",
           "activation_bytes_per_token_layer", "InferencePlan", "sr_meta_model", "sr_count_parameters",
           "sr_activation_bytes_per_token_layer", "sr_memory_plan", "sr_inference_plan"]

GIB = 1024 ** 3


@dataclass(frozen=True)
class ParameterCounts:
    """Total, trainable and frozen parameters of a model as a recipe trains it."""

    total: int
    trainable: int
    frozen: int
    largest_layer: int


def count_parameters(model: CogVideoTransformer) -> ParameterCounts:
    """Count parameters (works on the meta device)."""
    total = model.num_parameters()
    trainable = model.num_parameters(trainable_only=True)
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in model.layers)
    return ParameterCounts(total, trainable, total - trainable, largest)


def activation_bytes_per_token_layer(config: ModelConfig, bytes_per_value: int = 2) -> int:
    """Bytes autograd keeps per token and layer for backward.

    Counted in units of the hidden size ``d``: LN1 input and output (2), base QKV (3),
    base context (1), base dense output (1), LN3 input (1), residual ``h`` (1), LN2 output (1),
    MLP inner pre- and post-GELU (2 x ffn/d), MLP output (1), LN4 output (1). A video layer adds
    the temporal QKV (3), context (1), dense output (1) and the mixed output (1).
    """
    d = config.hidden_size
    units = 2 + 3 + 1 + 1 + 1 + 1 + 1 + 1 + 1
    if config.has_temporal_channel:
        units += 3 + 1 + 1 + 1
    return (units * d + 2 * config.ffn_size) * bytes_per_value


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device for one training configuration."""

    devices: int
    micro_batch: int
    parameters: int
    gradients: int
    optimizer: int
    working_layers: int
    activations: int
    activations_checkpointed: int
    logits: int

    @property
    def total(self) -> int:
        """Without activation checkpointing."""
        return (self.parameters + self.gradients + self.optimizer + self.working_layers
                + self.activations + self.logits)

    @property
    def total_checkpointed(self) -> int:
        """With activation checkpointing."""
        return (self.parameters + self.gradients + self.optimizer + self.working_layers
                + self.activations_checkpointed + self.logits)

    def as_dict(self) -> dict:
        """Plain dict including the totals."""
        return asdict(self) | {"total": self.total, "total_checkpointed": self.total_checkpointed}


def _fsdp_plan(counts: ParameterCounts, devices: int, micro_batch: int, *, tokens: int, hidden_size: int,
               num_layers: int, per_token_layer: int, logit_rows: int, vocab: int) -> MemoryPlan:
    """The FSDP2 plan shared by the CogVideo and DSR models (the assumptions in the module docstring).

    Args:
        counts: The model's parameter counts.
        devices: Devices the parameters are sharded over.
        micro_batch: Samples per device per micro-step.
        tokens: Tokens per device per micro-step (``micro_batch`` x sequence length).
        hidden_size: Hidden size ``d`` (a checkpointed layer keeps its bf16 input, ``2 d`` bytes per token).
        num_layers: Transformer layers.
        per_token_layer: Activation bytes per token and layer.
        logit_rows: Rows the loss computes logits for (per device per micro-step).
        vocab: Image vocabulary size (the logits' width).
    """
    per_layer = per_token_layer * tokens
    layer_inputs = hidden_size * 2 * tokens  # what a checkpointed layer keeps (bf16)
    return MemoryPlan(
        devices=devices,
        micro_batch=micro_batch,
        parameters=counts.total * 4 // devices,
        gradients=counts.trainable * 4 // devices,
        optimizer=counts.trainable * 8 // devices,
        working_layers=2 * counts.largest_layer * 2,  # current + prefetched layer, bf16
        activations=per_layer * num_layers,
        activations_checkpointed=layer_inputs * num_layers + per_layer,
        logits=2 * logit_rows * vocab * 4,  # fp32 logits + their gradient
    )


def memory_plan(model: CogVideoTransformer, devices: int, micro_batch: int) -> MemoryPlan:
    """Per-device memory of FSDP2 training with ``micro_batch`` samples per device."""
    cfg = model.config
    tokens = micro_batch * cfg.layout.seq_len
    return _fsdp_plan(count_parameters(model), devices, micro_batch, tokens=tokens,
                      hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                      per_token_layer=activation_bytes_per_token_layer(cfg),
                      logit_rows=tokens, vocab=cfg.image_vocab_size)


def meta_model(config: ModelConfig, freeze: bool, lora=None) -> CogVideoTransformer:
    """Build on the meta device (no memory), frozen as the recipe trains it.

    Args:
        config: The model config.
        freeze: Freeze the inherited parameters (``model.init.freeze_inherited``).
        lora: A :class:`~cogframe.core.model.lora.LoraSpec`: inject adapters (then only they train).
    """
    with torch.device("meta"):
        model = CogVideoTransformer(config)
    if freeze:
        model.freeze_inherited()
    if lora is not None:
        from cogframe.core.model.lora import inject_lora

        inject_lora(model, lora)
    return model


# ================================================================================== super-resolution
# CogView2's direct super-resolution model (core/model/super_resolution.py): the frozen backbone and
# the trainable plus channel (per-layer QKV + dense) and extra positions. One layer runs the base
# attention on the text + low-res rows and the plus channel on the high-res rows, then the shared
# MLP on every row, so its activations per token are the text-to-image layer's plus the plus
# channel's concatenated [low-res; high-res] keys and values (2 d per high-res token, counted on
# every token to stay an upper bound).
def sr_meta_model(config, freeze: bool = True):
    """A :class:`~cogframe.core.model.super_resolution.SuperResolutionTransformer` on the meta
    device, its backbone frozen as the release trains it (``disable_untrainable_params``)."""
    from cogframe.core.model.super_resolution import build_super_resolution_model

    model = build_super_resolution_model(config, device="meta")
    if freeze:
        model.freeze_backbone()
    return model


def sr_count_parameters(model) -> ParameterCounts:
    """Total, trainable (plus channel + extra positions when frozen) and frozen parameters of a DSR model."""
    total = model.num_parameters()
    trainable = model.num_parameters(trainable_only=True)
    largest = max(sum(p.numel() for p in layer.parameters())
                  + sum(p.numel() for p in qkv.parameters()) + sum(p.numel() for p in dense.parameters())
                  for layer, qkv, dense in zip(model.backbone.layers, model.attention_plus.query_key_value,
                                               model.attention_plus.dense))
    return ParameterCounts(total, trainable, total - trainable, largest)


def sr_activation_bytes_per_token_layer(config: ModelConfig, bytes_per_value: int = 2) -> int:
    """Bytes autograd keeps per token and layer of a DSR layer (the text-to-image layer's units,
    :func:`activation_bytes_per_token_layer`, plus the plus channel's concatenated K/V, 2 d)."""
    return activation_bytes_per_token_layer(config, bytes_per_value) + 2 * config.hidden_size * bytes_per_value


def sr_memory_plan(model, devices: int, micro_batch: int) -> MemoryPlan:
    """Per-device memory of FSDP2 training of the DSR plus channel (same assumptions as
    :func:`memory_plan`; the loss and its logits cover the high-res rows only)."""
    base, layout = model.config.backbone, model.config.layout
    return _fsdp_plan(sr_count_parameters(model), devices, micro_batch, tokens=micro_batch * layout.seq_len,
                      hidden_size=base.hidden_size, num_layers=base.num_layers,
                      per_token_layer=sr_activation_bytes_per_token_layer(base),
                      logit_rows=micro_batch * layout.high_tokens, vocab=base.image_vocab_size)


@dataclass(frozen=True)
class InferencePlan:
    """Bytes of one DSR forward pass (one device, no autograd).

    Attributes:
        batch: Frames per pass.
        weights: Every parameter in the compute dtype.
        activations: The largest live set of one layer: residual, LayerNorm output, QKV, context
            and dense output (7 d), and the MLP's inner pre- and post-GELU (2 x ffn), per token.
        attention_scores: One layer's scores and probabilities (fp32): the base rows densely,
            the high-res rows over their two local windows (the ``sr_local_window`` backend; a
            dense backend would hold ``S x S`` per head instead).
        logits: The high-res rows' logits over the image ids, fp32 (the release's ``final_forward``
            computes them in float).
    """

    batch: int
    weights: int
    activations: int
    attention_scores: int
    logits: int

    @property
    def total(self) -> int:
        """Sum of the parts."""
        return self.weights + self.activations + self.attention_scores + self.logits

    def as_dict(self) -> dict:
        """Plain dict including the total."""
        return asdict(self) | {"total": self.total}


def sr_inference_plan(model, batch: int = 1, bytes_per_value: int = 2) -> InferencePlan:
    """Memory of super-resolving ``batch`` frames in one pass, weights and activations in a
    ``bytes_per_value``-byte dtype (2: bf16, as the release runs in half precision)."""
    base, layout, windows = model.config.backbone, model.config.layout, model.config.windows
    tokens = batch * layout.seq_len
    d = base.hidden_size
    window = windows.high[0] * windows.high[1] + windows.low[0] * windows.low[1]
    scores = 2 * batch * base.num_heads * (layout.high_start ** 2 + layout.high_tokens * window) * 4
    return InferencePlan(
        batch=batch,
        weights=model.num_parameters() * bytes_per_value,
        activations=tokens * (7 * d + 2 * base.ffn_size) * bytes_per_value,
        attention_scores=scores,
        logits=batch * layout.high_tokens * base.image_vocab_size * 4,
    )
