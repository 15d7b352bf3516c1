"""Typed recipe sections: one dataclass per section, checked like a component's keywords.

A recipe section (``train``, ``sample``, ``distributed``, ...) is a dataclass whose fields are the
keys the section accepts, with their defaults. :func:`section_problems` checks a section node with
the same :func:`cogframe.signatures.keyword_problems` that checks component keywords (unknown keys
with a suggestion, missing required keys, ill-typed values), then asks the built object for its
value checks. So every recipe key, whether a component keyword or a section setting, is checked by
one mechanism with one error style.

A settings dataclass may define ``problems(self) -> list[Problem]`` (relative ``where`` paths, e.g.
``"lr"``) for checks of values rather than types, such as "the learning rate must be positive".

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Demo:
    ...     steps: int = 10
    >>> read_section(Demo, {"steps": 3}, where="demo")
    Demo(steps=3)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from cogframe.errors import ConfigError, Problem, problems_error
from cogframe.signatures import keyword_problems

__all__ = ["read_section", "section_problems", "parse_section", "recipe_sections", "plain", "missing_problem"]

T = TypeVar("T")


def plain(node: Any) -> Any:
    """A section node (OmegaConf node, mapping or None) as plain Python values."""
    if node is None:
        return {}
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return dict(node)
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def missing_problem(where: str) -> Problem:
    """The problem of a value left ``???`` (mandatory, to be set by the user) at key path ``where``."""
    return Problem(where, "is ??? (left for you to set)", f"set it, e.g. {where}=<value>")


def _missing_keys(node: Any) -> list[str]:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return []
    if not isinstance(node, DictConfig):
        return []
    return [str(k) for k in node if OmegaConf.is_missing(node, k)]


def parse_section(cls: type[T], node: Any, *, where: str) -> tuple[T | None, list[Problem]]:
    """Builds a section's settings object and lists its problems, without raising.

    Args:
        cls: The section's dataclass.
        node: The section as found in the recipe (None when absent: all defaults).
        where: The section's key path (``"train"``), prefixed to each problem; ``""`` for keys at
            the top level of the recipe.

    Returns:
        ``(settings, [])`` when valid, else ``(None, problems)``: unknown keys (with a did-you-mean
        and the accepted keys), missing required keys, values left ``???``, ill-typed values, then
        (only once the types are right) the dataclass's own ``problems()``.
    """
    at = f"{where}." if where else ""
    missing = _missing_keys(node)
    values = plain(node)
    if not isinstance(values, Mapping):
        return None, [Problem(where, f"'{where}' must be a mapping of settings, got {type(values).__name__} {values!r}",
                              f"write it as '{where}: {{key: value, ...}}'")]
    values = {str(k): v for k, v in values.items() if str(k) not in missing}
    label = f"section '{where}'" if where else "the recipe's top level"
    problems = [missing_problem(f"{at}{key}") for key in missing]
    problems += keyword_problems(cls, values, where=where, label=label, supplied_later=missing)
    # The value checks run even when some keys are wrong: on the other keys, with the defaults in
    # place of the wrong ones, so one pass reports every problem (a key is reported once).
    wrong = {p.where[len(at):] for p in problems} | set(missing)
    try:
        obj = cls(**{k: v for k, v in values.items() if k not in wrong})
    except (TypeError, ValueError) as exc:
        if problems:
            return None, problems  # a wrong required key: nothing to check the values on
        return None, [Problem(where, str(exc), "fix the value in the recipe")]
    check = getattr(obj, "problems", None)
    if callable(check):
        problems += [dataclasses.replace(p, where=f"{at}{p.where}" if p.where else where)
                     for p in check() if p.where not in wrong]
    return (None if problems else obj), problems


def section_problems(cls: type, node: Any, *, where: str) -> list[Problem]:
    """Every problem of a recipe section against its settings dataclass (empty when valid).

    Args:
        cls: The section's dataclass.
        node: The section as found in the recipe (None when absent: all defaults).
        where: The section's key path, prefixed to each problem (``"train"``).
    """
    return parse_section(cls, node, where=where)[1]


def read_section(cls: type[T], node: Any, *, where: str) -> T:
    """Builds a section's settings object, raising one error that lists every problem.

    Args:
        cls: The section's dataclass.
        node: The section as found in the recipe (None when absent: all defaults).
        where: The section's key path, used in messages.

    Raises:
        ConfigError: Unknown keys, missing required keys, ill-typed or out-of-range values.
    """
    obj, problems = parse_section(cls, node, where=where)
    if problems:
        raise problems_error(f"the '{where}' settings are invalid" if where else "the recipe's settings are invalid",
                             problems, ConfigError)
    return obj


def recipe_sections(sections: Mapping[str, type], cfg: Any) -> tuple[dict[str, Any], list[Problem]]:
    """Builds every section a task declares (``{"train": TrainSettings, "": RunSettings}``).

    The key ``""`` names the dataclass of scalar keys at the top level of the recipe; only the
    recipe keys that are its fields are passed to it (the others are slots and sections).

    Args:
        sections: Recipe key -> settings dataclass.
        cfg: The loaded recipe (a DictConfig).

    Returns:
        ``(built, problems)``: the settings objects of the valid sections by key, and every
        problem of the invalid ones.
    """
    from omegaconf import OmegaConf

    built: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, cls in sections.items():
        if key == "":
            fields = {f.name for f in dataclasses.fields(cls)}
            # masked_copy keeps ??? markers, so a missing value is reported as such, not as a type.
            node = OmegaConf.masked_copy(cfg, [k for k in cfg if k in fields])
        else:
            node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        obj, found = parse_section(cls, node, where=key)
        if found:
            problems += found
        else:
            built[key] = obj
    return built, problems
