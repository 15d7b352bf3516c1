"""Finding, loading and validating recipes (YAML files that describe one run).

A recipe is found by name (``tiny/stage1``: its path under a recipe folder, without ``.yaml``) or
by file path. Recipe folders, in order: the ``recipes/`` folder shipped with cogframe, then the
folders plugins return from their ``recipe_dirs`` hook. Loading applies ``base:`` inheritance, then
command-line overrides (:mod:`cogframe.config.overrides`), then resolves ``${...}`` interpolations.
See docs/recipes.md for the format.
"""

from __future__ import annotations

import difflib
import importlib.resources
import inspect
import os
import re
from pathlib import Path
from typing import Iterable

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cogframe.errors import ConfigError
from cogframe.config.overrides import apply_overrides
from cogframe.config.validation import recipe_problems, validate_recipe

__all__ = [
    "ASSETS_ENV",
    "RECIPE_SUFFIX",
    "asset_path",
    "assets_root",
    "recipe_roots",
    "list_recipes",
    "recipe_index",
    "recipe_task",
    "find_recipe",
    "load_recipe",
    "validate_recipe",
    "recipe_problems",
]

RECIPE_SUFFIX = ".yaml"
ASSETS_ENV = "COGFRAME_ASSETS"


def assets_root() -> Path:
    """The folder ``${asset:...}`` resolves against: ``$COGFRAME_ASSETS``, else ``cogframe/assets``.

    The shipped folder sits inside the package, so a wheel carries it; the variable points recipes
    at another copy (tests, or models trained locally) without editing them.
    """
    override = os.environ.get(ASSETS_ENV)
    if override:
        return Path(override).expanduser()
    return Path(str(importlib.resources.files("cogframe") / "assets"))


def asset_path(relative: str) -> str:
    """Resolver of ``${asset:tiny/stage1.safetensors}``: that path under :func:`assets_root`.

    The file need not exist yet: the task that reads it reports a missing asset with the recipe
    that produces it.
    """
    rel = Path(str(relative))
    if rel.is_absolute() or ".." in rel.parts:
        raise ConfigError(f"${{asset:{relative}}}: an asset is a path inside the assets folder, like "
                          "tiny/stage1.safetensors; use a plain path for files elsewhere")
    return str(assets_root() / rel)


def _register_resolvers() -> None:
    if OmegaConf.has_resolver("asset"):
        return
    # omegaconf 2.4 renamed register_new_resolver to register_resolver (2.3's register_resolver is
    # the old, string-only API); pick whichever takes keyword arguments.
    register = OmegaConf.register_resolver
    if "replace" not in inspect.signature(register).parameters:
        register = OmegaConf.register_new_resolver
    register("asset", asset_path)


_register_resolvers()


def _packaged_root() -> Path | None:
    # A wheel ships recipes/ as cogframe/recipes. An editable install runs from src/, where that
    # folder does not exist; there the repository's recipes/ (next to pyproject.toml) is used.
    packaged = Path(str(importlib.resources.files("cogframe") / "recipes"))
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "recipes").is_dir():
        return repo / "recipes"
    return None


def recipe_roots() -> list[Path]:
    """Returns the folders searched for recipe names: cogframe's own, then each plugin's."""
    from cogframe.plugins import load  # here, not at import: reading a recipe file needs no plugins

    roots = [root] if (root := _packaged_root()) is not None else []
    roots += [path for _, path in load().recipe_dirs()]
    return roots


def recipe_index() -> dict[str, Path]:
    """Every recipe name of the recipe folders -> its file.

    Raises:
        ConfigError: One name in two folders (naming both files).
    """
    index: dict[str, Path] = {}
    for root in recipe_roots():
        for path in sorted(root.rglob(f"*{RECIPE_SUFFIX}")):
            name = path.relative_to(root).with_suffix("").as_posix()
            if name in index:
                raise ConfigError(
                    f"recipe name '{name}' is defined twice: {index[name]} and {path}. Rename one of the files "
                    "(recipe folders come from cogframe and from plugins' recipe_dirs hooks)"
                )
            index[name] = path.resolve()
    return index


