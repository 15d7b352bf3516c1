"""Conformance of tokenizers: text round trips and id ranges, image token grids and id ranges.

:func:`check_text_tokenizer` (kind ``text_tokenizer``) verifies on sample texts:

* ``encode(text)`` is a list of ints, every id in ``[id_offset, vocab_size)`` (text ids sit past
  the image vocabulary, icetk style, so the two never collide);
* **round trip**: ``decode(encode(text)) == normalize(text)`` (``normalize`` when defined, else
  the text itself);
* the special ids the prompt builder needs (``boi_id``, ``sep_id``, ``pad_id``) are distinct and in
  range.

:func:`check_image_tokenizer` (kind ``image_tokenizer``) verifies on frames ``[N, 3, H, W]`` in
[0, 1]: ``encode`` gives int64 ``[N, h, w]`` grids (``grid_size(H, W)`` when defined) with ids in
``[0, codebook_size)``, the same grid every time; ``decode`` of a grid gives frames of the input
shape with values in [0, 1].
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from cogframe.registry import Registries
from cogframe.testing._common import ConformanceError, ConformanceReport, finish, resolve

__all__ = ["DEFAULT_TEXTS", "check_image_tokenizer", "check_text_tokenizer"]

DEFAULT_TEXTS = ("a red circle moving left", "a blue square moving up", "4.0s", "a green triangle moving right")


def check_text_tokenizer(tokenizer: Any, *, registries: Registries | None = None,
                         kwargs: Mapping[str, Any] | None = None, texts: Iterable[str] = DEFAULT_TEXTS,
                         unavailable: str = "skip") -> ConformanceReport:
    """Checks round trips and id ranges of a text tokenizer.

    Args:
        tokenizer: Its registered name, its ``@component`` class/factory, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords (``{"model_path": "..."}``).
        texts: Texts the tokenizer covers (its round trip is exact only for those).
        unavailable: When it cannot run here: ``"skip"``, ``"fail"`` or ``"report"``.
    """
    resolved = resolve("text_tokenizer", tokenizer, registries=registries, kwargs=kwargs)
    report = ConformanceReport(resolved.label, unavailable=resolved.unavailable)
    if resolved.unavailable:
        return finish(report, unavailable)
    tok, label = resolved.obj, resolved.label
    vocab = int(tok.vocab_size)
    low = int(getattr(tok, "id_offset", 0))
    texts = list(texts)
    for text in texts:
        ids = tok.encode(text)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ConformanceError(f"{label}: encode({text!r}) returned {ids!r}; it must be a list of int ids")
        bad = [i for i in ids if not low <= i < vocab]
        if bad:
            raise ConformanceError(f"{label}: encode({text!r}) gave ids {bad} outside [id_offset {low}, vocab_size "
                                   f"{vocab})")
        want = tok.normalize(text) if hasattr(tok, "normalize") else text
        back = tok.decode(ids)
        if back != want:
            raise ConformanceError(f"{label}: decode(encode({text!r})) is {back!r}, expected {want!r}")
    report.passed.append(f"{len(texts)} texts: ids in [{low}, {vocab}), decode(encode(text)) == normalize(text)")
    special = {name: getattr(tok, name) for name in ("boi_id", "sep_id", "pad_id") if hasattr(tok, name)}
    bad = {name: i for name, i in special.items() if not low <= int(i) < vocab}
    if bad:
        raise ConformanceError(f"{label}: special ids {bad} are outside [{low}, {vocab})")
    if len(set(special.values())) != len(special):
        raise ConformanceError(f"{label}: special ids {special} are not distinct")
    if special:
        report.passed.append(f"special ids {', '.join(special)} distinct and in range")
    return report


def check_image_tokenizer(tokenizer: Any, *, registries: Registries | None = None,
                          kwargs: Mapping[str, Any] | None = None, frames: torch.Tensor | None = None,
                          size: int = 32, unavailable: str = "skip") -> ConformanceReport:
    """Checks token grids, id ranges and decoded shapes of an image tokenizer.

    Args:
        tokenizer: Its registered name, its ``@component`` class, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords (``{"path": "..."}``).
        frames: ``[N, 3, H, W]`` float frames in [0, 1] (default: 2 random ``size x size`` frames).
        size: Side of the default frames.
        unavailable: When it cannot run here: ``"skip"``, ``"fail"`` or ``"report"``.
    """
    resolved = resolve("image_tokenizer", tokenizer, registries=registries, kwargs=kwargs)
    report = ConformanceReport(resolved.label, unavailable=resolved.unavailable)
    if resolved.unavailable:
        return finish(report, unavailable)
    tok, label = resolved.obj, resolved.label
    if frames is None:
        frames = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    codes = int(tok.codebook_size)
    grid = tok.encode(frames)
    if not isinstance(grid, torch.Tensor) or grid.dtype != torch.long or grid.dim() != 3 or grid.shape[0] != frames.shape[0]:
        got = f"{grid.dtype} {tuple(grid.shape)}" if isinstance(grid, torch.Tensor) else type(grid).__name__
        raise ConformanceError(f"{label}: encode of {tuple(frames.shape)} frames returned {got}; expected int64 [N, h, w]")
    if hasattr(tok, "grid_size") and tuple(grid.shape[1:]) != tuple(tok.grid_size(*frames.shape[2:])):
        raise ConformanceError(f"{label}: encode gave {tuple(grid.shape[1:])} grids but grid_size says "
                               f"{tuple(tok.grid_size(*frames.shape[2:]))}")
    if int(grid.min()) < 0 or int(grid.max()) >= codes:
        raise ConformanceError(f"{label}: ids [{int(grid.min())}, {int(grid.max())}] outside [0, codebook_size {codes})")
    if not torch.equal(tok.encode(frames), grid):
        raise ConformanceError(f"{label}: encoding the same frames twice gave different grids")
    out = tok.decode(grid)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(frames.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConformanceError(f"{label}: decode gave {got}; expected the frames' shape {tuple(frames.shape)}")
    if out.is_floating_point() and (float(out.min()) < 0.0 or float(out.max()) > 1.0):
        raise ConformanceError(f"{label}: decoded values [{float(out.min()):g}, {float(out.max()):g}] leave [0, 1]")
    report.passed.append(f"encode -> int64 {tuple(grid.shape)} ids in [0, {codes}), deterministic; decode -> "
                         f"{tuple(out.shape)} in [0, 1]")
    return report
