"""Component kinds, the ``@component`` decorator and the registries that resolve recipe names.

A component is any class or factory decorated with :func:`component`. The decorator only attaches a
:class:`ComponentSpec`; nothing is global. Plugins hand decorated objects to the
``register_components`` hook and :mod:`cogframe.plugins` registers them into a :class:`Registries`
with the plugin's origin. This module imports nothing of cogframe's model code (no torch, no
``cogframe.core``), so listing and validating recipes stays fast.

A component can also be registered *lazily*: :func:`lazy_components` reads a module's
``@component`` declarations from its source (:mod:`cogframe.component_source`) and
:func:`lazy_component` declares one by ``"module:Attribute"``; the implementation is imported the
first time it is built. Declared :class:`Capabilities` are checked against what a caller
:class:`Needs` (device, dtype, backward, mask) before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import (
    CogframeError,
    ConfigError,
    DuplicateComponentError,
    Problem,
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
    "stage",
    "dataset",
    "token_sampler",
    "logger",
    "task",
)

# Attribute under which @component stores the spec; read from the object's own __dict__ so that a
# subclass of a component is not mistaken for the component itself.
SPEC_ATTRIBUTE = "__cogframe_component__"


def device_type(device: Any) -> str | None:
    """``"cuda:1"`` -> ``"cuda"``; None and ``"auto"`` (decided at run time) -> None."""
    if device is None:
        return None
    text = str(getattr(device, "type", device)).strip().lower()
    return None if text in ("", "auto") else text.split(":")[0]


@dataclass(frozen=True)
class Needs:
    """What a caller will ask of a component: checked against its :class:`Capabilities`.

    Every field left None (or False) is not asked. Tasks return these from ``capability_needs``
    (checked by ``cogframe validate``, without torch); ``build_model_from_recipe`` checks them
    again with the mask each attention channel really uses.

    Attributes:
        device: Device type it will run on (``"cpu"``, ``"cuda"``); None = not known yet.
        dtype: Tensor dtype by name (``"float32"``, ``"bfloat16"``); None = not known yet.
        backward: Whether gradients must flow through it (training).
        mask: The mask rule it must handle (a ``FrameRule`` value of ``core/model/masks.py``).
    """

    device: str | None = None
    dtype: str | None = None
    backward: bool = False
    mask: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", device_type(self.device))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))

    def describe(self) -> str:
        """The asked constraints in words, e.g. ``device cpu, dtype float32, backward``."""
        parts = [f"device {self.device}" if self.device else "", f"dtype {self.dtype}" if self.dtype else "",
                 "backward (training)" if self.backward else "", f"mask {self.mask}" if self.mask else ""]
        return ", ".join(p for p in parts if p) or "nothing"


@dataclass(frozen=True)
class Capabilities:
    """What a component can do; shown by ``cogframe plugins`` and checked against :class:`Needs`.

    ``cogframe validate`` checks device, dtype and backward from the task's ``capability_needs``;
    building a model from a recipe checks all four, masks included, before anything runs.

    Attributes:
        devices: Device types it runs on (``"cpu"``, ``"cuda"``); empty = not a tensor component
            (never checked).
        dtypes: Tensor dtypes it supports by name (``"float32"``, ``"bfloat16"``); empty =
            unspecified (never checked).
        backward: Whether gradients flow through it (training use): True on every device it
            runs on, False never, or a tuple of the device types where they do (``("cuda",)``).
        masks: Mask rules it supports (``FrameRule`` values of ``core/model/masks.py``:
            ``own_frame_causal``, ``own_frame_interpolation``, ``sequential``, ``interpolation``);
            None = every mask.
        extra: Free-form, family-specific facts (e.g. ``{"max_seq_len": 4096}``); shown, not checked.
    """

    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    backward: bool | tuple[str, ...] = False
    masks: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Declarations read from source come as lists; keep them hashable and comparable.
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        if not isinstance(self.backward, bool):
            object.__setattr__(self, "backward", tuple(self.backward))
        if self.masks is not None:
            object.__setattr__(self, "masks", tuple(self.masks))

    def backward_on(self, device: str | None) -> bool:
        """Whether gradients flow on ``device`` (None: on at least one device)."""
        if isinstance(self.backward, bool):
            return self.backward
        return bool(self.backward) if device is None else device in self.backward

    def unmet(self, needs: Needs) -> list[str]:
        """Each asked constraint this component does not declare, in words (empty: all met)."""
        out = []
        if needs.device and self.devices and needs.device not in self.devices:
            out.append(f"device {needs.device} (it runs on {', '.join(self.devices)})")
        if needs.dtype and self.dtypes and needs.dtype not in self.dtypes:
            out.append(f"dtype {needs.dtype} (it supports {', '.join(self.dtypes)})")
        if needs.backward and not self.backward_on(needs.device):
            where = f" on {needs.device}" if needs.device else ""
            has = ("forward only" if self.backward is False or not self.backward
                   else f"backward only on {', '.join(self.backward)}")
            out.append(f"backward{where}, i.e. training ({has})")
        if needs.mask and self.masks is not None and needs.mask not in self.masks:
            out.append(f"mask {needs.mask} (it handles {', '.join(self.masks) or 'no mask'})")
        return out

    def describe(self) -> str:
        """The declared constraints in one short line for ``cogframe plugins``."""
        parts = []
        if self.devices:
            parts.append("/".join(self.devices))
        if self.dtypes:
            parts.append(",".join(self.dtypes))
        if self.devices or self.dtypes or self.backward:
            parts.append("backward" if self.backward is True else
                         (f"backward on {'/'.join(self.backward)}" if self.backward else "forward only"))
        if self.masks is not None:
            parts.append("masks " + ",".join(self.masks))
        return "; ".join(parts) or "-"

    def to_dict(self) -> dict[str, Any]:
        """Returns the capabilities as JSON-ready plain values."""
        return {
            "devices": list(self.devices),
            "dtypes": list(self.dtypes),
            "backward": self.backward if isinstance(self.backward, bool) else list(self.backward),
            "masks": None if self.masks is None else list(self.masks),
            "extra": {k: list(v) if isinstance(v, tuple) else v for k, v in self.extra.items()},
        }


# Objects of lazy components already imported, by "module:attribute" (shared by every copy of a
# spec, e.g. the one dataclasses.replace makes when registering).
_LOADED: dict[str, Any] = {}


def _import_reference(reference: str) -> Any:
    module, _, attr = reference.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ComponentSpec:
    """Everything the registry knows about one component.

    A spec is *eager* (``obj`` given: the class or factory itself) or *lazy* (``target`` given:
    ``"module:attribute"``, imported by :meth:`load` the first time the object is needed, i.e.
    when the component is built). A lazy spec carries its keyword ``signature`` so recipes are
    checked without importing the implementation (and torch).

    Attributes:
        kind: One of :data:`KINDS`.
        name: The name recipes use (``name: naive``).
        obj: The class or factory; ``obj(**kwargs)`` builds the component. Reading it imports a
            lazy component's module.
        description: One line for listings.
        capabilities: See :class:`Capabilities`.
        available: Zero-argument callable returning None (usable) or a reason string, or the
            ``"module:function"`` of one (imported when checked); None = always.
        runtime_kwargs: Keywords the task passes at build time (e.g. ``layout``); a recipe must not
            set them, and validation counts them as present.
        origin: Who registered it, e.g. ``builtin:loggers`` or ``myplug (myplug 0.1)``; filled in
            at registration.
        target: ``"module:attribute"`` of a lazy component; empty for an eager one.
        signature: The keyword signature of a lazy component (None: import to read it).
    """

    kind: str
    name: str
    eager_obj: Callable[..., Any] | None = None
    description: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    available: Callable[[], str | None] | str | None = None
    runtime_kwargs: tuple[str, ...] = ()
    origin: str = "unregistered"
    target: str = ""
    signature: inspect.Signature | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        """How messages name this component, e.g. ``attention 'naive'``."""
        return f"{self.kind} '{self.name}'"

    @property
    def lazy(self) -> bool:
        """Whether the implementation is imported on first use."""
        return self.eager_obj is None

    @property
    def loaded(self) -> bool:
        """Whether the implementation object is at hand (eager, or lazy and already imported)."""
        return self.eager_obj is not None or self.target in _LOADED

    @property
    def obj(self) -> Callable[..., Any]:
        """The class or factory (imports a lazy component's module; see :meth:`load`)."""
        return self.load()

    @property
    def module(self) -> str:
        """The module that defines the component (known without importing a lazy one)."""
        if self.eager_obj is None:
            return self.target.partition(":")[0]
        return getattr(self.eager_obj, "__module__", "?")

    def load(self) -> Callable[..., Any]:
        """Returns the class or factory, importing a lazy component's module the first time.

        Raises:
            CogframeError: The module fails to import, lacks the attribute, or declares another
                component there (the static declaration and the code disagree).
        """
        if self.eager_obj is not None:
            return self.eager_obj
        if self.target in _LOADED:
            return _LOADED[self.target]
        try:
            obj = _import_reference(self.target)
        except ModuleNotFoundError as exc:
            raise CogframeError(
                f"{self.label} (from {self.origin}) cannot be loaded: importing {self.target} needs "
                f"module '{exc.name}', which is not installed. Install it, or use another {self.kind} "
                "(`cogframe plugins` lists them)"
            ) from exc
        except AttributeError as exc:
            raise CogframeError(
                f"{self.label} (from {self.origin}) is registered as {self.target}, which does not exist "
                f"({exc}). Fix the plugin's registration (see docs/plugins.md)"
            ) from exc
        except Exception as exc:
            raise CogframeError(
                f"{self.label} (from {self.origin}): importing {self.target} failed: "
                f"{type(exc).__name__}: {exc}. Fix or reinstall the plugin; --debug shows the traceback"
            ) from exc
        declared = getattr(obj, "__dict__", {}).get(SPEC_ATTRIBUTE)
        if isinstance(declared, ComponentSpec) and (declared.kind, declared.name) != (self.kind, self.name):
            raise CogframeError(
                f"{self.label} (from {self.origin}) is registered as {self.target}, but that object is "
                f"declared as {declared.label}: make the registration and the @component decorator agree"
            )
        _LOADED[self.target] = obj
        return obj

    def keyword_problems(self, kwargs: Mapping[str, Any], *, where: str,
                         supplied_later: Iterable[str] = ()) -> list[Problem]:
        """Checks recipe keywords against the signature, without importing a lazy component.

        Same result as :func:`cogframe.signatures.keyword_problems` on :attr:`obj`.
        """
        if self.loaded or self.signature is None:
            target = self.obj
        else:
            target = _signature_stub(self.signature)
        return keyword_problems(target, kwargs, where=where, label=self.label, supplied_later=supplied_later)

    def unavailable_reason(self) -> str | None:
        """Returns None when the component can run here, else why not (never raises)."""
        if self.available is None:
            return None
        try:
            check = _import_reference(self.available) if isinstance(self.available, str) else self.available
            reason = check()
        except Exception as exc:  # a broken check must not take the whole listing down
            return f"its availability check raised {type(exc).__name__}: {exc}"
        return None if reason is None else str(reason)

    def unmet(self, needs: Needs) -> list[str]:
        """The constraints of ``needs`` this component does not declare (see :class:`Capabilities`)."""
        return self.capabilities.unmet(needs)


def _signature_stub(signature: inspect.Signature) -> Callable[..., Any]:
    """A function that ``inspect.signature`` and ``typing.get_type_hints`` read as ``signature``."""

    def stub(*args: Any, **kwargs: Any) -> None:  # never called
        raise TypeError("a signature stub is not callable")

    stub.__signature__ = signature  # type: ignore[attr-defined]
    stub.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()
                            if p.annotation is not inspect.Parameter.empty}
    return stub


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
    available: Callable[[], str | None] | str | None = None,
    runtime_kwargs: Iterable[str] | None = None,
) -> Callable[[Any], Any]:
    """Marks a class or factory as a component; attaches a :class:`ComponentSpec`, registers nothing.

    When every argument is a literal (``capabilities=Capabilities(...)`` with literal keywords,
    ``available=`` a module-level function), cogframe can read the declaration from the module's
    source without importing it; see :func:`lazy_components`.

    Args:
        kind: One of :data:`KINDS`.
        name: The name recipes use; unique within the kind across all plugins.
        description: One line for listings; defaults to the first line of the docstring.
        capabilities: What it can do; defaults to an empty :class:`Capabilities`.
        available: Zero-argument callable returning None when usable here, else a reason string
            that names the fix (``"needs tensorboard: pip install tensorboard"``); or its
            ``"module:function"``, imported only when checked. Keep it light (no torch import
            when the answer does not need it): ``cogframe plugins`` runs every check.
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
    if available is not None and not callable(available) and not (isinstance(available, str) and ":" in available):
        raise TypeError(f"available= for {kind} '{name}' must be a zero-argument callable, a "
                        "'module:function' string or None")

    def attach(obj: Any) -> Any:
        runtime = runtime_kwargs if runtime_kwargs is not None else getattr(obj, "runtime_kwargs", ())
        spec = ComponentSpec(
            kind=kind,
            name=name,
            eager_obj=obj,
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


def lazy_component(
    kind: str,
    name: str,
    target: str,
    *,
    description: str = "",
    capabilities: Capabilities | None = None,
    available: Callable[[], str | None] | str | None = None,
    runtime_kwargs: Iterable[str] = (),
    signature: inspect.Signature | None = None,
) -> ComponentSpec:
    """Declares a component whose implementation ``target`` is imported only when it is built.

    Return the result from ``register_components`` like a decorated object. Listing and
    validating recipes then import nothing of the implementation. When ``signature`` is None it
    is read from the target's source (:mod:`cogframe.component_source`); when that is not
    possible, validating a recipe that uses the component imports it to read the signature.

    Args:
        kind: One of :data:`KINDS`.
        name: The name recipes use.
        target: ``"package.module:Attribute"`` of the class or factory.
        description: One line for listings.
        capabilities: What it can do (checked before it is built).
        available: As for :func:`component`; a ``"module:function"`` string keeps it lazy too.
        runtime_kwargs: Keywords the task supplies when building it.
        signature: The keyword signature, if you would rather state it than have it read.

    Raises:
        ConfigError: Bad kind, name or target.
    """
    _check_kind(kind)
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"lazy component {kind} '{name}': target {target!r} must be 'package.module:Attribute'")
    if signature is None:
        from cogframe.component_source import read_module

        static = read_module(module)
        found = static.components.get(attr) if static is not None else None
        signature = found.signature if found is not None else None
    return ComponentSpec(kind=kind, name=name, description=description, capabilities=capabilities or Capabilities(),
                         available=available, runtime_kwargs=tuple(runtime_kwargs), target=target,
                         signature=signature)


def lazy_components(module: str) -> list[ComponentSpec] | None:
    """The components ``module`` registers, read from its source without importing it.

    Reads every ``@component`` declaration and the ``register_components`` hook of ``module``
    (a plain ``return [Name, ...]``) with :func:`cogframe.component_source.read_module`. A
    third-party plugin can keep its entry-point module light with it::

        @hookimpl
        def register_components():
            return lazy_components("myplug.attention") or importlib.import_module("myplug.attention").COMPONENTS

    Returns:
        Lazy specs in the order the hook returns them, or None when the module cannot be read
        statically (then import it and register its objects as usual).
    """
    from cogframe.component_source import read_module

    static = read_module(module)
    if static is None or static.registered is None:
        return None
    specs = []
    for attr in static.registered:
        found = static.components.get(attr)
        if found is None:
            return None  # a name that is not a statically declared component: import instead
        try:
            capabilities = Capabilities(**found.capabilities)
        except TypeError:
            return None
        if found.kind not in KINDS:
            return None  # let the real decorator raise its ConfigError on import
        specs.append(ComponentSpec(kind=found.kind, name=found.name, description=found.description,
                                   capabilities=capabilities, available=found.available,
                                   runtime_kwargs=found.runtime_kwargs, target=f"{module}:{attr}",
                                   signature=found.signature))
    return specs


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

    def satisfying(self, kind: str, needs: Needs) -> list[str]:
        """Names of the ``kind`` components whose capabilities meet ``needs``, sorted.

        A component that meets them but cannot run here is listed as ``name (not available here)``.
        """
        out = []
        for spec in self.specs(kind):
            if not spec.unmet(needs):
                out.append(spec.name if spec.unavailable_reason() is None else f"{spec.name} (not available here)")
        return out

    def capability_problems(self, kind: str, name: str, needs: Needs, *, where: str) -> list[Problem]:
        """One :class:`Problem` when ``kind``/``name`` does not declare what ``needs`` asks, else none.

        The problem names the unmet constraints (what was asked, what the component declares) and
        the components of the kind that would satisfy all of ``needs``.

        Args:
            kind: One of :data:`KINDS`.
            name: A registered name (an unknown one is left to the name check).
            needs: What the caller will ask of the component.
            where: Recipe key of the node, e.g. ``model.attention.temporal``.
        """
        if name not in self._registry(kind):
            return []
        spec = self.get(kind, name)
        unmet = spec.unmet(needs)
        if not unmet:
            return []
        others = [n for n in self.satisfying(kind, needs) if n.split(" ")[0] != name]
        usable = [n for n in others if "(" not in n]
        if usable:
            fix = (f"{kind} components that meet {needs.describe()}: {', '.join(others)}; "
                   f"pick one, e.g. {where}.name={usable[0]}")
        elif others:
            fix = (f"only {', '.join(others)} meet {needs.describe()}: install what it needs, or change "
                   "the device/dtype/training setting")
        else:
            fix = (f"no registered {kind} meets {needs.describe()}: change the device/dtype/training "
                   "setting, or install a plugin that provides one (`cogframe plugins` shows the constraints)")
        return [Problem(where, f"{spec.label} (from {spec.origin}) does not support {'; '.join(unmet)}", fix)]

    def build(self, kind: str, node: Any, *, needs: Needs | None = None, where: str = "",
              **runtime_kwargs: Any) -> Any:
        """Builds the component a recipe node describes.

        Args:
            kind: One of :data:`KINDS`.
            node: A dict or omegaconf node; ``name`` picks the component, every other key is a keyword.
            needs: What the caller will ask of it; a constraint its capabilities do not declare
                is refused before it is built (see :meth:`capability_problems`).
            where: Recipe key of the node, for messages (default: the kind).
            **runtime_kwargs: Keywords supplied by the caller (e.g. ``layout=layout``); a recipe
                must not set these too.

        Returns:
            ``obj(**node_kwargs, **runtime_kwargs)``.

        Raises:
            UnknownComponentError: Unknown name (with the closest match).
            ConfigError: Missing ``name``, unknown/missing keyword, ill-typed value, a capability
                ``needs`` asks for and it does not declare, or construction failed with
                TypeError/ValueError.
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
        problems = spec.keyword_problems(kwargs, where=kind, supplied_later=runtime_kwargs)
        if needs is not None:
            problems += self.capability_problems(kind, name, needs, where=where or kind)
        if problems:
            raise problems_error(f"cannot build {spec.label}", problems)
        reason = spec.unavailable_reason()
        if reason is not None:
            raise UnavailableError(f"{spec.label} (from {spec.origin}) is not available here: {reason}")
        obj = spec.load()  # a lazy component's module is imported here, and only here
        try:
            return obj(**kwargs, **runtime_kwargs)
        except CogframeError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"building {spec.label} failed: {type(exc).__name__}: {exc}. Check the values given to it "
                "in the recipe (`cogframe validate` prints them)"
            ) from exc
