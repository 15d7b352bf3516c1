"""cogframe's pytest plugin: fixtures and a marker for testing cogframe plugins.

pytest loads it in every project whose environment has cogframe installed, through the entry
point ``[project.entry-points.pytest11] cogframe = "cogframe.testing.pytest_plugin"``; disable it
with ``-p no:cogframe``. It adds:

* fixture ``cogframe_registries``: the registries of the built-in plugins plus the installed
  third-party plugins ``COGFRAME_PLUGINS`` selects, loaded fresh for the test;
* marker ``@pytest.mark.cogframe_plugins("myplug", ...)``: load only these third-party plugins in
  the test (sets ``COGFRAME_PLUGINS``; no names: none) — for the fixtures above and for the CLI;
* fixture ``cogframe_cli``: runs ``cogframe ARGS...`` in-process and returns
  ``(code, out, err)``;
* fixture ``cogframe_max_examples`` and option ``--cogframe-max-examples N``: how many
  hypothesis examples the property checks should draw (default 60), to scale a CI run;
* :func:`component_params`: ``pytest.param`` ids of every registered component of a kind (from one
  origin), for ``@pytest.mark.parametrize``, with unavailable ones marked as skipped.

Importing it imports neither torch nor the plugins: pytest loads it in every session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pytest

__all__ = ["CliResult", "component_params"]

DEFAULT_MAX_EXAMPLES = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cogframe", "cogframe plugin conformance (cogframe.testing)")
    group.addoption("--cogframe-max-examples", type=int, default=None, metavar="N",
                    help=f"hypothesis examples per cogframe.testing property check (default {DEFAULT_MAX_EXAMPLES})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cogframe_plugins(*names): load only these third-party cogframe plugins "
                                       "(COGFRAME_PLUGINS) in this test; no names loads none")


@pytest.fixture
def cogframe_max_examples(request: pytest.FixtureRequest) -> int:
    """Hypothesis examples per property check (``--cogframe-max-examples``, default 60)."""
    value = request.config.getoption("--cogframe-max-examples")
    return DEFAULT_MAX_EXAMPLES if value is None else int(value)


@pytest.fixture
def _cogframe_plugin_selection(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import cogframe.plugins as plugins

    marker = request.node.get_closest_marker("cogframe_plugins")
    if marker is not None:
        monkeypatch.setenv("COGFRAME_PLUGINS", ",".join(marker.args))
    plugins.reset_plugins()  # load what this test selects, not what an earlier test cached
    yield
    plugins.reset_plugins()


@pytest.fixture
def cogframe_registries(_cogframe_plugin_selection):
    """The registries of every loaded plugin (built-ins + selected third-party), fresh for the test."""
    import cogframe.plugins as plugins

    return plugins.get_registries()


@dataclass
class CliResult:
    """Exit status and captured output of one in-process ``cogframe`` command."""

    code: int
    out: str
    err: str


@pytest.fixture
def cogframe_cli(_cogframe_plugin_selection, capsys: pytest.CaptureFixture):
    """Runs ``cogframe ARGS...`` in-process: ``cogframe_cli("plugins", "--json").out``."""
    from cogframe.cli import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def component_params(kind: str, *, origin: str | None = None) -> list:
    """``pytest.param`` per registered component of ``kind`` (id = its name), for parametrize.

    Args:
        kind: A component kind (``attention``, ``token_sampler``, ...).
        origin: Keep only components whose origin starts with this (``"builtin:"``, ``"myplug"``).

    Components that cannot run here are marked ``skip`` with their reason. The plugins are loaded
    as ``COGFRAME_PLUGINS`` selects them when the test module is collected.
    """
    from cogframe.plugin_loader import load_plugins
    from cogframe.plugins import BUILTIN_PLUGINS

    registries = load_plugins(BUILTIN_PLUGINS).registries()
    params = []
    for spec in registries.specs(kind):
        if origin is not None and not spec.origin.startswith(origin):
            continue
        reason = spec.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{spec.label}: {reason}")] if reason else []
        params.append(pytest.param(spec.name, id=spec.name, marks=marks))
    return params
