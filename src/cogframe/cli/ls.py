"""``cogframe ls``: list the recipes with their task and description."""

from __future__ import annotations

import argparse
import sys

from cogframe.cli.table import format_table
from cogframe.errors import CogframeError
from cogframe.config.recipes import list_recipes, recipe_index, recipe_roots, recipe_task

NAME = "ls"
HELP = "List the available recipes (name, task, description)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: every recipe folder is listed."""


def run(args: argparse.Namespace) -> int:
    """Prints one row per recipe; a recipe that fails to load is shown with its error, not skipped."""
    rows = []
    recipes = list_recipes()
    index = recipe_index() if recipes else {}  # one scan of the folders for every base: name
    for name, description, path in recipes:
        try:
            task = recipe_task(path, index=index)
        except CogframeError as exc:
            task, description = "?", f"cannot load: {str(exc).splitlines()[0]}"
        rows.append((name, task, description))
    if not rows:
        roots = ", ".join(str(r) for r in recipe_roots()) or "none found"
        print(f"no recipes found (recipe folders: {roots})", file=sys.stderr)
        return 0
    print(format_table(("name", "task", "description"), rows))
    return 0
