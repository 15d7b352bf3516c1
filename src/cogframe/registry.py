"""Component kinds, the ``@component`` decorator and the registries that resolve recipe names.

A component is any class or factory decorated with :func:`component`. The decorator only attaches a
:class:`ComponentSpec`; nothing is global. Plugins hand decorated objects to the
``register_components`` hook and :mod:`cogframe.plugins` registers them into a :class:`Registries`
with the plugin's origin. This module imports nothing of cogframe's model code (no torch, no
``cogframe.core``), so listing and validating recipes stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import (
    CogframeError,
    ConfigError,
    DuplicateComponentError,
    UnavailableError,
    UnknownComponentError,
    problems_error,
)
from cogframe.signatures import keyword_problems

KINDS: tuple[str, ...] = (
    "text_tokenizer",
    "image_tokenizer",
    "attention",
    "frame_rate_sampler",
    "interpolator",
    "dataset",
    "token_sampler",
    "logger",
    "task",
)

# Attribute under which @component stores the spec; read from the object's own __dict__ so that a
# subclass of a component is not mistaken for the component itself.
SPEC_ATTRIBUTE = "__cogframe_component__"


@dataclass(frozen=True)
class Capabilities:
    """What a component can do, shown by ``cogframe plugins`` and checked by tasks.

    Attributes:
        devices: Device types it runs on (``"cpu"``, ``"cuda"``); empty = not a tensor component.
        dtypes: Tensor dtypes it supports by name (``"float32"``, ``"bfloat16"``); empty = unspecified.
        backward: Whether gradients flow through it (training use).
        masks: Mask kinds it supports (names from ``core/masks.py``); None = every mask.
        extra: Free-form, family-specific facts (e.g. ``{"max_seq_len": 4096}``).
    """

    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    backward: bool = False
    masks: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Returns the capabilities as JSON-ready plain values."""
        return {
            "devices": list(self.devices),
            "dtypes": list(self.dtypes),
            "backward": self.backward,
            "masks": None if self.masks is None else list(self.masks),
            "extra": dict(self.extra),
        }


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the registry knows about one component.

    Attributes:
        kind: One of :data:`KINDS`.
        name: The name recipes use (``name: naive``).
        obj: The class or factory; ``obj(**kwargs)`` builds the component.
        description: One line for listings.
        capabilities: See :class:`Capabilities`.
        available: Zero-argument callable returning None (usable) or a reason string; None = always.
        runtime_kwargs: Keywords the task passes at build time (e.g. ``layout``); a recipe must not
            set them, and validation counts them as present.
        origin: Who registered it, e.g. ``builtin:loggers`` or ``myplug (myplug 0.1)``; filled in
            at registration.
    """

    kind: str
    name: str
    obj: Callable[..., Any]
    description: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    available: Callable[[], str | None] | None = None
    runtime_kwargs: tuple[str, ...] = ()
    origin: str = "unregistered"

    @property
    def label(self) -> str:
        """How messages name this component, e.g. ``attention 'naive'``."""
        return f"{self.kind} '{self.name}'"

    @property
    def module(self) -> str:
        """The module that defines the component."""
        return getattr(self.obj, "__module__", "?")

    def unavailable_reason(self) -> str | None:
        """Returns None when the component can run here, else why not (never raises)."""
        if self.available is None:
            return None
        try:
            reason = self.available()
        except Exception as exc:  # a broken check must not take the whole listing down
            return f"its availability check raised {type(exc).__name__}: {exc}"
        return None if reason is None else str(reason)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown component kind '{kind}': use one of {', '.join(KINDS)}")


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc).splitlines()[0] if doc and doc.strip() else ""


def component(
    kind: str,
    name: str,
    *,
    description: str | None = None,
    capabilities: Capabilities | None = None,
    available: Callable[[], str | None] | None = None,
    runtime_kwargs: Iterable[str] | None = None,
) -> Callable[[Any], Any]:
    """Marks a class or factory as a component; attaches a :class:`ComponentSpec`, registers nothing.

    Args:
        kind: One of :data:`KINDS`.
        name: The name recipes use; unique within the kind across all plugins.
        description: One line for listings; defaults to the first line of the docstring.
        capabilities: What it can do; defaults to an empty :class:`Capabilities`.
        available: Zero-argument callable returning None when usable here, else a reason string
            that names the fix (``"needs tensorboard: pip install tensorboard"``).
        runtime_kwargs: Keywords the task supplies when building it (e.g. ``("layout",)``). When
            omitted, a class attribute ``runtime_kwargs`` on the object is used, if present.

    Returns:
        A decorator returning the object unchanged apart from the attached spec.

    Raises:
        ConfigError: ``kind`` is unknown or ``name`` is empty.
        TypeError: ``available`` is not callable.
    """
    _check_kind(kind)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ConfigError(f"component name {name!r} of kind {kind} is invalid: use a non-empty name without spaces")
    if available is not None and not callable(available):
        raise TypeError(f"available= for {kind} '{name}' must be a zero-argument callable or None")

    def attach(obj: Any) -> Any:
        runtime = runtime_kwargs if runtime_kwargs is not None else getattr(obj, "runtime_kwargs", ())
        spec = ComponentSpec(
            kind=kind,
            name=name,
            obj=obj,
            description=description if description is not None else _first_doc_line(obj),
            capabilities=capabilities or Capabilities(),
            available=available,
            runtime_kwargs=tuple(runtime),
        )
        setattr(obj, SPEC_ATTRIBUTE, spec)
        return obj

    return attach


def spec_of(obj: Any) -> ComponentSpec:
    """Returns the spec attached by :func:`component`.

    Raises:
        CogframeError: ``obj`` was not decorated with ``@component``.
    """
    spec = getattr(obj, "__dict__", {}).get(SPEC_ATTRIBUTE)
    if not isinstance(spec, ComponentSpec):
        raise CogframeError(
            f"{obj!r} is not a component: decorate it with @cogframe.registry.component(kind, name) "
            "before returning it from register_components()"
        )
    return spec


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """Returns the candidate closest to ``word`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


class Registry:
    """The components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        _check_kind(kind)
        self.kind = kind
        self._specs: dict[str, ComponentSpec] = {}

    def register(self, spec: ComponentSpec) -> None:
        """Adds ``spec``.

        Raises:
            DuplicateComponentError: The name is taken; the message names both origins and modules.
        """
        if spec.kind != self.kind:
            raise ConfigError(f"{spec.label} cannot go into the {self.kind} registry: register it under kind {spec.kind}")
        old = self._specs.get(spec.name)
        if old is not None:
            raise DuplicateComponentError(
                f"{self.kind} '{spec.name}' is registered twice: first by {old.origin} (module {old.module}), "
                f"then by {spec.origin} (module {spec.module}). Rename one of them, or stop loading one "
                "plugin (COGFRAME_PLUGINS lists the third-party plugins to load)"
            )
        self._specs[spec.name] = spec

    def get(self, name: str) -> ComponentSpec:
        """Returns the spec registered as ``name``.

        Raises:
            UnknownComponentError: No such name; lists the known names and the closest match.
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            pass
        known = self.names()
        hint = closest(str(name), known)
        did_you_mean = f"Did you mean '{hint}'? " if hint else ""
        listing = f"Known {self.kind} components: {', '.join(known)}." if known else f"No {self.kind} components are registered."
        raise UnknownComponentError(
            f"unknown {self.kind} '{name}'. {did_you_mean}{listing} Fix the name, or install the plugin that "
            "provides it (`cogframe plugins` lists what is loaded)"
        )

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._specs)

    def specs(self) -> list[ComponentSpec]:
        """Returns the registered specs, sorted by name."""
        return [self._specs[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._specs


def node_to_dict(node: Any, where: str) -> dict[str, Any]:
    """Converts a component node (dict or omegaconf node) into a plain dict, resolving interpolations.

    Raises:
        ConfigError: ``node`` is not a mapping.
    """
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    if isinstance(node, Mapping):
        return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in node.items()}
    raise ConfigError(
        f"{where or 'component'} must be a mapping with a 'name:' key, got {type(node).__name__} {node!r}: "
        "write it as `name: <component>` plus its keywords"
    )


class Registries:
    """One :class:`Registry` per kind in :data:`KINDS`; the single object recipes are resolved against."""

    def __init__(self) -> None:
        self._registries = {kind: Registry(kind) for kind in KINDS}

    def _registry(self, kind: str) -> Registry:
        _check_kind(kind)
        return self._registries[kind]

    def register(self, obj_or_spec: Any, origin: str) -> ComponentSpec:
        """Registers a ``@component`` object (or a spec) under ``origin``.

        Args:
            obj_or_spec: A decorated class/factory or a :class:`ComponentSpec`.
            origin: Who registers it, e.g. ``builtin:loggers``; shown in listings and duplicate errors.

        Returns:
            The registered spec, with its origin filled in.
        """
        spec = obj_or_spec if isinstance(obj_or_spec, ComponentSpec) else spec_of(obj_or_spec)
        spec = dataclasses.replace(spec, origin=origin)
        self._registry(spec.kind).register(spec)
        return spec

    def component(self, kind: str, name: str, *, origin: str = "local", **spec_kwargs: Any) -> Callable[[Any], Any]:
        """Decorator that declares AND registers a component here (handy in tests and notebooks).

        Takes the same keywords as :func:`component`, plus ``origin``.
        """
        declare = component(kind, name, **spec_kwargs)

        def attach(obj: Any) -> Any:
            self.register(declare(obj), origin)
            return obj

        return attach

    def get(self, kind: str, name: str) -> ComponentSpec:
        """Returns the spec of ``kind``/``name``; raises UnknownComponentError with suggestions."""
        return self._registry(kind).get(name)

    def names(self, kind: str) -> list[str]:
        """Returns the sorted names registered for ``kind``."""
        return self._registry(kind).names()

    def specs(self, kind: str) -> list[ComponentSpec]:
        """Returns the specs registered for ``kind``, sorted by name."""
        return self._registry(kind).specs()

    def available(self, kind: str, name: str) -> str | None:
        """Returns None when ``kind``/``name`` can run here, else the reason (with its fix)."""
        return self.get(kind, name).unavailable_reason()

    def build(self, kind: str, node: Any, **runtime_kwargs: Any) -> Any:
        """Builds the component a recipe node describes.

        Args:
            kind: One of :data:`KINDS`.
            node: A dict or omegaconf node; ``name`` picks the component, every other key is a keyword.
            **runtime_kwargs: Keywords supplied by the caller (e.g. ``layout=layout``); a recipe
                must not set these too.

        Returns:
            ``obj(**node_kwargs, **runtime_kwargs)``.

        Raises:
            UnknownComponentError: Unknown name (with the closest match).
            ConfigError: Missing ``name``, unknown/missing keyword, ill-typed value, or construction
                failed with TypeError/ValueError.
            UnavailableError: The component cannot run here.
        """
        kwargs = node_to_dict(node, kind)
        name = kwargs.pop("name", None)
        if name is None:
            known = ", ".join(self.names(kind)) or "none registered"
            raise ConfigError(f"the {kind} node has no 'name:' key: add `name: <one of {known}>`")
        spec = self.get(kind, name)
        clashes = sorted(set(kwargs) & set(runtime_kwargs))
        if clashes:
            raise ConfigError(
                f"{spec.label}: {', '.join(clashes)} is supplied by the task at run time: remove it from the recipe"
            )
        problems = keyword_problems(spec.obj, kwargs, where=kind, label=spec.label, supplied_later=runtime_kwargs)
        if problems:
            raise problems_error(f"cannot build {spec.label}", problems)
        reason = spec.unavailable_reason()
        if reason is not None:
            raise UnavailableError(f"{spec.label} (from {spec.origin}) is not available here: {reason}")
        try:
            return spec.obj(**kwargs, **runtime_kwargs)
        except CogframeError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"building {spec.label} failed: {type(exc).__name__}: {exc}. Check the values given to it "
                "in the recipe (`cogframe validate` prints them)"
            ) from exc
