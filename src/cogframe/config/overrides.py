"""Command-line overrides of a recipe: set, add, delete keys and swap components.

=========================================  ==================================================
``key.sub=value``                          set a key the recipe has (did-you-mean otherwise)
``+key.sub=value``                         add a key the recipe does not have (or set it)
``~key.sub``                               delete a key, or a list item (``~loggers.1``)
``slot=NAME``                              replace a component node by component ``NAME``
``slot={name: NAME, kw: v}``               replace it by that node
``slot.name=NAME``                         the same as ``slot=NAME`` (the old keywords go)
=========================================  ==================================================

Values are parsed as YAML, like the recipe itself: ``lr=3e-4`` is a float, ``steps=10`` an int,
``dims=[1,2]`` a list, ``name='10'`` a string. Requiring ``+`` for new keys (as Hydra does) turns a
misspelled key into an error with a suggestion instead of a silently ignored setting.

A component node is replaced, never merged: the new component starts from its own defaults, so a
keyword of the old one (``k`` of ``top_k``) does not leak into the new one (``greedy`` takes none).
Keywords the user writes are checked against the new component at validation, and keys under a
node swapped on the same command line may be set without ``+`` (``token_sampler=top_p
token_sampler.p=0.8``). Component nodes are the task's slots (``slots``/``list_slots``, see
:mod:`cogframe.config.validation`) and any mapping with a ``name`` key under a slot; without the
task's slots (an unknown task), any mapping with a ``name`` key.
"""

from __future__ import annotations

import re
from typing import Any, Collection, Iterable, Iterator, Mapping

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cogframe.errors import ConfigError
from cogframe.registry import closest

__all__ = ["apply_overrides", "key_paths"]

_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")
_FORM = ("write it as key.sub=value, e.g. train.lr=3e-4, +key.sub=value to add a key the recipe does not "
         "have, or ~key.sub to delete one")


def key_paths(cfg: DictConfig) -> Iterator[str]:
    """Yields every dotted key path of ``cfg``, inner nodes included (list items as ``loggers.0``)."""

    def walk(node: Any, prefix: str) -> Iterator[str]:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            path = f"{prefix}{key}"
            yield path
            yield from walk(child, f"{path}.")

    # resolve=False: a key exists even when its value is ??? or an unresolvable interpolation.
    yield from walk(OmegaConf.to_container(cfg, resolve=False), "")


def _parse_value(raw: str, token: str) -> Any:
    try:
        # omegaconf's own YAML loader (via from_dotlist) so "3e-4" is a float, as in recipe files.
        parsed = OmegaConf.from_dotlist([f"value={raw}"])
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"override {token!r}: the value {raw!r} is not valid YAML ({problem}): quote it, "
            f"e.g. key='{raw}', or fix the brackets"
        ) from None
    return OmegaConf.to_container(parsed, resolve=False)["value"]


def _unknown_key(token: str, key: str, cfg: DictConfig, fix: str) -> ConfigError:
    hint = closest(key, list(key_paths(cfg)))
    did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
    return ConfigError(f"override {token!r}: the recipe has no key '{key}'{did_you_mean}. {fix}")


class _Components:
    """Which key paths of the recipe are component nodes (see the module docstring)."""

    def __init__(self, slots: Mapping[str, str] | None, list_slots: Collection[str]) -> None:
        self.slots = None if slots is None else set(slots)
        self.list_slots = set(list_slots)

    def is_slot(self, key: str) -> bool:
        """``key`` is a slot, or an item of a slot that holds a list."""
        if self.slots is None:
            return False
        parent, _, last = key.rpartition(".")
        return key in self.slots or (last.isdigit() and parent in self.slots)

    def is_list_slot(self, key: str) -> bool:
        """``key`` is a slot that holds a list of nodes."""
        return key in self.list_slots

    def is_node(self, cfg: DictConfig, key: str) -> bool:
        """``key`` holds (or, for a slot, may hold) a component node."""
        if self.is_slot(key) and not self.is_list_slot(key):
            return True
        node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not isinstance(node, DictConfig) or "name" not in node:
            return False
        if self.slots is None:
            return True
        return any(key == s or key.startswith(f"{s}.") for s in self.slots)


def _as_node(value: Any) -> Any:
    """``NAME`` -> ``{name: NAME}``; a mapping or null stays as written."""
    return {"name": value} if isinstance(value, str) else value


def _delete(cfg: DictConfig, token: str) -> None:
    key = token[1:].strip()
    if "=" in key:
        raise ConfigError(f"override {token!r}: ~key deletes a key and takes no value; write "
                          f"'~{key.partition('=')[0]}'")
    if not _KEY.fullmatch(key):
        raise ConfigError(f"override {token!r} is not of the form ~key.sub: {_FORM}")
    if key not in set(key_paths(cfg)):
        raise _unknown_key(token, key, cfg, "Fix the key (`cogframe validate RECIPE` prints the recipe's keys)")
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, throw_on_missing=False) if parent_key else cfg
    if isinstance(parent, ListConfig):
        del parent[int(last)]
    else:
        del parent[last]


def apply_overrides(cfg: DictConfig, overrides: Iterable[str], *, slots: Mapping[str, str] | None = None,
                    list_slots: Collection[str] = ()) -> None:
    """Applies ``overrides`` to ``cfg`` in place, in order.

    Args:
        cfg: The merged recipe.
        overrides: Tokens ``key.sub=value``, ``+key.sub=value`` or ``~key.sub``.
        slots: The task's component slots (key path -> kind); None when the task is unknown, in
            which case any mapping with a ``name`` key is taken as a component node.
        list_slots: The slots that hold a list of component nodes (``loggers``).

    Raises:
        ConfigError: A token is not of one of those forms, its value is not valid YAML, it sets a
            key the recipe does not have without the ``+`` prefix, or deletes one it does not have
            (the message suggests the closest key).
    """
    components = _Components(slots, list_slots)
    swapped: list[str] = []  # nodes replaced on this command line: their new keywords need no +
    for token in overrides:
        if token.startswith("~"):
            _delete(cfg, token)
            continue
        adding = token.startswith("+")
        key, sep, raw = (token[1:] if adding else token).partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f"override {token!r} is not of the form key.sub=value: {_FORM}")
        value = _parse_value(raw, token)
        parent, _, last = key.rpartition(".")
        replace = False
        if last == "name" and parent and isinstance(value, str) and components.is_node(cfg, parent):
            # slot.name=NEW swaps the component; the old one's keywords would not fit the new one.
            if OmegaConf.select(cfg, key, default=None, throw_on_missing=False) != value:
                key, value, replace = parent, {"name": value}, True
        elif components.is_list_slot(key):
            # Set whole; a value that is not a list is then reported by validation with the fix.
            value = [_as_node(v) for v in value] if isinstance(value, list) else value
            replace = True
        elif components.is_node(cfg, key) and not (isinstance(value, dict) and "name" not in value):
            # Anything but a mapping of keywords replaces the node (a list, say, is then reported
            # by validation with the fix); a mapping without `name` sets keywords of the node.
            value, replace = _as_node(value), True
        known = (components.is_slot(key) or components.is_list_slot(key)
                 or any(key.startswith(f"{s}.") for s in swapped))
        if not adding and not known and key not in set(key_paths(cfg)):
            raise _unknown_key(token, key, cfg, f"Fix the key, or write '+{token}' to add it as a new key")
        try:
            # A replaced node is set whole (merge=False): nothing of the old component survives.
            OmegaConf.update(cfg, key, value, merge=not replace, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {token!r} cannot be applied: {exc}. {_FORM}") from None
        if replace:
            swapped.append(key)
