"""Command-line overrides of a recipe: ``key.sub=value`` (existing keys) and ``+key.sub=value`` (new keys).

Values are parsed as YAML, like the recipe itself: ``lr=3e-4`` is a float, ``steps=10`` an int,
``dims=[1,2]`` a list, ``name='10'`` a string. Requiring ``+`` for new keys (as Hydra does) turns a
misspelled key into an error with a suggestion instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cogframe.errors import ConfigError
from cogframe.registry import closest

_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)*")
_FORM = "write it as key.sub=value, e.g. train.lr=3e-4, or +key.sub=value to add a key the recipe does not have"


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


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> None:
    """Applies ``overrides`` to ``cfg`` in place, in order.

    Args:
        cfg: The merged recipe.
        overrides: Tokens ``key.sub=value`` or ``+key.sub=value``.

    Raises:
        ConfigError: A token is not ``key=value``, its value is not valid YAML, or it sets a key the
            recipe does not have without the ``+`` prefix (the message suggests the closest key).
    """
    for token in overrides:
        adding = token.startswith("+")
        key, sep, raw = (token[1:] if adding else token).partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f"override {token!r} is not of the form key.sub=value: {_FORM}")
        value = _parse_value(raw, token)
        if not adding:
            known = list(key_paths(cfg))
            if key not in known:
                hint = closest(key, known)
                did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
                raise ConfigError(
                    f"override {token!r}: the recipe has no key '{key}'{did_you_mean}. Fix the key, or write "
                    f"'+{token}' to add it as a new key"
                )
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {token!r} cannot be applied: {exc}. {_FORM}") from None
