"""``cogframe ls``: list the recipes with their task and description."""

from __future__ import annotations

import argparse
import sys

from cogframe.cli.table import format_table
from cogframe.errors import CogframeError
from cogframe.config.recipes import list_recipes, load_recipe, recipe_roots

NAME = "ls"
HELP = "List the available recipes (name, task, description)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: every recipe folder is listed."""


def run(args: argparse.Namespace) -> int:
    """Prints one row per recipe; a recipe that fails to load is shown with its error, not skipped."""
    rows = []
    for name, description, path in list_recipes():
        try:
            task = load_recipe(path).get("task", "-")
        except CogframeError as exc:
            task, description = "?", f"cannot load: {str(exc).splitlines()[0]}"
        rows.append((name, task, description))
    if not rows:
        roots = ", ".join(str(r) for r in recipe_roots()) or "none found"
        print(f"no recipes found (recipe folders: {roots})", file=sys.stderr)
        return 0
    print(format_table(("name", "task", "description"), rows))
    return 0
