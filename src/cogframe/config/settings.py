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

__all__ = ["read_section", "section_problems", "plain"]

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


def _build(cls: type[T], node: Any, where: str) -> tuple[T | None, list[Problem]]:
    values = plain(node)
    at = f"{where}." if where else ""
    if not isinstance(values, Mapping):
        return None, [Problem(where, f"'{where}' must be a mapping of settings, got {type(values).__name__} {values!r}",
                              f"write it as '{where}: {{key: value, ...}}'")]
    values = {str(k): v for k, v in values.items()}
    label = f"section '{where}'" if where else "this section"
    problems = keyword_problems(cls, values, where=where, label=label)
    if problems:
        return None, problems
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        return None, [Problem(where, str(exc), "fix the value in the recipe")]
    check = getattr(obj, "problems", None)
    if callable(check):
        problems = [dataclasses.replace(p, where=f"{at}{p.where}" if p.where else where) for p in check()]
    return (None if problems else obj), problems


def section_problems(cls: type, node: Any, *, where: str) -> list[Problem]:
    """Every problem of a recipe section against its settings dataclass (empty when valid).

    Args:
        cls: The section's dataclass.
        node: The section as found in the recipe (None when absent: all defaults).
        where: The section's key path, prefixed to each problem (``"train"``).
    """
    return _build(cls, node, where)[1]


def read_section(cls: type[T], node: Any, *, where: str) -> T:
    """Builds a section's settings object, raising one error that lists every problem.

    Args:
        cls: The section's dataclass.
        node: The section as found in the recipe (None when absent: all defaults).
        where: The section's key path, used in messages.

    Raises:
        ConfigError: Unknown keys, missing required keys, ill-typed or out-of-range values.
    """
    obj, problems = _build(cls, node, where)
    if problems:
        raise problems_error(f"the '{where}' settings are invalid", problems, ConfigError)
    return obj