# libyaml's safe loader when PyYAML has it: the same documents, parsed several times faster.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def list_recipes() -> list[tuple[str, str, Path]]:
    """Returns ``(name, description, path)`` for every recipe in the recipe folders, sorted by name.

    The description is the file's own ``description:`` line (not inherited), or ``""``.
    """
    out = []
    for name, path in sorted(recipe_index().items()):
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raw = None  # listed anyway; loading it reports the problem with its line number
        description = raw.get("description", "") if isinstance(raw, dict) else ""
        out.append((name, str(description or ""), path))
    return out


def recipe_task(path: str | Path, *, index: dict[str, Path] | None = None) -> object:
    """The ``task:`` of a recipe file after its ``base:`` chain, as ``cogframe ls`` shows it (``"-"``: none).

    Equal to ``load_recipe(path).get("task", "-")``, and as fast as reading the files: the chain is
    read as plain YAML (with omegaconf's own loader, so the same files parse), without building
    omegaconf objects. A chain that only the full load can judge (a YAML or encoding error, an
    unknown base, a cycle, a list/mapping clash, a ``${...}`` interpolation, a non-string key or
    task) is loaded in full, so the answer and every error are :func:`load_recipe`'s.

    Args:
        path: The recipe file.
        index: :func:`recipe_index`, when the caller reads many recipes (``ls``): one scan of
            the recipe folders for all their ``base:`` names.

    Raises:
        ConfigError: As :func:`load_recipe`.
    """
    merged = _plain_chain(Path(path), (), index)
    task = merged.get("task", "-") if merged is not None else None
    if isinstance(task, str) and task != "???" and "${" not in task and _interpolations_resolve(merged):
        return task
    return load_recipe(path).get("task", "-")


try:  # omegaconf's YAML rules (floats, aliases, duplicate keys) without building a DictConfig
    from omegaconf._yaml import get_yaml_loader as _omegaconf_yaml_loader
except ImportError:  # another omegaconf layout: recipe_task then always loads in full
    _omegaconf_yaml_loader = None


def _plain_chain(path: Path, chain: tuple[Path, ...], index: dict[str, Path] | None) -> dict | None:
    """A recipe and its bases merged as plain data, or None when only load_recipe can tell."""
    if _omegaconf_yaml_loader is None or path in chain:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_omegaconf_yaml_loader())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    # omegaconf parses every interpolation of a file when it loads it (even one a child overrides).
    if not isinstance(raw, dict) or not _plain_keys(raw) or not all(map(_well_formed, _strings(raw))):
        return None
    if "base" not in raw:
        return raw
    try:
        base = _base_path(raw.pop("base"), path, index)
    except ConfigError:
        return None
    parent = _plain_chain(base, (*chain, path), index)
    if parent is None or _container_clash(parent, raw, "") is not None:
        return None
    return _plain_merge(parent, raw)


