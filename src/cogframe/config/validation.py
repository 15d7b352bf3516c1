"""Checks a loaded recipe against the registries without building anything.

The recipe's ``task`` names a task component. The task class declares what its recipe holds:

* ``slots`` — recipe key paths (dotted, e.g. ``model.attention.spatial``) mapped to component
  kinds; each slot holds one component node (``{name: ..., **keywords}``);
* ``list_slots`` — the slots that hold a list of nodes instead (``loggers``);
* ``sections`` — recipe keys mapped to settings dataclasses (``{"train": TrainSettings}``; the key
  ``""`` names the dataclass of the scalar keys at the top level, ``output_dir``, ``seed``...),
  checked by :func:`cogframe.config.settings.section_problems`;
* ``recipe_keys`` — further top-level keys it reads itself (``model``).

A task that declares ``sections`` or ``recipe_keys`` accepts no other top-level key: a typo such as
``trian:`` is an error with a did-you-mean instead of a silently ignored section.

:func:`recipe_problems` collects every problem of every stage at once: values left ``???``
anywhere, unknown top-level keys, each component node (known name, accepted and well-typed
keywords, availability), each section, then the task's own checks (``problems(cfg, registries)``
returning a list, or ``validate(cfg, registries)`` raising), which run even when earlier stages
found problems.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cogframe.config.settings import missing_problem, recipe_sections
from cogframe.errors import CogframeError, Problem, UnknownComponentError, problems_error
from cogframe.registry import KINDS, ComponentSpec, Registries
from cogframe.signatures import keyword_problems

__all__ = ["COMMON_KEYS", "accepted_top_level_keys", "recipe_problems", "validate_recipe"]

# Keys every recipe may hold whatever its task (``base`` is gone once the recipe is loaded).
COMMON_KEYS = ("description", "task")


def _missing_paths(cfg: DictConfig) -> Iterator[str]:
    """Key paths of every value left ``???``, inner nodes included (list items as ``loggers.0``)."""

    def walk(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for key, child in items:
            path = f"{prefix}{key}"
            if child == "???":
                yield path
            else:
                yield from walk(child, f"{path}.")

    # resolve=False keeps ??? as the literal marker (and leaves interpolations alone).
    yield from walk(OmegaConf.to_container(cfg, resolve=False), "")


def accepted_top_level_keys(task_cls: Any) -> set[str] | None:
    """The top-level keys a task's recipe may hold, or None when the task declares none (unchecked).

    Args:
        task_cls: The task class (``ComponentSpec.obj``).
    """
    sections = getattr(task_cls, "sections", None) or {}
    keys = getattr(task_cls, "recipe_keys", None)
    if keys is None and not sections:
        return None  # a task written before keys were declared: its top level is its own business
    slots = getattr(task_cls, "slots", None) or {}
    accepted = {*COMMON_KEYS, *(keys or ()), *(path.split(".")[0] for path in slots),
                *(key.split(".")[0] for key in sections if key)}
    root = sections.get("")
    if root is not None:
        accepted |= {f.name for f in dataclasses.fields(root)}
    return accepted


def _top_level_problems(cfg: DictConfig, spec: ComponentSpec) -> list[Problem]:
    accepted = accepted_top_level_keys(spec.obj)
    if accepted is None:
        return []
    problems = []
    listed = ", ".join(sorted(accepted))
    for key in cfg:
        key = str(key)
        if key in accepted:
            continue
        near = difflib.get_close_matches(key, sorted(accepted), n=1)
        hint = f"did you mean '{near[0]}'? Otherwise remove it" if near else "remove it"
        problems.append(Problem(key, f"task '{spec.name}' takes no top-level key '{key}'",
                                f"{hint} (the keys it takes: {listed})"))
    return problems


def _section_problems(cfg: DictConfig, spec: ComponentSpec) -> list[Problem]:
    return recipe_sections(getattr(spec.obj, "sections", None) or {}, cfg)[1]


def _node_problems(where: str, kind: str, node: Any, registries: Registries, task: str) -> list[Problem]:
    if not isinstance(node, DictConfig):
        return [Problem(where, f"must be a {kind} node (a mapping with a 'name:' key), got {node!r}",
                        f"write `name: <{kind}>` plus its keywords under {where}")]
    if "name" not in node:
        known = ", ".join(registries.names(kind)) or "none registered"
        return [Problem(f"{where}.name", f"no {kind} is named", f"add 'name: <one of {known}>'")]
    try:
        spec = registries.get(kind, node.name)
    except UnknownComponentError as exc:
        return [Problem(f"{where}.name", str(exc), "")]
    kwargs = OmegaConf.to_container(node, resolve=True)
    kwargs.pop("name")
    problems = [
        Problem(f"{where}.{key}", f"'{key}' is supplied by task '{task}' at run time", "remove it from the recipe")
        for key in spec.runtime_kwargs if key in kwargs
    ]
    unset = [key for key in kwargs if OmegaConf.is_missing(node, key)]
    problems += [missing_problem(f"{where}.{key}") for key in unset]
    recipe_kwargs = {k: v for k, v in kwargs.items() if k not in spec.runtime_kwargs and k not in unset}
    # Through the spec: a lazily registered component is checked without importing it (or torch).
    problems += spec.keyword_problems(recipe_kwargs, where=where, supplied_later=(*spec.runtime_kwargs, *unset))
    reason = spec.unavailable_reason()
    if reason is not None:
        problems.append(Problem(where, f"{spec.label} is not available here ({reason})",
                                f"pick another {kind}; `cogframe plugins` shows what is available"))
    return problems


def _slot_problems(cfg: DictConfig, spec: ComponentSpec, registries: Registries) -> list[Problem]:
    slots = getattr(spec.obj, "slots", None) or {}
    problems: list[Problem] = []
    for path, kind in slots.items():
        if kind not in KINDS:
            problems.append(Problem(path, f"task '{spec.name}' declares slot kind '{kind}', which does not exist",
                                    f"fix {spec.obj.__qualname__}.slots in {spec.module} (kinds: {', '.join(KINDS)})"))
            continue
        node = OmegaConf.select(cfg, path, default=None)
        if node is None:
            continue  # an absent slot is the task's business (its validate() may require it)
        declares_lists = hasattr(spec.obj, "list_slots")
        if declares_lists and path in spec.obj.list_slots and not isinstance(node, ListConfig):
            shown = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
            problems.append(Problem(path, f"must be a list of {kind} nodes, got "
                                    f"{'a mapping' if isinstance(node, DictConfig) else 'the value'} {shown!r}",
                                    f"write it as '{path}: [{{name: <{kind}>, ...}}, ...]' (one item per "
                                    f"{kind}; [] for none)"))
            continue
        if declares_lists and path not in spec.obj.list_slots and isinstance(node, ListConfig):
            problems.append(Problem(path, f"holds one {kind} node, not a list",
                                    f"write it as '{path}: {{name: <{kind}>, ...}}'"))
            continue
        if isinstance(node, ListConfig):
            for i, item in enumerate(node):
                problems += _node_problems(f"{path}.{i}", kind, item, registries, spec.name)
        else:
            problems += _node_problems(path, kind, node, registries, spec.name)
    return problems


def _capability_problems(cfg: DictConfig, spec: ComponentSpec, registries: Registries) -> list[Problem]:
    """Slot components that do not declare what the task will ask of them (``capability_needs``).

    A task may define ``capability_needs(cfg) -> {slot path: Needs}`` (a static method: it runs
    before the task is built); see :class:`cogframe.registry.Needs`.
    """
    needs_of = getattr(spec.obj, "capability_needs", None)
    if not callable(needs_of):
        return []
    try:
        needs = dict(needs_of(cfg))
    except (CogframeError, OmegaConfBaseException, TypeError, ValueError):
        return []  # a malformed setting behind the needs is reported by the section checks
    problems: list[Problem] = []
    slots = getattr(spec.obj, "slots", None) or {}
    for path, need in needs.items():
        node = OmegaConf.select(cfg, path, default=None)
        name = node.get("name") if isinstance(node, DictConfig) else None
        if isinstance(name, str) and path in slots:
            problems += registries.capability_problems(slots[path], name, need, where=path)
    return problems


def _task_check_problems(task: Any, cfg: DictConfig, registries: Registries, earlier: bool) -> list[Problem]:
    check = getattr(task, "problems", None)
    validate = getattr(task, "validate", None)
    try:
        if callable(check):
            return list(check(cfg, registries))
        if callable(validate):
            validate(cfg, registries)
        return []
    except (CogframeError, OmegaConfBaseException) as exc:
        return [Problem("", str(exc), "")]
    except Exception:
        if earlier:
            # The task's checks tripped over a recipe that is already known to be wrong (a
            # malformed node, say): the problems found so far say what to fix.
            return []
        raise


def _unique(problems: list[Problem]) -> list[Problem]:
    # Several stages may see the same thing (a ??? inside a component node); say it once.
    seen: set[str] = set()
    out = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            out.append(problem)
    return out


def recipe_problems(cfg: DictConfig, registries: Registries, *, task: Any = None) -> list[Problem]:
    """Returns every problem of ``cfg`` (empty when it is valid). See :func:`validate_recipe`.

    Args:
        cfg: A loaded recipe.
        registries: The registries to resolve names against.
        task: The task instance to run the task's checks on (built from ``cfg.task`` when None).
    """
    problems = [missing_problem(path) for path in _missing_paths(cfg)]
    tasks = ", ".join(registries.names("task")) or "none registered"
    task_name = OmegaConf.select(cfg, "task", default=None)
    if task_name is None:
        if not any(p.where == "task" for p in problems):  # not when it is ??? (reported above)
            problems.append(Problem("task", "the recipe names no task", f"add 'task: <one of {tasks}>'"))
        return _unique(problems)
    if not isinstance(task_name, str):
        return _unique(problems + [Problem("task", f"must be a task name, got {task_name!r}", f"use one of {tasks}")])
    try:
        spec = registries.get("task", task_name)
    except UnknownComponentError as exc:
        return _unique(problems + [Problem("task", str(exc), "")])
    problems += _top_level_problems(cfg, spec)
    problems += _slot_problems(cfg, spec, registries)
    problems += _capability_problems(cfg, spec, registries)
    problems += _section_problems(cfg, spec)
    reason = spec.unavailable_reason()
    if reason is not None:
        problems.append(Problem("task", f"task '{task_name}' is not available here: {reason}", ""))
        return _unique(problems)
    if task is None:
        task = registries.build("task", {"name": task_name})
    problems += _task_check_problems(task, cfg, registries, earlier=bool(problems))
    return _unique(problems)


def validate_recipe(cfg: DictConfig, registries: Registries, *, source: str = "recipe", task: Any = None) -> Any:
    """Checks ``cfg`` against ``registries`` without building components; reports every problem at once.

    Args:
        cfg: A loaded recipe (see :func:`cogframe.config.recipes.load_recipe`).
        registries: The registries to resolve names against.
        source: How to name the recipe in the message (its name or path).
        task: The task instance to check with (built from ``cfg.task`` when None).

    Returns:
        The task instance that checked the recipe. Hand it to ``cli.run.run_task(cfg, registries,
        task=...)`` so the run reuses what the checks read (settings, plans) instead of reading
        the recipe twice.

    Raises:
        ConfigError: Listing each problem as ``key.path: problem: fix``.
    """
    task_name = OmegaConf.select(cfg, "task", default=None)
    if task is None and isinstance(task_name, str) and task_name in registries.names("task") \
            and registries.available("task", task_name) is None:
        task = registries.build("task", {"name": task_name})
    problems = recipe_problems(cfg, registries, task=task)
    if problems:
        raise problems_error(f"{source} is invalid", problems)
    return task
