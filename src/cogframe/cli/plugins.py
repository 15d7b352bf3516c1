"""``cogframe plugins``: list loaded plugins and every registered component per kind.

Imports no torch for the built-in components: they are registered lazily (their declarations are
read from source) and their availability checks answer from package metadata where they can.
Only the xformers check imports torch, and only when xformers is installed (it asks
``torch.cuda.is_available()``).
"""

from __future__ import annotations

import argparse
import json

from cogframe.cli.table import format_table
from cogframe.plugins import get_registries, load
from cogframe.registry import KINDS

NAME = "plugins"
HELP = "List loaded plugins and their components (name, origin, availability, description)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--json`` and ``--kind``."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("--kind", choices=KINDS, action="append",
                        help="only this component kind (repeatable)")


def _collect(kinds: tuple[str, ...]) -> dict:
    registries = get_registries()
    components = {}
    for kind in kinds:
        components[kind] = [
            {
                "name": spec.name,
                "origin": spec.origin,
                "module": spec.module,
                "available": (reason := spec.unavailable_reason()) is None,
                "reason": reason,
                "description": spec.description,
                "capabilities": spec.capabilities.to_dict(),
                "constraints": spec.capabilities.describe(),
                "runtime_kwargs": list(spec.runtime_kwargs),
                "lazy": spec.lazy,
            }
            for spec in registries.specs(kind)
        ]
    plugins = [{"name": p.name, "origin": p.origin, "module": p.module, "builtin": p.builtin} for p in load().plugins]
    return {"plugins": plugins, "components": components}


def run(args: argparse.Namespace) -> int:
    """Prints the plugin table, then one component table per kind (or all of it as JSON)."""
    data = _collect(tuple(args.kind or KINDS))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("plugins")
    print(format_table(("origin", "module"), [(p["origin"], p["module"]) for p in data["plugins"]],
                       indent="  "))
    for kind, rows in data["components"].items():
        print(f"\n{kind}")
        if not rows:
            print("  (none registered)")
            continue
        table = [(c["name"], c["origin"], "yes" if c["available"] else f"no: {c['reason']}", c["description"])
                 for c in rows]
        headers = ("name", "origin", "available", "description")
        if any(c["constraints"] != "-" for c in rows):
            # Devices / dtypes / backward / masks: what building a model from a recipe checks.
            table = [(*row[:3], c["constraints"], row[3]) for row, c in zip(table, rows)]
            headers = ("name", "origin", "available", "constraints", "description")
        print(format_table(headers, table, indent="  "))
    return 0
