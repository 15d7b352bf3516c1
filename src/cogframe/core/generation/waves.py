"""Parallel-wave decoding schedules computed from the attention masks.

The CogVideo paper (arXiv 2205.15868, Sec. 3.2) argues that windowed attention lets tokens of
consecutive frames be generated in parallel; the released code decodes one token per pass.

Autoregressive decoding feeds one slot per forward pass. But with a windowed temporal channel a
slot of frame ``t + 1`` does not depend on every slot of frame ``t``, so it can be produced
before frame ``t`` is finished. This module derives, from the masks of every layer of the model
in use, the earliest forward pass ("wave") in which each slot can be produced EXACTLY, i.e. with
the same logits (up to float summation order) as in one-token-at-a-time decoding.

Notation: ``A_l[q, k]`` is True when slot ``q`` attends to slot ``k`` at layer ``l`` in either
channel (spatial or temporal). Slot ``(t, j)`` holds the input ``f_t[j-1]`` (BOI for ``j = 0``)
and its logits give ``f_t[j]`` (the BOI-shift of the release, pretrain_cogvideo.py ``get_batch``). So the token sampled at slot
``(t, j)`` becomes the input of slot ``(t, j + 1)``.

Two dependency relations:

* **logit dependencies** ``D = A_{L-1} · ... · A_1 · A_0`` (boolean products; every ``A_l``
  holds its diagonal): the input slots the final logits of a slot depend on through all layers.
  It tells when a slot's logits are computable *at all*.
* **cache dependencies** ``C = U*``, the reflexive-transitive closure of ``U = ∪_l A_l``. With an
  append-only KV cache a slot's keys/values are computed once, when the slot is fed, at every
  layer; they are right only if every key it attends to at any layer is already cached (or fed
  in the same pass), recursively. So the set of fed slots must stay closed under ``U``, and a
  slot can be fed once every slot of ``C[s]`` has a known input. ``D ⊆ C``; for deep models the
  two coincide (they do for the 48-layer CogVideo masks), for 2-layer test models ``C`` is larger.

The decoders use ``C``. A slot is fed and sampled in the same pass; its wave is
``1 + max(wave(g))`` over the generated slots ``g`` whose token is an input in ``C[s]``, i.e. the
longest chain of such dependencies (waves start at 0 after the prefix pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import torch

from cogframe.core.model.layout import TokenLayout
from cogframe.core.model.masks import MaskSpec, spatial_mask, temporal_mask
from cogframe.errors import ShapeError

__all__ = [
    "WaveSchedule",
    "cache_dependencies",
    "config_layer_masks",
    "frame_slots",
    "layer_dependencies",
    "model_layer_masks",
    "sequential_schedule",
    "wave_schedule",
]

LayerMasks = Sequence[Sequence[MaskSpec]]
"""Per layer, the masks of the channels a frame query uses (spatial, and temporal if used)."""


def model_layer_masks(model, use_temporal: bool = True) -> list[tuple[MaskSpec, ...]]:
    """The channel masks of every layer of ``model`` (a :class:`CogVideoTransformer`).

    Args:
        model: The model whose layers are read (``layer.spatial_mask``, ``layer.temporal_mask``).
        use_temporal: False for the base-only path (CogVideo's first frame): spatial masks only.
    """
    out = []
    for layer in model.layers:
        masks = [layer.spatial_mask]
        if use_temporal and layer.temporal_mask is not None:
            masks.append(layer.temporal_mask)
        out.append(tuple(masks))
    return out


def config_layer_masks(config, use_temporal: bool = True) -> list[tuple[MaskSpec, ...]]:
    """The same masks from a :class:`ModelConfig` alone: no weights (plans for the 9B model)."""
    out = []
    for layer in range(config.num_layers):
        masks = [spatial_mask(config.layout, config.stage)]
        if use_temporal and config.has_temporal_channel:
            masks.append(temporal_mask(config.layout, config.stage, layer, config.temporal))
        out.append(tuple(masks))
    return out


def frame_slots(layout: TokenLayout, frames: Iterable[int]) -> torch.Tensor:
    """Natural slot indices of ``frames`` (sorted), as one LongTensor."""
    frames = sorted(set(int(t) for t in frames))
    if not frames:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.arange(r.start, r.stop) for r in map(layout.frame_range, frames)])


def _bool_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Boolean matrix product. float32 counts are exact below 2**24, and only ``> 0`` matters."""
    return (a.float() @ b.float()) > 0


def _layer_matrices(layer_masks: LayerMasks, slots: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, ``[n, n]`` bool: union of the channel masks over ``slots`` (all text valid).

    Text slots are left out by the callers: they are always known, and a text query never
    attends to a frame, so they never carry a dependency between frame slots. Identical layers
    (the masks alternate with the shift parity) share one matrix.
    """
    memo: dict[tuple[MaskSpec, ...], torch.Tensor] = {}
    out = []
    for masks in layer_masks:
        key = tuple(masks)
        if key not in memo:
            union = torch.zeros(slots.numel(), slots.numel(), dtype=torch.bool)
            for mask in masks:
                union |= mask.dense(slots, slots)[0]
            memo[key] = union
        out.append(memo[key])
    return out


def layer_dependencies(layer_masks: LayerMasks, slots: torch.Tensor) -> torch.Tensor:
    """Logit dependencies ``D = A_{L-1} ... A_0`` restricted to ``slots`` (``[n, n]`` bool).

    ``D[i, k]``: the final logits of slot ``slots[i]`` depend on the input at ``slots[k]``.
    Stops early once the product is a fixed point of every remaining layer's matrix.
    """
    mats = _layer_matrices(layer_masks, slots)
    if not mats:
        return torch.eye(slots.numel(), dtype=torch.bool)
    dep = mats[-1].clone()
    distinct = {id(m): m for m in mats}
    fixed: set[int] = set()
    for mat in reversed(mats[:-1]):
        if len(fixed) == len(distinct):  # dep · A = dep for every A left: nothing can change
            break
        new = _bool_mm(dep, mat)
        if torch.equal(new, dep):
            fixed.add(id(mat))
        else:
            fixed = set()
            dep = new
    return dep


def cache_dependencies(layer_masks: LayerMasks, slots: torch.Tensor) -> torch.Tensor:
    """Cache dependencies ``C = U*`` restricted to ``slots`` (``[n, n]`` bool).

    ``C[i, k]``: slot ``slots[k]`` must be in the KV cache (with a known input) before
    ``slots[i]`` can be fed. Computed by repeated squaring of the union of all layers' masks,
    ``log2`` of the longest dependency chain matrix products.
    """
    mats = _layer_matrices(layer_masks, slots)
    closure = torch.eye(slots.numel(), dtype=torch.bool)
    for mat in {id(m): m for m in mats}.values():
        closure |= mat
    while True:
        squared = _bool_mm(closure, closure)
        if torch.equal(squared, closure):
            return closure
        closure = squared


@dataclass(frozen=True)
class WaveSchedule:
    """Which slots each forward pass of a decoder feeds.

    Attributes:
        layout: The layout the slots refer to.
        prefix: Slots fed in the first pass (text and given frames), in inference order.
        waves: Generated slots fed per later pass; each pass samples exactly the slots it feeds.
        kind: ``"sequential"``, ``"cache"`` (waves from cache dependencies: executable with the
            KV cache) or ``"logits"`` (from logit dependencies: an analysis bound only).
    """

    layout: TokenLayout
    prefix: torch.Tensor
    waves: tuple[torch.Tensor, ...]
    kind: str

    @property
    def generation_passes(self) -> int:
        """Forward passes that produce tokens (the prefix pass is not counted)."""
        return len(self.waves)

    @property
    def generated_tokens(self) -> int:
        """Number of slots sampled."""
        return sum(int(w.numel()) for w in self.waves)

    @property
    def executable(self) -> bool:
        """Whether a KV-cached decoder can run it exactly."""
        return self.kind in ("sequential", "cache")

    def wave_of_slot(self) -> torch.Tensor:
        """``[seq_len]`` long: the wave of each generated slot, -1 elsewhere."""
        out = torch.full((self.layout.seq_len,), -1, dtype=torch.long)
        for i, wave in enumerate(self.waves):
            out[wave] = i
        return out


def _prefix_slots(layout: TokenLayout, given_frames: Sequence[int]) -> torch.Tensor:
    parts = [torch.arange(layout.text_len)] + [
        torch.arange(r.start, r.stop) for r in map(layout.frame_range, given_frames)
    ]
    return torch.cat(parts)


def _check_frames(layout: TokenLayout, given: Sequence[int], generated: Sequence[int]) -> None:
    both = set(given) & set(generated)
    if both:
        raise ShapeError(f"frames {sorted(both)} are both given and generated; list each frame once.")
    if not generated:
        raise ShapeError("no frame to generate: pass at least one generated frame.")
    for t in list(given) + list(generated):
        if not 0 <= t < layout.frames:
            raise ShapeError(f"frame {t} is outside the layout's frames 0..{layout.frames - 1}.")


def sequential_schedule(
    layout: TokenLayout, *, given_frames: Sequence[int], generated_frames: Sequence[int]
) -> WaveSchedule:
    """One slot per pass, frames in the order given (the released sampler's order)."""
    _check_frames(layout, given_frames, generated_frames)
    waves = tuple(torch.tensor([s]) for t in generated_frames for s in layout.frame_range(t))
    return WaveSchedule(layout, _prefix_slots(layout, given_frames), waves, "sequential")


def wave_schedule(
    layout: TokenLayout,
    layer_masks: LayerMasks,
    *,
    given_frames: Sequence[int],
    generated_frames: Sequence[int],
    dependencies: Literal["cache", "logits"] = "cache",
) -> WaveSchedule:
    """The parallel-wave schedule: every slot in the earliest pass it can be produced exactly.

    Args:
        layout: Token layout of the model.
        layer_masks: Per layer, the channel masks in use (:func:`model_layer_masks`).
        given_frames: Frames whose tokens are known (fed in the prefix pass, inference order).
        generated_frames: Frames to generate. Frames in neither list are absent (never fed).
        dependencies: ``"cache"`` for decoding; ``"logits"`` for the analysis bound.

    Raises:
        ShapeError: A given frame attends to a generated one (it cannot be prefilled), a
            generated slot depends on an absent frame, or the masks are not causal.
    """
    _check_frames(layout, given_frames, generated_frames)
    tpf = layout.tokens_per_frame
    present = sorted(set(given_frames) | set(generated_frames))
    slots = frame_slots(layout, present)
    _check_no_absent_keys(layer_masks, slots, frame_slots(
        layout, [t for t in range(layout.frames) if t not in present]))
    matrix = (cache_dependencies if dependencies == "cache" else layer_dependencies)(layer_masks, slots)
    frame_of = torch.tensor(present).repeat_interleave(tpf)
    is_gen = torch.isin(frame_of, torch.tensor(list(generated_frames)))
    if bool((matrix[~is_gen] & is_gen).any()):
        raise ShapeError(
            f"a given frame attends to a generated frame under these masks, so frames "
            f"{list(given_frames)} cannot be fed before generating {list(generated_frames)}; "
            "check the stage of the model (stage 2 needs the even frames given)."
        )
    # Every slot of a generated frame except its last feeds the next slot (BOI-shift).
    in_frame = torch.arange(slots.numel()) % tpf
    gen_idx = is_gen.nonzero().squeeze(-1)
    consumers = (is_gen & (in_frame > 0)).nonzero().squeeze(-1)
    position = torch.full((slots.numel(),), -1, dtype=torch.long)
    position[gen_idx] = torch.arange(gen_idx.numel())
    producers = position[consumers - 1]
    needs = torch.zeros(gen_idx.numel(), gen_idx.numel(), dtype=torch.bool)
    needs[:, producers] = matrix[gen_idx][:, consumers]
    waves = _longest_path_layers(needs)
    gen_slots = slots[gen_idx]
    schedule = tuple(gen_slots[waves == w] for w in range(int(waves.max()) + 1))
    return WaveSchedule(layout, _prefix_slots(layout, given_frames), schedule, dependencies)


def _check_no_absent_keys(layer_masks: LayerMasks, slots: torch.Tensor, absent: torch.Tensor) -> None:
    """Refuse a schedule whose slots would attend to a frame that is never fed."""
    if not absent.numel():
        return
    for masks in {tuple(m) for m in layer_masks}:
        for mask in masks:
            if bool(mask.dense(slots, absent).any()):
                raise ShapeError(
                    f"the mask '{mask.describe()}' lets the decoded frames attend to frames that are "
                    "neither given nor generated; list every frame they see in given_frames or "
                    "generated_frames."
                )


def _longest_path_layers(needs: torch.Tensor) -> torch.Tensor:
    """Layer of each node of a DAG: 0 without dependencies, else 1 + the latest dependency.

    ``needs[a, b]``: node ``a`` needs node ``b`` first. Each layer removes its nodes' edges with
    one column gather, so the total work is O(n^2), not O(n^2) per layer.
    """
    n = needs.shape[0]
    counts = needs.sum(1)
    layer = torch.full((n,), -1, dtype=torch.long)
    frontier = (counts == 0).nonzero().squeeze(-1)
    current = 0
    while frontier.numel():
        layer[frontier] = current
        counts = counts - needs[:, frontier].sum(1)
        counts[layer >= 0] = -1
        frontier = (counts == 0).nonzero().squeeze(-1)
        current += 1
    if bool((layer < 0).any()):
        raise ShapeError(
            "the masks let a slot depend on a token that is generated after it (not causal in "
            "generation order); a mask rule or the frame order is wrong."
        )
    return layer
