"""Checks that the files a recipe using the released CogVideo weights needs are in place.

:func:`check_official_files` walks a recipe and inspects, without loading any tensor:

* every ``model`` section's ``weights``: a complete cogframe weights folder written by
  ``cogframe convert sat`` (not a raw SAT folder), whose model agrees with ``model.preset``;
* every ``icetk`` image tokenizer's ``path`` (``ice_image.pt``) and every ``icetk_text`` text
  tokenizer's ``model_path`` (``ice_text.model``);
* every ``cluster`` token sampler's ``clusters`` file (CogVideo's ``cluster_label2.npy``).

Each problem names the file, why it is needed and how to get it. A task's ``validate(cfg,
registries)`` calls :func:`require_official_files` so that ``cogframe validate`` reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from cogframe.errors import DataError, Problem, problems_error

__all__ = ["check_official_files", "require_official_files"]

_RELEASES = {"cogvideo_9b_stage1": "cogvideo-stage1", "cogvideo_9b_stage2": "cogvideo-stage2"}


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
    from cogframe.core.weights.sat_files import is_sat_folder
    from cogframe.core.weights.sharded_safetensors import INDEX_FILE
    from cogframe.core.weights.pretrained import CONFIG_FILE, read_weights_info

    folder = Path(str(model["weights"]))
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


def check_official_files(cfg: DictConfig | dict) -> list[Problem]:
    """Every missing or wrong official file the recipe refers to (empty when all are in place).

    Args:
        cfg: A loaded recipe (interpolations such as ``${oc.env:COGVIDEO_WEIGHTS,...}`` resolved).
    """
    from cogframe.plugins.icetk import ICETK_IMAGE_FILE, ICETK_TEXT_FILE, missing_file_message

    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    problems: list[Problem] = []
    for where, node in _walk(tree):
        name = node.get("name")
        if where.split(".")[-1] == "model" and node.get("weights"):
            problem = _weights_problem(where, node)
            problems += [problem] if problem else []
        elif name == "icetk" and node.get("path") and not Path(str(node["path"])).is_file():
            problems.append(Problem(f"{where}.path", missing_file_message(node["path"], ICETK_IMAGE_FILE), ""))
        elif name == "icetk_text" and node.get("model_path") and not Path(str(node["model_path"])).is_file():
            problems.append(Problem(f"{where}.model_path",
                                    missing_file_message(node["model_path"], ICETK_TEXT_FILE), ""))
        elif name == "cluster" and node.get("clusters") and not Path(str(node["clusters"])).is_file():
            problems.append(Problem(
                f"{where}.clusters", f"{node['clusters']} does not exist",
                "copy cluster_label2.npy (20000 image ids -> 500 clusters) from the CogVideo GitHub "
                "repository (THUDM/CogVideo, branch CogVideo, top folder), or drop `clusters` to cluster "
                "the icetk codebook with k-means instead"))
    return problems


def require_official_files(cfg: DictConfig | dict, *, source: str = "recipe") -> None:
    """Raises one ConfigError listing every problem of :func:`check_official_files`.

    Raises:
        ConfigError: Some file is missing or wrong.
    """
    problems = check_official_files(cfg)
    if problems:
        raise problems_error(f"{source} needs files that are not in place", problems)
