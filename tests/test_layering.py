"""The layer rules of docs/architecture.md, checked on the source text of every module.

Every module under ``src/cogframe`` is parsed with :mod:`ast`; each import it makes (module
level, inside functions and classes, under ``TYPE_CHECKING``, relative, and every
``importlib.import_module("...")`` / ``__import__("...")`` with a string literal) is mapped to
the layer it lands in, and an import across a forbidden edge fails with the module, line and
edge. The checker lives here, not in the package: it is a rule of the source tree, not a
feature. ``test_checker_*`` plant forbidden imports in a fake package tree and expect the
failure, so a checker that silently passes everything cannot go unnoticed.

The subpackage tests keep ``__init__.py`` files import-free (the CLI lists and validates recipes
without torch) and their docstrings naming every module, and docs/architecture.md naming every
module of the package.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cogframe"

# Root modules and the layer each belongs to. A new root module must be placed here on purpose.
ROOT_LAYERS = {
    "cogframe": "base",  # the package __init__: imports nothing, so `import cogframe` stays cheap
    "cogframe.errors": "base",
    "cogframe.registry": "registry",
    "cogframe.signatures": "registry",
    "cogframe.hookspecs": "registry",
    "cogframe.plugin_loader": "registry",
    "cogframe.component_source": "registry",  # reads @component declarations without importing
    "cogframe.__main__": "cli",
    "cogframe.api": "api",  # the Python API: a peer of the CLI on top of config/plugins/core
}
SUBPACKAGE_LAYERS = {"core": "core", "config": "config", "plugins": "plugins", "cli": "cli", "testing": "testing"}

# (importing layer, imported layer) -> why it is forbidden. "plugin module" is a concrete
# ``cogframe.plugins.<name>``: config may reach the plugin set through ``cogframe.plugins``
# (get_registries, recipe_dirs) but must not name a plugin.
FORBIDDEN = {
    ("core", "plugins"): "core receives built components as arguments; it never imports plugins",
    ("core", "plugin module"): "core receives built components as arguments; it never imports plugins",
    ("core", "cli"): "core never imports the command line",
    ("core", "config"): "core never imports config: config builds from core, not the reverse",
    ("core", "registry"): "core never looks components up by name: only the registry knows names",
    ("registry", "core"): "the registry knows names and signatures, nothing of the model code",
    ("registry", "torch"): "the registry imports no torch (listing and validating recipes stay light)",
    ("registry", "plugins"): "the registry is below the plugins: plugins register into it",
    ("registry", "plugin module"): "the registry is below the plugins: plugins register into it",
    ("registry", "config"): "the registry is below config",
    ("registry", "cli"): "the registry never imports the command line",
    ("plugins", "cli"): "plugins never import the command line (a plugin adds commands by a hook)",
    ("plugin module", "cli"): "plugins never import the command line (a plugin adds commands by a hook)",
    ("config", "plugin module"): "config names no concrete plugin: it reaches components through the registry",
    ("config", "cli"): "config never imports the command line",
    ("base", "torch"): "errors and the package root import no torch",
    **{(layer, "api"): "the Python API is a top layer: nothing below it imports it"
       for layer in ("registry", "core", "config", "plugins", "plugin module", "cli")},
    ("api", "cli"): "the Python API and the CLI are peers over the same functions; neither imports the other",
    # (base -> api is allowed: the package root's module __getattr__ loads the API on first use.)
    **{("base", layer): "errors and the package root import nothing of cogframe"
       for layer in ("registry", "core", "config", "plugins", "plugin module", "cli")},
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    importer: str
    imported: str
    edge: tuple[str, str]

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}: {self.importer} imports {self.imported} "
                f"({self.edge[0]} -> {self.edge[1]}: {FORBIDDEN[self.edge]})")


def module_name(path: Path, package_dir: Path) -> str:
    """``.../cogframe/core/model/masks.py`` -> ``cogframe.core.model.masks``."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None for a third-party module other than torch."""
    parts = module.split(".")
    if parts[0] == "torch":
        return "torch"
    if parts[0] != "cogframe":
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGE_LAYERS:
        layer = SUBPACKAGE_LAYERS[parts[1]]
        return "plugin module" if layer == "plugins" and len(parts) > 2 else layer
    return ROOT_LAYERS.get(".".join(parts[:2]), "unassigned")


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(tree: ast.AST, importer: str, is_package: bool, known_modules: set[str]):
    """Yields ``(line, dotted module)`` for every import in ``tree``, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            target = (_resolve_relative(importer, is_package, node.level, node.module) if node.level
                      else node.module or "")
            for alias in node.names:
                # `from cogframe.plugins import vqvae` imports the module cogframe.plugins.vqvae.
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in known_modules else target
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def check_layers(package_dir: Path) -> tuple[list[Violation], list[str]]:
    """All forbidden imports under ``package_dir`` and the modules no layer claims.

    Args:
        package_dir: The ``cogframe`` package folder (the real one or a planted fake).

    Returns:
        ``(violations, unassigned)``: one :class:`Violation` per forbidden import, in file and
        line order, and the modules :func:`layer_of` cannot place.
    """
    files = sorted(package_dir.rglob("*.py"))
    known = {module_name(f, package_dir) for f in files}
    violations, unassigned = [], []
    for path in files:
        importer = module_name(path, package_dir)
        src_layer = layer_of(importer)
        if src_layer == "unassigned":
            unassigned.append(importer)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # One row per (line, module): `from x import a, b` is one import of x, not two.
        for line, imported in dict.fromkeys(imports_of(tree, importer, path.name == "__init__.py", known)):
            edge = (src_layer, layer_of(imported))
            if edge in FORBIDDEN:
                violations.append(Violation(str(path.relative_to(package_dir.parent)), line, importer,
                                            imported, edge))
    return violations, unassigned


def _report(violations) -> str:
    return "forbidden imports across layers (docs/architecture.md, Layers):\n" + "\n".join(map(str, violations))


# ---- the real package ------------------------------------------------------------------------------

def test_no_module_imports_across_a_forbidden_layer():
    violations, unassigned = check_layers(PACKAGE)
    assert not unassigned, (f"modules with no layer: {unassigned}; put a new root module into ROOT_LAYERS "
                            "of tests/test_layering.py (or move it into core/, config/, plugins/ or cli/)")
    assert not violations, _report(violations)


def test_the_checker_sees_the_whole_package():
    modules = {module_name(f, PACKAGE) for f in PACKAGE.rglob("*.py")}
    for expected in ("cogframe.core.model.transformer", "cogframe.registry", "cogframe.config.recipes",
                     "cogframe.plugins.vqvae", "cogframe.cli.run"):
        assert expected in modules
    layers = {layer_of(m) for m in modules}
    assert {"base", "registry", "core", "config", "plugins", "plugin module", "cli"} <= layers


# ---- the checker on planted trees ------------------------------------------------------------------

def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake ``cogframe`` tree: empty packages plus ``files`` (path relative to the package)."""
    pkg = tmp_path / "cogframe"
    for rel in ("__init__.py", "errors.py", "registry.py", "core/__init__.py", "core/model/__init__.py",
                "core/model/masks.py", "config/__init__.py", "config/recipes.py", "plugins/__init__.py",
                "plugins/vqvae.py", "cli/__init__.py", "cli/run.py", *files):
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files.get(rel, '"""planted."""\n'), encoding="utf-8")
    return pkg


