"""What every conformance check shares: the report, the failure type, resolving the component.

A check takes a component in any of the forms a plugin author has at hand: its registered name
(looked up in the registries of the installed plugins), its ``@component`` class or factory (built
with the given keywords), or an instance already built (its class's ``@component`` declaration,
or an explicit :class:`~cogframe.registry.Capabilities`, says what it declares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from cogframe.registry import SPEC_ATTRIBUTE, Capabilities, ComponentSpec, Registries

__all__ = ["ConformanceError", "ConformanceReport", "Resolved", "finish", "phases", "resolve", "require_hypothesis"]


class ConformanceError(AssertionError):
    """A component breaks a guarantee cogframe relies on; the message names the check and the case.

    It is an ``AssertionError`` so pytest shows it as a test failure and hypothesis shrinks the
    failing example before re-raising it.
    """


@dataclass
class ConformanceReport:
    """What a check verified and what it could not verify on this machine.

    Attributes:
        component: How messages name the component, e.g. ``attention 'chunked' (from example ...)``.
        passed: One line per guarantee that held.
        skipped: One line per guarantee not checked here, with the reason (a device that is not
            present, a dtype cogframe never runs on CPU, the component being unavailable).
        unavailable: The component's own unavailability reason, when it cannot run here at all.
    """

    component: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unavailable: str | None = None

    def __str__(self) -> str:
        lines = [f"{self.component}:"]
        if self.unavailable:
            lines.append(f"  not available here: {self.unavailable}")
        lines += [f"  ok: {line}" for line in self.passed]
        lines += [f"  skipped: {line}" for line in self.skipped]
        return "\n".join(lines)


@dataclass(frozen=True)
class Resolved:
    """A component ready to check.

    Attributes:
        obj: The built component.
        label: How messages name it.
        capabilities: What it declares.
        unavailable: Why it cannot run here (None: it can); ``obj`` is None then.
    """

    obj: Any
    label: str
    capabilities: Capabilities
    unavailable: str | None = None


def _declared(obj: Any) -> ComponentSpec | None:
    for candidate in (obj, type(obj)):
        spec = getattr(candidate, "__dict__", {}).get(SPEC_ATTRIBUTE)
        if isinstance(spec, ComponentSpec):
            return spec
    return None


def resolve(kind: str, component: Any, *, registries: Registries | None = None,
            kwargs: Mapping[str, Any] | None = None, runtime_kwargs: Mapping[str, Any] | None = None,
            capabilities: Capabilities | None = None) -> Resolved:
    """Turns a name, a ``@component`` object or an instance into a built component.

    Args:
        kind: The component kind the check is for (``attention``, ``token_sampler``, ...).
        component: A registered name, a ``@component`` class/factory, or a built instance.
        registries: Where names are looked up; default: every loaded plugin
            (``cogframe.plugins.get_registries()``, which honours ``COGFRAME_PLUGINS``).
        kwargs: Recipe keywords to build it with.
        runtime_kwargs: Keywords a task would pass at build time (``layout=...``).
        capabilities: Overrides what the component declares (for an undecorated instance).

    Raises:
        ConformanceError: ``component`` is of another kind, or a name that no plugin registers.
    """
    kwargs, runtime_kwargs = dict(kwargs or {}), dict(runtime_kwargs or {})
    if isinstance(component, str):
        if registries is None:
            from cogframe.plugins import get_registries

            registries = get_registries()
        if component not in registries.names(kind):
            raise ConformanceError(
                f"no {kind} named {component!r} is registered (known: {', '.join(registries.names(kind))}); "
                "install the plugin (pip install -e .) and check that COGFRAME_PLUGINS does not leave it out")
        spec = registries.get(kind, component)
        label = f"{spec.label} (from {spec.origin})"
        reason = spec.unavailable_reason()
        if reason is not None:
            return Resolved(None, label, capabilities or spec.capabilities, reason)
        built = registries.build(kind, {"name": component, **kwargs}, **runtime_kwargs)
        return Resolved(built, label, capabilities or spec.capabilities)
    spec = _declared(component)
    if spec is not None and spec.kind != kind:
        raise ConformanceError(f"{spec.label} is a {spec.kind} component, not a {kind} one: use the "
                               f"check for {spec.kind}")
    label = spec.label if spec is not None else f"{kind} {type(component).__name__}"
    declared = capabilities or (spec.capabilities if spec is not None else Capabilities())
    if spec is not None and spec.available is not None:
        reason = spec.unavailable_reason()
        if reason is not None:
            return Resolved(None, label, declared, reason)
    if spec is not None and getattr(component, "__dict__", {}).get(SPEC_ATTRIBUTE) is spec:
        component = component(**kwargs, **runtime_kwargs)  # the decorated class/factory itself
    return Resolved(component, label, declared)


def require_hypothesis():
    """Imports hypothesis, or says how to install it (the kit's property checks need it)."""
    try:
        import hypothesis
    except ImportError as exc:  # pragma: no cover - hypothesis is in cogframe[test]
        raise ConformanceError("cogframe.testing needs hypothesis for its property checks: "
                               "pip install 'cogframe[test]' (or pip install hypothesis)") from exc
    return hypothesis


def finish(report: ConformanceReport, unavailable: str) -> ConformanceReport:
    """Applies the ``unavailable=`` policy of a check to a report that verified nothing.

    Args:
        report: The report so far.
        unavailable: ``"skip"`` (pytest.skip when running under pytest, else return the report),
            ``"fail"`` (raise :class:`ConformanceError`) or ``"report"`` (return it).
    """
    if report.passed and not report.unavailable:
        return report
    reason = report.unavailable or "; ".join(report.skipped) or "nothing could be checked here"
    if unavailable == "fail":
        raise ConformanceError(f"{report.component} could not be checked here: {reason}")
    if unavailable == "skip":
        try:
            import pytest
        except ImportError:  # pragma: no cover - outside a test run
            return report
        pytest.skip(f"{report.component}: {reason}")
    return report


def phases(hypothesis, shrink: bool) -> tuple:
    """Hypothesis phases of a check: shrinking a failure is optional because it can take minutes."""
    return tuple(p for p in hypothesis.Phase if shrink or p is not hypothesis.Phase.shrink)
