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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cogframe.core.model.transformer import CogVideoTransformer, ModelConfig

__all__ = ["ParameterCounts", "MemoryPlan", "count_parameters", "memory_plan",
           "activation_bytes_per_token_layer"]

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


def memory_plan(model: CogVideoTransformer, devices: int, micro_batch: int) -> MemoryPlan:
    """Per-device memory of FSDP2 training with ``micro_batch`` samples per device."""
    counts = count_parameters(model)
    cfg = model.config
    tokens = micro_batch * cfg.layout.seq_len
    per_layer = activation_bytes_per_token_layer(cfg) * tokens
    layer_inputs = cfg.hidden_size * 2 * tokens  # what a checkpointed layer keeps (bf16)
    return MemoryPlan(
        devices=devices,
        micro_batch=micro_batch,
        parameters=counts.total * 4 // devices,
        gradients=counts.trainable * 4 // devices,
        optimizer=counts.trainable * 8 // devices,
        working_layers=2 * counts.largest_layer * 2,  # current + prefetched layer, bf16
        activations=per_layer * cfg.num_layers,
        activations_checkpointed=layer_inputs * cfg.num_layers + per_layer,
        logits=2 * tokens * cfg.image_vocab_size * 4,
    )


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