def _plain_keys(node: object) -> bool:
    """Whether every mapping key below ``node`` is a string without ``${`` (what omegaconf takes as is)."""
    if isinstance(node, dict):
        return all(isinstance(k, str) and "${" not in k and _plain_keys(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_plain_keys(v) for v in node)
    return True


# The interpolation forms recipe_task can prove to resolve; anything else is left to omegaconf.
_INTERPOLATION = re.compile(r"\$\{([^${}\\]*)\}")
_ASSET_ARG = re.compile(r"asset:([\w.-]+(?:/[\w.-]+)*)")
_ENV_WITH_DEFAULT = re.compile(r"oc\.env:[A-Za-z_]\w*,[\w./-]+")
_KEY_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# Forms that are valid interpolation grammar, whether or not they resolve.
_WELL_FORMED = re.compile(rf"{_ASSET_ARG.pattern}|oc\.env:[A-Za-z_]\w*(?:,[\w./-]+)?|{_KEY_PATH.pattern}")


def _well_formed(value: str) -> bool:
    """Whether each ``${...}`` in ``value`` is one of the simple forms (valid interpolation grammar)."""
    if "${" not in value:
        return True
    found = _INTERPOLATION.findall(value)
    return ("\\" not in value and len(found) == value.count("${")
            and all(_WELL_FORMED.fullmatch(expr) for expr in found))


def _interpolations_resolve(root: dict) -> bool:
    """Whether every ``${...}`` in ``root`` surely resolves (so ``OmegaConf.resolve`` cannot fail).

    Proven forms: ``${asset:rel/path}`` (a relative path without ``..``), ``${oc.env:NAME,default}``
    and ``${key.path}`` naming a set scalar (itself checked, cycles refused); an escaped, nested or
    other interpolation answers False.
    """
    return all(_string_resolves(value, root, ()) for value in _strings(root))


def _strings(node: object) -> Iterable[str]:
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            yield from _strings(child)
    elif isinstance(node, str):
        yield node


def _string_resolves(value: str, root: dict, seen: tuple[str, ...]) -> bool:
    if "${" not in value:
        return True
    found = _INTERPOLATION.findall(value)
    if "\\" in value or len(found) != value.count("${"):
        return False
    return all(_expression_resolves(expr, root, seen) for expr in found)


def _expression_resolves(expr: str, root: dict, seen: tuple[str, ...]) -> bool:
    asset = _ASSET_ARG.fullmatch(expr)
    if asset:
        return ".." not in asset.group(1).split("/")
    if _ENV_WITH_DEFAULT.fullmatch(expr):
        return True
    if not _KEY_PATH.fullmatch(expr) or expr in seen:
        return False
    node: object = root
    for part in expr.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if isinstance(node, (dict, list)) or node == "???":
        return False  # a container inside a string, or a mandatory value: omegaconf decides
    return not isinstance(node, str) or _string_resolves(node, root, (*seen, expr))


def _plain_merge(base: dict, child: dict) -> dict:
    """omegaconf's merge on plain data: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in child.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _plain_merge(out[key], value) if both else value
    return out


def _unknown_recipe(name: str, index: dict[str, Path], why: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(index), n=3, cutoff=0.5)
    did_you_mean = f"Did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return ConfigError(
        f"{why}. {did_you_mean}`cogframe ls` lists the recipe names; a file path to a .yaml recipe works too"
    )


def find_recipe(name_or_path: str | Path) -> Path:
    """Returns the recipe file for a recipe name (``tiny/stage1``, ``.yaml`` optional) or a file path.

    An existing file path wins over a name.

    Raises:
        ConfigError: Neither an existing file nor a known name; suggests close names.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise ConfigError(f"'{name_or_path}' is a folder, not a recipe: give a recipe name or a .yaml file")
    name = str(name_or_path).removesuffix(RECIPE_SUFFIX)
    index = recipe_index()
    if name in index:
        return index[name]
    raise _unknown_recipe(name, index, f"no recipe named '{name}' and no file '{name_or_path}'")


def _read_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{where}: malformed YAML ({problem}): fix the syntax{line} (indentation, a missing ':' or space "
            "after it, an unclosed bracket or quote)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc.strerror}: check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not valid "
            "UTF-8): save the recipe as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {exc}: fix that key in the file") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys (task: ..., description: ...), not a list")
    return cfg


def _base_path(base: object, child: Path, index: dict[str, Path] | None = None) -> Path:
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{child}: 'base' must be a recipe name (tiny/base) or a .yaml path, got {base!r}")
    if base.endswith(RECIPE_SUFFIX):
        path = (child.parent / Path(base).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(
                f"{child}: base '{base}' does not exist (looked for {path}): give a path relative to this "
                "file, or a recipe name without .yaml"
            )
        return path
    index = recipe_index() if index is None else index
    if base in index:
        return index[base]
    raise _unknown_recipe(base, index, f"{child}: base '{base}' is not a recipe name")


def _missing_paths(node: object, prefix: str) -> list[str]:
    """Dotted paths of the ``???`` values in a plain container (list items by index)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = []
    for key, child in items:
        if child == "???":
            found.append(f"{prefix}{key}")
        else:
            found += _missing_paths(child, f"{prefix}{key}.")
    return found


def _container_clash(base: object, child: object, prefix: str) -> tuple[str, str, str] | None:
    """The first key that is a list on one side and a mapping on the other: (path, base's, child's)."""
    kind = {dict: "mapping", list: "list"}
    if isinstance(base, dict) and isinstance(child, dict):
        for key in child:
            if key in base:
                found = _container_clash(base[key], child[key], f"{prefix}{key}.")
                if found is not None:
                    return found
        return None
    if type(base) in kind and type(child) in kind and type(base) is not type(child):
        return prefix.rstrip("."), kind[type(base)], kind[type(child)]
    return None


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> DictConfig:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(path):], path))
        raise ConfigError(f"recipe base cycle: {cycle}. Remove the 'base:' key from one of these files")
    cfg = _read_yaml(path)
    if "base" not in cfg:
        return cfg
    base = cfg.pop("base")
    parent = _load_with_bases(_base_path(base, path), (*chain, path))
    try:
        merged = OmegaConf.merge(parent, cfg)
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        clash = _container_clash(OmegaConf.to_container(parent, resolve=False),
                                 OmegaConf.to_container(cfg, resolve=False), "")
        if clash is not None:
            key, was, now = clash
            raise ConfigError(
                f"{path}: '{key}' is a {now} here but a {was} in its base {base}, so the two cannot be merged: "
                f"write it as a {was}" + (f" (e.g. '{key}: [{{name: ...}}]')" if was == "list" else "")
            ) from None
        raise ConfigError(f"{path} cannot be merged onto its base {base}: {exc}. Make the key types agree") from None
    assert isinstance(merged, DictConfig)
    # omegaconf's merge keeps the base's value where the child writes ???; a child that marks a
    # value mandatory means it, so the markers are put back.
    for key in _missing_paths(OmegaConf.to_container(cfg, resolve=False), ""):
        OmegaConf.update(merged, key, "???", merge=False, force_add=True)
    return merged


def _task_slots(cfg: DictConfig) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """The component slots of the recipe's task, so overrides can swap components (None: unknown task)."""
    task = cfg.get("task") if not OmegaConf.is_missing(cfg, "task") else None
    if not isinstance(task, str):
        return None, ()
    from cogframe.plugins import get_registries  # here, not at import: plain loading needs no plugins

    registries = get_registries()
    if task not in registries.names("task"):
        return None, ()  # validation names the unknown task; overrides fall back to `name:` mappings
    obj = registries.get("task", task).obj
    return dict(getattr(obj, "slots", None) or {}), tuple(getattr(obj, "list_slots", ()))


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> DictConfig:
    """Loads a recipe with its ``base:`` chain, applies overrides and resolves interpolations.

    Args:
        name_or_path: A recipe name (``tiny/stage1``) or a path to a YAML file.
        overrides: ``key.sub=value`` tokens; ``+key=value`` adds a key the recipe lacks, ``~key``
            deletes one, ``slot=NAME`` swaps a component (:mod:`cogframe.config.overrides`).

    Returns:
        The resolved recipe, without the ``base`` key.

    Raises:
        ConfigError: Unknown recipe, malformed YAML (with file and line), a base cycle, a bad
            override, or an interpolation that cannot be resolved.
    """
    cfg = _load_with_bases(find_recipe(name_or_path), ())
    overrides = list(overrides)
    if overrides:
        slots, list_slots = _task_slots(cfg)
        apply_overrides(cfg, overrides, slots=slots, list_slots=list_slots)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"recipe {name_or_path}: an interpolation cannot be resolved: {exc}. Fix the ${{...}} reference"
        ) from None
    return cfg
