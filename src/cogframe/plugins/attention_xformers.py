"""Attention through ``xformers.ops.memory_efficient_attention`` (CUDA only).

The mask becomes an xformers attention bias (:func:`build_attn_bias`):

* **Structured**, when it is exact: the released stage-1 temporal mask (sequential rule, no window,
  no temporal extent) over natural slots with frame queries at the end of the key range, all text
  valid and no ``text_bias``. That mask is "key slot <= query slot" (text precedes every frame),
  i.e. xformers' ``LowerTriangularFromBottomRightMask``, which the kernels apply without reading
  a bias tensor. This covers stage-1 KV-cached decoding and its frame-only training queries.
* **Tensor**, for every other mask: the library's additive bias
  (:func:`~cogframe.core.model.attention.dense_bias`) stored with its key dimension padded to a multiple
  of 8, which is the alignment the xformers kernels require of bias rows.
"""

from __future__ import annotations

import torch

from cogframe.core.model.attention import check_attention_inputs, default_scale, dense_bias
from cogframe.core.model.masks import FrameRule, MaskSpec
from cogframe.errors import UnavailableError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._availability import xformers_unavailable_reason
from cogframe.registry import Capabilities, component

__all__ = ["TensorAttnBias", "XformersAttention", "build_attn_bias", "xformers_unavailable_reason"]

_ALIGN = 8  # xformers wants bias rows whose stride is a multiple of 8 elements


class TensorAttnBias:
    """An arbitrary additive bias with xformers' ``materialize`` interface.

    ``memory_efficient_attention`` takes a plain tensor for arbitrary biases; this wrapper keeps
    that tensor (in its aligned storage) next to the same ``materialize(shape, dtype, device)``
    the structured xformers biases have, so callers and tests treat both alike.

    Attributes:
        tensor: ``[B, 1, Sq, Sk]`` 0 / ``text_bias`` / -inf, a view into storage whose rows are
            padded to a multiple of 8 keys.
    """

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def materialize(self, shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """The bias broadcast to ``shape`` (``[..., Sq, Sk]``)."""
        return self.tensor.to(dtype=dtype, device=device).expand(shape)

    def kernel_bias(self, heads: int) -> torch.Tensor:
        """What ``memory_efficient_attention`` receives: ``[B, H, Sq, Sk]`` (heads broadcast)."""
        batch, _, q_len, k_len = self.tensor.shape
        return self.tensor.expand(batch, heads, q_len, k_len)


def _is_bottom_right_causal(mask: MaskSpec, q_slots, k_slots, text_valid, text_bias) -> bool:
    """Whether the mask equals "key slot <= query slot" with the queries at the end of the keys."""
    layout = mask.layout
    if (mask.rule is not FrameRule.SEQUENTIAL or mask.window is not None
            or mask.temporal_extent is not None or text_bias):
        return False
    if text_valid is not None and not bool(text_valid.all()):
        return False
    k_len, q_len = k_slots.numel(), q_slots.numel()
    if q_len == 0 or q_len > k_len:
        return False
    natural = torch.arange(k_len, device=k_slots.device)
    return (torch.equal(k_slots, natural) and torch.equal(q_slots, natural[k_len - q_len:])
            and int(q_slots[0]) >= layout.text_len)


def build_attn_bias(mask: MaskSpec, q_slots: torch.Tensor, k_slots: torch.Tensor,
                    text_valid: torch.Tensor | None, dtype: torch.dtype, *,
                    text_bias: float = 0.0, structured: bool = True):
    """The xformers attention bias of a call.

    Args:
        mask: The channel's mask description.
        q_slots: ``[Sq]`` natural slots of the query rows.
        k_slots: ``[Sk]`` natural slots of the key rows.
        text_valid: ``[B, text_len]`` bool or None.
        dtype: Dtype of a tensor bias (must equal the attention dtype for xformers).
        text_bias: Constant added to every query->text logit.
        structured: Allow the structured ``LowerTriangularFromBottomRightMask`` when it is exact
            (needs xformers importable); False always builds a tensor bias.

    Returns:
        A ``LowerTriangularFromBottomRightMask`` or a :class:`TensorAttnBias`; both
        ``materialize(shape, dtype, device)`` to the library's additive mask.
    """
    if structured and _is_bottom_right_causal(mask, q_slots, k_slots, text_valid, text_bias):
        from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask

        return LowerTriangularFromBottomRightMask()
    bias = dense_bias(mask, q_slots, k_slots, text_valid, dtype=dtype, text_bias=text_bias)
    k_len = bias.shape[-1]
    padded = -(-k_len // _ALIGN) * _ALIGN
    storage = bias.new_full((*bias.shape[:-1], padded), float("-inf"))
    storage[..., :k_len] = bias
    return TensorAttnBias(storage[..., :k_len])


@component(
    "attention",
    "xformers",
    description="xformers memory_efficient_attention with structured or tensor biases (CUDA).",
    available=xformers_unavailable_reason,
    capabilities=Capabilities(devices=("cuda",), dtypes=("float32", "float16", "bfloat16"),
                              backward=True, masks=None,
                              extra={"structured_bias": "LowerTriangularFromBottomRightMask"}),
)
class XformersAttention:
    """``memory_efficient_attention`` on CUDA; the bias comes from :func:`build_attn_bias`."""

    def __call__(self, q, k, v, mask: MaskSpec, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        if q.device.type != "cuda":
            raise UnavailableError(
                f"the xformers attention runs on CUDA tensors only, got {q.device.type} tensors: "
                "move the model to a GPU, or use the sdpa or swin3d attention on CPU"
            )
        import xformers.ops as xops

        bias = build_attn_bias(mask, q_slots, k_slots, text_valid, q.dtype, text_bias=text_bias)
        if isinstance(bias, TensorAttnBias):
            bias = bias.kernel_bias(q.shape[1])
            if bias.shape[0] != q.shape[0]:
                bias = bias.expand(q.shape[0], *bias.shape[1:])
        # xformers uses [batch, seq, heads, dim]; cogframe's interface is [batch, heads, seq, dim].
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias,
            p=dropout_p, scale=default_scale(q, scale))
        return out.transpose(1, 2)


@hookimpl
def register_components():
    return [XformersAttention]
