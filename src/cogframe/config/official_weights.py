"""Checks that the files a recipe using the released CogVideo weights needs are in place.

:func:`check_official_files` walks a recipe and inspects, without loading any tensor:

* every ``model`` section's ``weights``: a complete cogframe weights folder written by
  ``cogframe convert sat`` (not a raw SAT folder), whose model agrees with ``model.preset``;
* every file a component declares in its capabilities, ``extra={"files": {keyword: hint}}``
  (e.g. icetk's ``ice_image.pt`` and ``ice_text.model``, the ``cluster`` sampler's
  ``cluster_label2.npy``): when the node sets that keyword to a path that does not exist, the
  problem names the key, the path and the component's hint on how to get the file.

This module names no component: it asks the registry what each named node declares. A task's
``validate(cfg, registries)`` calls :func:`require_official_files` so that ``cogframe validate``
reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from cogframe.errors import DataError, Problem, problems_error
from cogframe.registry import KINDS

__all__ = ["check_official_files", "declared_files", "require_official_files"]

_RELEASES = {"cogvideo_9b_stage1": "cogvideo-stage1", "cogvideo_9b_stage2": "cogvideo-stage2", "cogview2_dsr": "cogview2-dsr"}


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every mapping in ``node`` with its dotted key path."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}.{i}")


def _weights_problem(where: str, model: dict) -> Problem | None:
    folder = Path(str(model["weights"]))
    if folder.is_file() and folder.suffix == ".safetensors":
        return None  # a single weights file (tiny models): checked by the loader, not a converted folder
    # Imported here, not at the top: they import torch, and validating a recipe with weight files
    # (the tiny models) must stay torch-free.
    from cogframe.core.weights.pretrained import CONFIG_FILE, read_weights_info
    from cogframe.core.weights.sat_files import is_sat_folder
    from cogframe.core.weights.sharded_safetensors import INDEX_FILE

    release = _RELEASES.get(str(model.get("preset")), "cogvideo-stage1 / cogvideo-stage2")
    convert = f"`cogframe convert sat {release}/ {folder}`"
    if not folder.exists():
        return Problem(f"{where}.weights", f"weights folder {folder} does not exist",
                       f"download the released SwissArmyTransformer checkpoint {release}.zip (see "
                       f"docs/official-weights.md), unzip it and run {convert}")
    if is_sat_folder(folder):
        return Problem(f"{where}.weights", f"{folder} is a SwissArmyTransformer checkpoint, not a cogframe "
                       "weights folder", f"convert it: `cogframe convert sat {folder} {folder}-cogframe`, "
                       f"then point {where}.weights at {folder}-cogframe")
    if not (folder / CONFIG_FILE).is_file() or not (folder / INDEX_FILE).is_file():
        return Problem(f"{where}.weights", f"{folder} lacks {CONFIG_FILE} or {INDEX_FILE} (an unfinished "
                       "conversion?)", f"run {convert} again with --overwrite")
    try:
        info = read_weights_info(folder)
    except DataError as exc:
        return Problem(f"{where}.weights", str(exc), "")
    wanted = model.get("preset")
    if wanted is not None and info.preset != wanted:
        return Problem(f"{where}.preset", f"is {wanted!r} but the weights in {folder} are "
                       f"{info.preset or 'a model that matches no built-in preset'}",
                       f"set {where}.preset to {info.preset!r}" if info.preset else
                       f"use the preset/overrides recorded in {folder / CONFIG_FILE}")
    return None


def declared_files(registries, name: str) -> dict[str, str]:
    """``{keyword: hint}`` of the files the components called ``name`` declare (any kind)."""
    files: dict[str, str] = {}
    for kind in KINDS:
        if name not in registries.names(kind):
            continue
        spec = registries.get(kind, name)
        files.update(dict(spec.capabilities.extra.get("files", {}) or {}))
    return files


def check_official_files(cfg: DictConfig | dict, registries=None) -> list[Problem]:
    """Every missing or wrong official file the recipe refers to (empty when all are in place).

    Args:
        cfg: A loaded recipe (interpolations such as ``${oc.env:COGVIDEO_WEIGHTS,...}`` resolved).
        registries: Where the components' declared files are looked up (default: the loaded
            plugins' registries).
    """
    if registries is None:
        from cogframe.plugins import get_registries

        registries = get_registries()
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    problems: list[Problem] = []
    for where, node in _walk(tree):
        name = node.get("name")
        if where.split(".")[-1] == "model" and node.get("weights"):
            problem = _weights_problem(where, node)
            problems += [problem] if problem else []
        elif isinstance(name, str):
            for keyword, hint in declared_files(registries, name).items():
                value = node.get(keyword)
                if value and not Path(str(value)).expanduser().exists():
                    problems.append(Problem(f"{where}.{keyword}", f"{value} does not exist", str(hint)))
    return problems


def require_official_files(cfg: DictConfig | dict, registries=None, *, source: str = "recipe") -> None:
    """Raises one ConfigError listing every problem of :func:`check_official_files`.

    Raises:
        ConfigError: Some file is missing or wrong.
    """
    problems = check_official_files(cfg, registries)
    if problems:
        raise problems_error(f"{source} needs files that are not in place", problems)
