"""Checks a loaded recipe against the registries without building anything.

The recipe's ``task`` names a task component; the task class declares ``slots``, a mapping from
recipe key paths (dotted, e.g. ``model.attention.spatial``) to component kinds. Each slot present in
the recipe holds one component node (``{name: ..., **keywords}``) or a list of them (``loggers``).
Every node is checked for a known name, accepted keywords, well-typed simple values and
availability; then the task's optional ``validate(cfg, registries)`` runs. All problems are
collected and reported together.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cogframe.errors import CogframeError, Problem, UnknownComponentError, problems_error
from cogframe.registry import KINDS, ComponentSpec, Registries
from cogframe.signatures import keyword_problems


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
    problems += [Problem(f"{where}.{key}", "is ??? (left for you to set)", f"set it, e.g. {where}.{key}=<value>")
                 for key in unset]
    recipe_kwargs = {k: v for k, v in kwargs.items() if k not in spec.runtime_kwargs and k not in unset}
    problems += keyword_problems(spec.obj, recipe_kwargs, where=where, label=spec.label,
                                 supplied_later=(*spec.runtime_kwargs, *unset))
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
        if isinstance(node, ListConfig):
            for i, item in enumerate(node):
                problems += _node_problems(f"{path}.{i}", kind, item, registries, spec.name)
        else:
            problems += _node_problems(path, kind, node, registries, spec.name)
    return problems


def recipe_problems(cfg: DictConfig, registries: Registries) -> list[Problem]:
    """Returns every problem of ``cfg`` (empty when it is valid). See :func:`validate_recipe`."""
    tasks = ", ".join(registries.names("task")) or "none registered"
    task_name = OmegaConf.select(cfg, "task", default=None)
    if task_name is None:
        return [Problem("task", "the recipe names no task", f"add 'task: <one of {tasks}>'")]
    if not isinstance(task_name, str):
        return [Problem("task", f"must be a task name, got {task_name!r}", f"use one of {tasks}")]
    try:
        spec = registries.get("task", task_name)
    except UnknownComponentError as exc:
        return [Problem("task", str(exc), "")]
    problems = _slot_problems(cfg, spec, registries)
    reason = spec.unavailable_reason()
    if reason is not None:
        problems.append(Problem("task", f"task '{task_name}' is not available here: {reason}", ""))
    if problems:
        # The task's own checks usually read the slots, so they only run once those check out.
        return problems
    task = registries.build("task", {"name": task_name})
    validate = getattr(task, "validate", None)
    if validate is not None:
        try:
            validate(cfg, registries)
        except CogframeError as exc:
            problems.append(Problem("", str(exc), ""))
    return problems


def validate_recipe(cfg: DictConfig, registries: Registries, *, source: str = "recipe") -> None:
    """Checks ``cfg`` against ``registries`` without building components; reports every problem at once.

    Args:
        cfg: A loaded recipe (see :func:`cogframe.config.recipes.load_recipe`).
        registries: The registries to resolve names against.
        source: How to name the recipe in the message (its name or path).

    Raises:
        ConfigError: Listing each problem as ``key.path: problem: fix``.
    """
    problems = recipe_problems(cfg, registries)
    if problems:
        raise problems_error(f"{source} is invalid", problems)
