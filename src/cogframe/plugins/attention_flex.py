"""Attention through ``torch.nn.attention.flex_attention`` with a block mask from the predicate.

The block mask is built by ``create_block_mask`` from :meth:`MaskSpec.mask_mod`, the same
vectorised predicate the dense masks come from, evaluated per (query row, key row) through the
slot tables; no dense mask is ever passed in. ``text_bias`` is a ``score_mod``.

Limits of torch's flex_attention that shape this backend:

* On CPU it has a forward pass only; calling it with inputs that require grad raises
  :class:`~cogframe.errors.UnavailableError` (use ``sdpa`` or ``swin3d`` to train on CPU).
* Uncompiled (the default here) it materialises the scores like plain attention; it is exact and
  handy for checking masks. ``compile=True`` wraps it in ``torch.compile`` for the fused,
  block-sparse kernel (needs a working compiler toolchain, first call is slow).
* It has no attention dropout; ``dropout_p > 0`` raises a ConfigError.
"""

from __future__ import annotations

import warnings

import torch

from cogframe.core.model.attention import check_attention_inputs, default_scale
from cogframe.core.model.masks import MaskSpec
from cogframe.errors import ConfigError, ShapeError, UnavailableError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._availability import flex_unavailable_reason
from cogframe.plugins._bounded_cache import BoundedCache
from cogframe.registry import Capabilities, component

__all__ = ["FlexAttention", "flex_unavailable_reason"]

_COMPILED = None


def _flex_functions(compiled: bool):
    """``(flex_attention, create_block_mask)``, the former compiled once per process if asked."""
    global _COMPILED
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if not compiled:
        return flex_attention, create_block_mask
    if _COMPILED is None:
        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return _COMPILED, create_block_mask


def _bounded(mod, q_len: int, kv_len: int):
    """Clamp row indices before they reach the slot tables.

    Compiled kernels evaluate the mask over whole 128-wide blocks, so a length that is not a
    multiple of the block size can produce row indices past the end; clamping keeps the lookups
    in range and ``kv_idx < kv_len`` keeps any such key masked.
    """

    def bounded(b, h, q_idx, kv_idx):
        inside = kv_idx < kv_len
        return inside & mod(b, h, q_idx.clamp(max=q_len - 1), kv_idx.clamp(max=kv_len - 1))

    return bounded


@component(
    "attention",
    "flex",
    description="torch flex_attention with a block mask from the mask predicate (forward-only on CPU).",
    available=flex_unavailable_reason,
    capabilities=Capabilities(
        devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16", "float16"),
        # torch's flex_attention has no CPU backward: training on CPU is refused at build time.
        backward=("cuda",), masks=None,
        extra={"dropout": False, "compile": "optional"},
    ),
)
class FlexAttention:
    """flex_attention backend; exact for every mask and any sequence length.

    Args:
        compile: Run ``torch.compile(flex_attention)`` (the fused block-sparse kernel) instead of
            the eager reference implementation.
        cache_size: How many block masks to keep, keyed by mask, slots and text padding; the
            layers of one forward share a mask per parity, so a small cache saves rebuilding it
            in every layer. 0 disables caching.
    """

    def __init__(self, compile: bool = False, cache_size: int = 4):
        self.compile = bool(compile)
        self._block_masks: BoundedCache[object] = BoundedCache(cache_size)

    def __call__(self, q, k, v, mask: MaskSpec, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        self._check_supported(q, k, v, dropout_p)
        flex_attention, create_block_mask = _flex_functions(self.compile)
        text_valid = self._batch_text_valid(mask, text_valid, q.shape[0], q.device)
        # Fresh copies: eager flex runs through dynamo, which guards on whether the tensors the
        # mask_mod captures alias each other; callers often pass q_slots is k_slots, and a changing
        # aliasing pattern sends dynamo into a recompile path that crashes in torch 2.13.
        q_slots, k_slots = q_slots.clone(), k_slots.clone()
        block_mask = self._block_mask(create_block_mask, mask, q_slots, k_slots, text_valid)
        score_mod = None
        if text_bias:
            is_text_key = k_slots < mask.layout.text_len
            bias = float(text_bias)
            last = k_slots.numel() - 1

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + torch.where(is_text_key[kv_idx.clamp(max=last)], bias, 0.0)

        with warnings.catch_warnings():
            # Eager flex warns that it is unfused; that is this backend's documented default.
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            try:
                return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                      scale=default_scale(q, scale))
            except Exception as exc:
                if self.compile and type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                    raise UnavailableError(
                        f"torch.compile could not build the flex_attention kernel for mask "
                        f"'{mask.describe()}' ({type(exc).__name__}: {first}); set compile: false "
                        "to use eager flex, or use the sdpa or swin3d attention"
                    ) from exc
                raise

    @staticmethod
    def _check_supported(q, k, v, dropout_p) -> None:
        if dropout_p:
            raise ConfigError(
                f"the flex attention backend has no attention dropout (got dropout_p={dropout_p}): "
                "set the attention dropout to 0, or use the sdpa or swin3d attention"
            )
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        if needs_grad and q.device.type == "cpu":
            raise UnavailableError(
                f"flex_attention has no CPU backward in torch {torch.__version__}; use sdpa or "
                "swin3d for training on CPU (or run flex under torch.no_grad() for inference)"
            )

    @staticmethod
    def _batch_text_valid(mask, text_valid, batch, device) -> torch.Tensor:
        """``[B, text_len]`` text padding (eager flex evaluates the mask_mod for every sample)."""
        text_valid = mask.layout.check_text_valid(text_valid, device=device)
        if text_valid.shape[0] not in (1, batch):
            raise ShapeError(
                f"text_valid has batch {text_valid.shape[0]} but q has batch {batch}: dimension 0 "
                "must match (or be 1 to share one padding pattern)."
            )
        return text_valid.expand(batch, -1).clone()

    def _block_mask(self, create_block_mask, mask, q_slots, k_slots, text_valid):
        """The BlockMask of this call, from the cache when the same call was seen before."""
        key = (mask, str(q_slots.device), q_slots.cpu().numpy().tobytes(),
               k_slots.cpu().numpy().tobytes(), tuple(text_valid.shape),
               text_valid.cpu().numpy().tobytes())
        def build():
            # One padding pattern for the whole batch: build the block mask once (B=None broadcasts).
            shared = bool((text_valid == text_valid[:1]).all())
            mod = _bounded(mask.mask_mod(q_slots, k_slots, text_valid), q_slots.numel(), k_slots.numel())
            return create_block_mask(mod, None if shared else text_valid.shape[0], None,
                                     q_slots.numel(), k_slots.numel(), device=q_slots.device)

        return self._block_masks.get(key, build)


@hookimpl
def register_components():
    return [FlexAttention]
