"""Shared test setup: one torch thread, isolated plugins, an in-process CLI runner, plugin fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

try:  # the foundation tests do not need torch, but other suites do: keep them to one thread
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass

import cogframe.plugins as plugins
from cogframe.cli import main

DATA = Path(__file__).parent / "data"
RECIPES = DATA / "recipes"


@pytest.fixture(autouse=True)
def _no_third_party_plugins(monkeypatch):
    """Tests see only built-in plugins unless they opt in, whatever is installed in the venv."""
    monkeypatch.setenv("COGFRAME_PLUGINS", "")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Runs ``cogframe ARGS...`` in-process; returns exit code, stdout and stderr."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def convert_cli(cli):
    """Runs ``cogframe convert ARGS...`` in-process (the conversion tests' runner)."""
    return lambda *args: cli("convert", *args)


@pytest.fixture
def testplug(monkeypatch):
    """Loads tests/data/plugins/cogframe_testplug.py like a built-in plugin; yields the registries."""
    monkeypatch.syspath_prepend(str(DATA / "plugins"))
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "cogframe_testplug"))
    plugins.reset_plugins()
    yield plugins.get_registries()
    plugins.reset_plugins()


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """Writes an installed-looking distribution (package + dist-info with a ``cogframe`` entry point).

    Call ``make_dist(package, source, entry_point_name=package)``; returns the folder to put on the
    path. Modules it created are dropped from ``sys.modules`` afterwards.
    """
    site = tmp_path / "site"
    created: list[str] = []

    def make(package: str, source: str, entry_point_name: str | None = None, files: dict | None = None) -> Path:
        pkg = site / package
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text(textwrap.dedent(source))
        for rel, text in (files or {}).items():
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            (pkg / rel).write_text(textwrap.dedent(text))
        info = site / f"{package}_dist-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}-dist\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[cogframe]\n{entry_point_name or package} = {package}\n")
        created.append(package)
        return site

    yield make
    for package in created:
        sys.modules.pop(package, None)
    plugins.reset_plugins()


def _run_cogframe(*args: object, pythonpath: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "COGFRAME_PLUGINS"}
    if pythonpath is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "cogframe", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def run_cogframe():
    """Runs ``python -m cogframe ARGS`` in a fresh interpreter (real entry-point discovery).

    Call ``run_cogframe(*args, pythonpath=None, env=None)``; COGFRAME_PLUGINS is unset unless ``env`` sets it.
    """
    return _run_cogframe


def pytest_collection_modifyitems(config, items):
    """Browser tests (``@pytest.mark.browser``: a server and a headless Chromium, tens of seconds)
    run only when asked for with ``-m browser`` (CI's own step), so the default suite stays fast."""
    if "browser" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="browser test: run it with `pytest -m browser`")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)
