"""The pluggy hooks a cogframe plugin may implement (built-in and third-party alike).

A plugin is a module (or any object) with functions decorated by :data:`hookimpl` whose names are
hooks below. A decorated function whose name is NOT a hook here is an error at load time, so a
misspelling fails loudly instead of being ignored. docs/plugins.md documents each hook.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT_NAME = "cogframe"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_components() -> list[Any]:
    """Returns the components this plugin provides.

    Each item is a class or factory decorated with ``@cogframe.registry.component(kind, name)``,
    or a lazy :class:`~cogframe.registry.ComponentSpec` from ``lazy_component(...)`` /
    ``lazy_components(module)`` whose implementation is imported only when it is built.
    cogframe registers them with the plugin's origin; a (kind, name) registered by two plugins is an
    error naming both.

    Returns:
        A list of decorated objects (may be empty).
    """


@hookspec
def register_commands() -> list[Any]:
    """Returns extra ``cogframe`` subcommands this plugin provides.

    Each item is a module or object with the same four members as the built-in commands in
    ``cogframe/cli/``: ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)``
    (adds argparse arguments) and ``run(args) -> int`` (the exit status).

    Returns:
        A list of command modules/objects (may be empty).
    """


@hookspec
def recipe_dirs() -> list[Any]:
    """Returns folders of recipe YAML files this plugin ships.

    Recipes found there are listed by ``cogframe ls`` and usable by name, exactly like the built-in
    ``recipes/`` folder; a recipe name defined twice is an error naming both files.

    Returns:
        A list of absolute directory paths (``str`` or ``pathlib.Path``), e.g.
        ``[Path(__file__).parent / "recipes"]``.
    """