ALLOWED = {
    "core/model/masks.py": "import torch\nfrom cogframe.errors import ConfigError\n",
    "plugins/vqvae.py": "from cogframe.core.model import masks\nfrom cogframe.registry import x\n",
    "config/recipes.py": "from cogframe.plugins import get_registries\nfrom ..registry import y\n",
    "cli/run.py": "from cogframe.config import recipes\nfrom cogframe.plugins.vqvae import VQVAE\nimport torch\n",
    "registry.py": "import omegaconf\nfrom cogframe.errors import Problem\n",
}


def test_checker_passes_a_tree_with_only_allowed_imports(tmp_path):
    violations, unassigned = check_layers(_plant(tmp_path, ALLOWED))
    assert violations == [] and unassigned == []


PLANTED = [
    # (file, source with one forbidden import on line 3, expected edge, expected imported module)
    ("core/model/masks.py", "import torch\n\nfrom cogframe.plugins import vqvae\n", ("core", "plugin module"),
     "cogframe.plugins.vqvae"),
    ("core/model/masks.py", "def f():\n    x = 1\n    from cogframe.cli import run\n", ("core", "cli"),
     "cogframe.cli.run"),
    ("core/model/masks.py", "import torch\n\nfrom ...config.recipes import load\n", ("core", "config"),
     "cogframe.config.recipes"),
    ("core/model/masks.py", "import importlib\n\nimportlib.import_module('cogframe.plugins')\n", ("core", "plugins"),
     "cogframe.plugins"),
    ("core/model/masks.py", "import torch\n\nfrom cogframe.registry import component\n", ("core", "registry"),
     "cogframe.registry"),
    ("registry.py", "import omegaconf\n\nfrom cogframe.core.model.masks import MaskSpec\n", ("registry", "core"),
     "cogframe.core.model.masks"),
    ("registry.py", "class A:\n    def f(self):\n        import torch.nn\n", ("registry", "torch"), "torch.nn"),
    ("plugins/vqvae.py", "import torch\n\nfrom cogframe.cli.run import run_task\n", ("plugin module", "cli"),
     "cogframe.cli.run"),
    ("config/recipes.py", "import yaml\n\nimport cogframe.plugins.vqvae\n", ("config", "plugin module"),
     "cogframe.plugins.vqvae"),
    ("config/recipes.py", "import yaml\n\n__import__('cogframe.plugins.vqvae')\n", ("config", "plugin module"),
     "cogframe.plugins.vqvae"),
    ("errors.py", "import dataclasses\n\nimport torch\n", ("base", "torch"), "torch"),
]


