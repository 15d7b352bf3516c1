"""Checks recipe keywords against a component's call signature without calling it.

Used by :meth:`cogframe.registry.Registries.build` (just before constructing) and by
:func:`cogframe.config.recipes.validate_recipe` (without constructing), so both report the same problems.
The same checker reads the typed recipe sections (:mod:`cogframe.config.settings`): a section's
dataclass is checked like a component's signature. Only simple annotations (``int``, ``float``,
``str``, ``bool``, ``Path``, lists and tuples with their item types, dicts, ``Literal``,
``Optional``/unions of those) are checked; anything richer is left to the component itself.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import pathlib
import types
import typing
from typing import Any, Callable, Iterable, Mapping

from cogframe.errors import Problem

_UNKNOWN = None  # an annotation this module cannot judge


def accepted_keywords(obj: Callable) -> tuple[list[inspect.Parameter], bool]:
    """Returns the keyword-passable parameters of ``obj`` and whether it takes ``**kwargs``.

    Raises:
        TypeError: ``obj`` has no inspectable signature.
    """
    sig = inspect.signature(obj)
    params = [
        p for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return params, var_kw


def _type_hints(obj: Callable) -> dict[str, Any]:
    # Resolve string annotations (``from __future__ import annotations``) in the component's module;
    # a hint that cannot be resolved is simply not checked.
    # A dataclass (a typed recipe section) keeps its resolvable hints on the class itself.
    target = obj if dataclasses.is_dataclass(obj) else (obj.__init__ if inspect.isclass(obj) else obj)
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def _matches(value: Any, ann: Any) -> bool | None:
    """True/False when ``value`` fits/does not fit ``ann``; None when the annotation is not judged."""
    if ann is Any or ann is inspect.Parameter.empty:
        return _UNKNOWN
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is types.UnionType:
        results = [_matches(value, arg) for arg in typing.get_args(ann)]
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else _UNKNOWN
    if origin is typing.Literal:
        return value in typing.get_args(ann)
    if ann is type(None):
        return value is None
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if ann is pathlib.Path:
        # Recipes hold paths as strings; the component converts them.
        return isinstance(value, (str, pathlib.PurePath))
    base = origin or ann
    if base in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        # Items are judged too (``list[int]``, ``tuple[float, float]``), so the checker of component
        # keywords and of recipe sections catches ``betas: [0.9, fast]`` as well as ``betas: 3``.
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        if not args:
            return True
        if base is tuple and Ellipsis not in typing.get_args(ann):
            if len(value) != len(args):
                return False
            results = [_matches(v, a) for v, a in zip(value, args)]
        else:
            results = [_matches(v, args[0]) for v in value]
        return False if any(r is False for r in results) else True
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return _UNKNOWN


def _describe(ann: Any) -> str:
    if ann is type(None):
        return "null"
    if isinstance(ann, type):
        return ann.__name__
    origin, args = typing.get_origin(ann), [a for a in typing.get_args(ann) if a is not Ellipsis]
    # Recipes are YAML: a tuple is written as a list, so say "list" whatever the Python type.
    if origin in (list, tuple, collections.abc.Sequence) and args:
        if origin is tuple and Ellipsis not in typing.get_args(ann):
            return f"list [{', '.join(_describe(a) for a in args)}]"
        return f"list [{_describe(args[0])}, ...]"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_describe(a) for a in typing.get_args(ann))
    return str(ann).replace("typing.", "")


def keyword_problems(
    obj: Callable,
    kwargs: Mapping[str, Any],
    *,
    where: str,
    label: str,
    supplied_later: Iterable[str] = (),
) -> list[Problem]:
    """Lists what is wrong with calling ``obj(**kwargs)`` without calling it.

    Args:
        obj: The component class or factory.
        kwargs: Keywords as plain Python values (recipe keys minus ``name``).
        where: Recipe key path of the component node, used to prefix each problem.
        label: How to name the component in messages, e.g. ``"attention 'naive'"``.
        supplied_later: Keywords the caller (a task) passes at run time; they count as present.

    Returns:
        One :class:`Problem` per unknown keyword, missing required keyword or ill-typed value.
    """
    try:
        params, var_kw = accepted_keywords(obj)
    except (TypeError, ValueError):
        return []  # builtins without signatures: let construction report
    by_name = {p.name: p for p in params}
    accepted = ", ".join(sorted(by_name)) or "none"
    hints = _type_hints(obj)
    supplied_later = set(supplied_later)
    problems: list[Problem] = []
    at = f"{where}." if where else ""
    for key, value in kwargs.items():
        if key not in by_name:
            if not var_kw:
                near = difflib.get_close_matches(key, list(by_name), n=1)
                hint = f"did you mean '{near[0]}'? Otherwise remove it" if near else "remove it"
                problems.append(Problem(
                    f"{at}{key}", f"{label} takes no keyword '{key}'",
                    f"{hint} or use one of the accepted keywords ({accepted})" if by_name
                    else f"{hint} ({label} takes no keywords)"))
            continue
        ann = hints.get(key, by_name[key].annotation)
        if _matches(value, ann) is False:
            problems.append(Problem(
                f"{at}{key}", f"{label} expects {_describe(ann)} for '{key}', got {type(value).__name__} {value!r}",
                f"give '{key}' a value of type {_describe(ann)}"))
    for p in params:
        if p.default is inspect.Parameter.empty and p.name not in kwargs and p.name not in supplied_later:
            problems.append(Problem(
                f"{at}{p.name}", f"{label} needs the keyword '{p.name}'",
                f"add '{p.name}: <value>' " + (f"under {where}" if where else "at the top level of the recipe")))
    return problems
