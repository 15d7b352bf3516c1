"""Conformance of a generation stage: the batch it returns, and given frames kept for interpolators.

A stage (kind ``stage``, ``core/generation/stages.py``) maps one :class:`VideoBatch` to the next.
:func:`check_stage` runs a built stage on a batch and verifies:

* it declares ``name``, ``space`` (``tokens`` or ``pixels``), ``output_fps`` and ``models``;
* the returned batch keeps the captions and seed, has frames in its space with the same batch
  size and the same dtype (uint8 pixels / int64 token ids), its frame rate is ``output_fps``,
  and its forward passes are recorded under the stage's name;
* **an interpolator** (a stage whose batch gains rounds) returns ``(T - 1) * 2**r + 1`` frames of
  the incoming size, and **the given frames are unchanged**: frame ``i`` of the input is frame
  ``i * 2**r`` of the output, bit for bit;
* any other stage that keeps the frame count and frame size (a filter) may change frames, a
  super-resolution stage changes only the frame size.

:func:`check_stage_component` builds a registered stage that needs no models (``context=None``)
and checks it on random frames; stages that run models are built by their task with a context and
checked with :func:`check_stage` on a real batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from cogframe.core.generation.stages import VideoBatch
from cogframe.registry import Registries
from cogframe.testing._common import ConformanceError, ConformanceReport, finish, resolve

__all__ = ["check_stage", "check_stage_component", "random_batch"]


def random_batch(*, batch: int = 2, frames: int = 5, height: int = 8, width: int = 8, space: str = "pixels",
                 fps: float = 1.0, vocab_size: int = 256, seed: int = 0) -> VideoBatch:
    """A batch of random frames, as the stage before the checked one would hand it on."""
    gen = torch.Generator().manual_seed(seed)
    captions = tuple(f"caption {i}" for i in range(batch))
    if space == "pixels":
        pixels = torch.randint(0, 256, (batch, frames, height, width, 3), generator=gen, dtype=torch.uint8)
        tokens = torch.randint(0, vocab_size, (batch, frames, height, width), generator=gen)
        return VideoBatch(captions, seed, fps=fps, tokens=tokens, pixels=pixels, key_frames=frames)
    tokens = torch.randint(0, vocab_size, (batch, frames, height, width), generator=gen)
    return VideoBatch(captions, seed, fps=fps, tokens=tokens, key_frames=frames)


def _frames(batch: VideoBatch, space: str):
    return batch.pixels if space == "pixels" else batch.tokens


def check_stage(stage: Any, batch: VideoBatch, *, label: str | None = None,
                vocab_size: int | None = None) -> ConformanceReport:
    """Runs ``stage`` on ``batch`` and checks the batch it returns.

    Args:
        stage: A built stage.
        batch: Its input (frames in the stage's space; a pixel stage also gets its tokens).
        label: How messages name it (default: its class).
        vocab_size: Token stages: every output id must be below it.

    Returns:
        What held.

    Raises:
        ConformanceError: A guarantee does not hold.
    """
    label = label or f"stage {getattr(stage, 'name', type(stage).__name__)!r}"
    report = ConformanceReport(label)
    for attr in ("name", "space", "output_fps", "models"):
        if not hasattr(stage, attr):
            raise ConformanceError(f"{label} has no '{attr}' attribute; a stage declares name, space, output_fps and "
                                   "models (core/generation/stages.py)")
    space = stage.space
    if space not in ("tokens", "pixels"):
        raise ConformanceError(f"{label} declares space {space!r}; it must be 'tokens' or 'pixels'")
    before = _frames(batch, space)
    if before is None:
        raise ConformanceError(f"the batch given to check {label} has no {space}: build it with random_batch(space={space!r})")
    kept = before.clone()
    out = stage(batch)
    if not isinstance(out, VideoBatch):
        raise ConformanceError(f"{label} returned {type(out).__name__}, not a VideoBatch (make it with batch.advance)")
    if not torch.equal(before, kept):
        raise ConformanceError(f"{label} modified the input batch's {space} in place: return new frames")
    if out.captions != batch.captions or out.seed != batch.seed:
        raise ConformanceError(f"{label} changed the captions or the seed of the batch")
    after = _frames(out, space)
    if after is None or after.shape[0] != before.shape[0] or after.dim() != before.dim():
        shape = None if after is None else tuple(after.shape)
        raise ConformanceError(f"{label} returned {space} of shape {shape} for input {tuple(before.shape)}: keep "
                               f"the batch size and the [B, T, ...] layout")
    if after.dtype != before.dtype:
        raise ConformanceError(f"{label} returned {after.dtype} {space}; the input was {before.dtype}")
    if space == "tokens" and vocab_size is not None and after.numel() and \
            (int(after.min()) < 0 or int(after.max()) >= vocab_size):
        raise ConformanceError(f"{label} returned token ids outside [0, {vocab_size})")
    if out.fps is None or abs(out.fps - float(stage.output_fps)) > 1e-9 * max(1.0, abs(out.fps)):
        raise ConformanceError(f"{label} returned a batch at {out.fps} fps but declares output_fps {stage.output_fps}")
    if stage.name not in out.passes:
        raise ConformanceError(f"{label} did not record its passes under {stage.name!r}: return batch.advance(self.name, ...)")
    report.passed.append(f"batch size, dtype, fps ({out.fps:g}) and passes recorded")
    rounds = out.rounds - batch.rounds
    if rounds:
        step = 2 ** rounds
        want = (before.shape[1] - 1) * step + 1
        if after.shape[1] != want or after.shape[2:] != before.shape[2:]:
            raise ConformanceError(f"{label} did {rounds} round(s) on {before.shape[1]} frames and returned shape "
                                   f"{tuple(after.shape)}; expected {want} frames of {tuple(before.shape[2:])}")
        for i in range(before.shape[1]):
            if not torch.equal(after[:, i * step], before[:, i]):
                raise ConformanceError(f"{label}: given frame {i} is not unchanged at output frame {i * step}; an "
                                       "interpolator keeps the frames it is given bit for bit")
        report.passed.append(f"{rounds} round(s): {want} frames, every given frame unchanged")
    return report


def check_stage_component(stage: Any, *, registries: Registries | None = None,
                          kwargs: Mapping[str, Any] | None = None, context: Any = None, fps: float = 1.0,
                          frames: int = 5, unavailable: str = "skip") -> ConformanceReport:
    """Builds a stage with ``context`` and ``fps`` and checks it on a random batch of its space.

    Args:
        stage: Its registered name (``"linear_blend"``), its ``@component`` class, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords (``{"rounds": 2}``).
        context: The task's context (None for stages that run no model).
        fps: Frame rate of the incoming frames.
        frames: Frames of the incoming batch.
        unavailable: When it cannot run here: ``"skip"``, ``"fail"`` or ``"report"``.
    """
    resolved = resolve("stage", stage, registries=registries, kwargs=kwargs,
                       runtime_kwargs={"context": context, "fps": fps})
    if resolved.unavailable:
        return finish(ConformanceReport(resolved.label, unavailable=resolved.unavailable), unavailable)
    batch = random_batch(space=getattr(resolved.obj, "space", "pixels"), fps=fps, frames=frames)
    return check_stage(resolved.obj, batch, label=resolved.label)