@pytest.mark.parametrize("rel,source,edge,imported", PLANTED, ids=[f"{e[0]}->{e[1]}:{r}" for r, _, e, _ in PLANTED])
def test_checker_fails_on_a_planted_forbidden_import(tmp_path, rel, source, edge, imported):
    violations, _ = check_layers(_plant(tmp_path, {**ALLOWED, rel: source}))
    assert [(v.line, v.edge, v.imported) for v in violations] == [(3, edge, imported)]
    message = _report(violations)
    assert f"cogframe/{rel}:3:" in message and FORBIDDEN[edge] in message


def test_checker_reports_every_violation_and_unassigned_modules(tmp_path):
    planted = {"core/model/masks.py": "from cogframe.plugins import vqvae\nimport cogframe.cli\n",
               "helpers.py": "import torch\n"}
    pkg = _plant(tmp_path, {**ALLOWED, **planted})
    violations, unassigned = check_layers(pkg)
    assert [(v.importer, v.line, v.edge) for v in violations] == [
        ("cogframe.core.model.masks", 1, ("core", "plugin module")), ("cogframe.core.model.masks", 2, ("core", "cli"))]
    assert unassigned == ["cogframe.helpers"]


# ---- subpackages and the architecture doc ---------------------------------------------------------

def _subpackages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)


def _modules_of(package: Path) -> list[str]:
    return sorted([p.stem for p in package.glob("*.py") if p.name != "__init__.py"]
                  + [p.name for p in package.iterdir() if (p / "__init__.py").is_file()])


@pytest.mark.parametrize("package", [p for p in _subpackages() if "core" in p.relative_to(PACKAGE).parts],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_subpackage_init_is_a_docstring_naming_its_modules(package):
    tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, f"{package / '__init__.py'} needs a docstring naming its modules"
    imports = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not imports, (f"{package / '__init__.py'} imports at lines {imports}: core's __init__ files stay "
                         "import-free so that importing one module does not pull in the rest (and torch)")
    missing = [m for m in _modules_of(package) if not re.search(rf"``{m}``|\b{m}\.py\b|\b{m}/", doc)]
    assert not missing, f"the docstring of {package / '__init__.py'} does not name {missing}"


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w/]+\.py)`", doc))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in named:
            missing.append(rel)
    assert not missing, (f"docs/architecture.md does not list {missing}: add each to the module table with its "
                         "one job (written as its path under src/cogframe, e.g. `core/model/masks.py`)")
