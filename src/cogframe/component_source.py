"""Reads ``@component`` declarations from a module's source text, without importing the module.

This is what lets ``cogframe ls``, ``plugins``, ``validate`` and ``cp`` start without torch: every
built-in component module imports torch at its top, but what the registry needs before a component
is *built* (kind, name, description, capabilities, availability check, runtime keywords and the
keyword signature) is written literally in the module. :func:`read_module` parses the file with
:mod:`ast` and evaluates only literals, ``Capabilities(...)`` calls with literal arguments, and
annotations made of builtins and ``typing``/``pathlib``/``collections.abc`` names the module
imports. The implementation is imported on first build (:meth:`cogframe.registry.ComponentSpec.load`).

Anything this reader does not understand makes it answer None for the whole module (a decorator
argument that is not a literal, a class with bases or extra decorators, a signature it cannot
read), and the caller then imports the module as before: static reading only ever saves time, it
never changes what is registered. ``tests/test_registry.py`` checks, for every built-in module,
that the static declarations equal the imported ones.

This module imports nothing of cogframe but the error types, and no torch.
"""

from __future__ import annotations

import ast
import builtins
import collections.abc
import importlib
import importlib.util
import inspect
import pathlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StaticComponent", "StaticModule", "StaticDefault", "read_module", "module_source"]

# Modules whose names may appear in keyword annotations; importing them is cheap (stdlib).
_ANNOTATION_MODULES = ("typing", "pathlib", "collections.abc")
_BUILTIN_TYPES = {name: getattr(builtins, name)
                  for name in ("int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "set",
                               "frozenset", "object", "type")}


# Bases outside the readable sources whose attributes are known: they define no ``runtime_kwargs``
# and their ``__init__`` only matters when no class below them defines one (then: import).
_OPAQUE_BASES = frozenset({"torch.nn.Module", "torch.nn.modules.module.Module"})
_OPAQUE = object()


class _NotStatic(Exception):
    """Raised internally when a construct cannot be read without importing."""


@dataclass(frozen=True)
class StaticDefault:
    """A keyword default that is not a literal (e.g. a module constant); only its presence matters.

    Attributes:
        source: The default's source text, shown in listings instead of its value.
    """

    source: str

    def __repr__(self) -> str:
        return self.source


@dataclass(frozen=True)
class StaticComponent:
    """One ``@component``-decorated class or function, as read from source.

    Attributes:
        attribute: The top-level name it is defined under.
        kind: The component kind.
        name: The component name.
        description: The explicit description, else the first docstring line.
        capabilities: Keyword arguments of the ``Capabilities(...)`` call (empty: none given).
        available: ``"module:function"`` of the availability check, or None.
        runtime_kwargs: Keywords the task supplies at build time.
        signature: The keyword signature (without ``self``), annotations resolved where possible.
    """

    attribute: str
    kind: str
    name: str
    description: str
    capabilities: dict[str, Any]
    available: str | None
    runtime_kwargs: tuple[str, ...]
    signature: inspect.Signature


@dataclass(frozen=True)
class StaticModule:
    """What :func:`read_module` found in one module.

    Attributes:
        module: The dotted module name.
        components: The decorated objects, by attribute name.
        hooks: Names of the module's top-level ``@hookimpl`` functions.
        registered: The names ``register_components`` returns, in order, when its body is a plain
            ``return [Name, ...]``; None otherwise.
    """

    module: str
    components: dict[str, StaticComponent] = field(default_factory=dict)
    hooks: tuple[str, ...] = ()
    registered: tuple[str, ...] | None = None


def module_source(module: str) -> tuple[str, str] | None:
    """``(path, text)`` of a module's source file, located without executing the module.

    Parent packages are imported (``importlib.util.find_spec`` needs them); for cogframe's own
    plugins that is ``cogframe.plugins``, which is light. Returns None when the module is not found
    or has no Python source (an extension module, a zip without sources).
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        return spec.origin, pathlib.Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return None


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from X import ...`` (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.rsplit(".", node.level)[0] if module.count(".") >= node.level else ""
    return f"{package}.{node.module}" if node.module else package


class _ModuleReader:
    def __init__(self, module: str, tree: ast.Module) -> None:
        self.module = module
        self.tree = tree
        self.imported: dict[str, str] = {}  # local name -> "module:attribute"
        self.defined: dict[str, ast.AST] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                source = _resolve_from(module, node)
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = f"{source}:{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imported[alias.asname] = f"{alias.name}:"
                    else:  # `import a.b` binds `a`
                        self.imported[alias.name.split(".")[0]] = f"{alias.name.split('.')[0]}:"
            elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                self.defined[node.name] = node
        self.annotation_names = dict(_BUILTIN_TYPES)
        self.annotation_names["None"] = None
        for local, ref in self.imported.items():
            source, attr = ref.split(":")
            if source in _ANNOTATION_MODULES:
                mod = importlib.import_module(source)
                if not attr:
                    self.annotation_names[local] = mod
                elif hasattr(mod, attr):
                    self.annotation_names[local] = getattr(mod, attr)
            elif source == "collections" and attr == "abc":
                self.annotation_names[local] = collections.abc

    # ------------------------------------------------------------------ names and decorators
    def _is_name_of(self, node: ast.AST, module: str, attr: str) -> bool:
        """Whether ``node`` is ``attr`` of ``module``: ``attr`` from-imported, or ``alias.attr``."""
        if isinstance(node, ast.Name):
            return self.imported.get(node.id) == f"{module}:{attr}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr == attr:
            parent, _, last = module.rpartition(".")
            return self.imported.get(node.value.id) in (f"{module}:", f"{parent}:{last}")
        return False

    def _reference(self, node: ast.AST) -> str:
        """``"module:function"`` of a name used as ``available=``."""
        if isinstance(node, ast.Name):
            if node.id in self.imported:
                ref = self.imported[node.id]
                if ref.endswith(":"):
                    raise _NotStatic("a module object, not a function")
                return ref
            if isinstance(self.defined.get(node.id), ast.FunctionDef):
                return f"{self.module}:{node.id}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            return node.value
        raise _NotStatic(f"available= is not a module-level function: {ast.unparse(node)}")

    def _literal(self, node: ast.AST, env: dict[str, Any] | None = None, depth: int = 0) -> Any:
        """Evaluates a constant expression: literals, f-strings, ``+``, module constants, and calls
        of module-level functions whose body is one ``return <constant expression>``."""
        if depth > 20:
            raise _NotStatic("constant expression nested too deeply")
        ev = lambda n: self._literal(n, env, depth + 1)  # noqa: E731
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = [ev(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else (set(items) if isinstance(node, ast.Set) else items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _NotStatic("dict unpacking")
            return {ev(k): ev(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.JoinedStr):
            return "".join(ev(part) if isinstance(part, ast.Constant) else ev(part) for part in node.values)
        if isinstance(node, ast.FormattedValue):
            value = ev(node.value)
            value = {-1: value, 115: str(value), 114: repr(value), 97: ascii(value)}[node.conversion]
            return format(value, ev(node.format_spec) if node.format_spec is not None else "")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = ev(node.left), ev(node.right)
            if type(left) is not type(right) or not isinstance(left, (str, tuple, list, int, float)):
                raise _NotStatic("+ of other than two strings, tuples, lists or numbers")
            return left + right
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = ev(node.operand)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise _NotStatic("- of a non-number")
            return -value
        if isinstance(node, ast.Name):
            if env is not None and node.id in env:
                return env[node.id]
            return self._constant(node.id, depth)
        if isinstance(node, ast.Call):
            return self._call(node, env, depth)
        raise _NotStatic(f"not a constant expression: {ast.unparse(node)}")

    def _constant(self, name: str, depth: int) -> Any:
        """A module-level name bound once to a constant expression (here or where it is imported from)."""
        if name in self.imported:
            source, _, attr = self.imported[name].partition(":")
            if source and attr:
                return _reader(source)._constant(attr, depth + 1)
            raise _NotStatic(f"{name} is a module")
        bound = [stmt for stmt in self.tree.body
                 if isinstance(stmt, (ast.Assign, ast.AnnAssign))
                 and any(isinstance(t, ast.Name) and t.id == name
                         for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]))]
        if len(bound) != 1 or bound[0].value is None:
            raise _NotStatic(f"{name} is not a module constant")
        stmt = bound[0]
        if isinstance(stmt, ast.Assign) and len(stmt.targets) != 1:
            raise _NotStatic(f"{name} is assigned in a chain")
        return self._literal(stmt.value, None, depth + 1)

    def _call(self, node: ast.Call, env: dict[str, Any] | None, depth: int) -> Any:
        """Evaluates ``f(args)`` for a module-level ``def f(...): return <constant expression>``."""
        if not isinstance(node.func, ast.Name):
            raise _NotStatic(f"call of {ast.unparse(node.func)}")
        reader, name = self, node.func.id
        if name in self.imported:
            source, _, attr = self.imported[name].partition(":")
            if not (source and attr):
                raise _NotStatic(f"call of module {name}")
            reader, name = _reader(source), attr
        fn = reader.defined.get(name)
        if not isinstance(fn, ast.FunctionDef) or fn.decorator_list:
            raise _NotStatic(f"{name} is not a plain module-level function")
        a = fn.args
        if a.posonlyargs or a.vararg or a.kwarg or a.kwonlyargs or any(k.arg is None for k in node.keywords):
            raise _NotStatic(f"{name} takes more than plain arguments")
        body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
        if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
            raise _NotStatic(f"{name} is not a single return")
        params = [arg.arg for arg in a.args]
        if len(node.args) > len(params):
            raise _NotStatic(f"too many arguments for {name}")
        ev = lambda n: self._literal(n, env, depth + 1)  # noqa: E731
        bound = dict(zip(params, (ev(arg) for arg in node.args)))
        for keyword in node.keywords:
            if keyword.arg not in params or keyword.arg in bound:
                raise _NotStatic(f"bad keyword {keyword.arg} for {name}")
            bound[keyword.arg] = ev(keyword.value)
        defaults = dict(zip(params[len(params) - len(a.defaults):], a.defaults))
        for param in params:
            if param not in bound:
                if param not in defaults:
                    raise _NotStatic(f"missing argument {param} for {name}")
                bound[param] = reader._literal(defaults[param], None, depth + 1)
        return reader._literal(body[0].value, bound, depth + 1)

    def _capabilities(self, node: ast.AST) -> dict[str, Any]:
        if isinstance(node, ast.Constant) and node.value is None:
            return {}
        if not (isinstance(node, ast.Call) and self._is_name_of(node.func, "cogframe.registry", "Capabilities")
                and not node.args and all(k.arg for k in node.keywords)):
            raise _NotStatic("capabilities= is not Capabilities(<literal keywords>)")
        return {k.arg: self._literal(k.value) for k in node.keywords}

    def _component_call(self, node: ast.AST) -> ast.Call | None:
        if isinstance(node, ast.Call) and self._is_name_of(node.func, "cogframe.registry", "component"):
            return node
        return None

    # ------------------------------------------------------------------ signatures
    def _annotation(self, node: ast.AST | None) -> Any:
        if node is None:
            return inspect.Parameter.empty
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return inspect.Parameter.empty
        try:
            code = compile(ast.Expression(node), "<annotation>", "eval")
            # Only the names collected above are visible; anything else (a torch type, a class of
            # the module) is a NameError, and the keyword's type is simply not checked.
            return eval(code, {"__builtins__": {}}, dict(self.annotation_names))  # noqa: S307
        except Exception:
            return inspect.Parameter.empty

    def _default(self, node: ast.AST) -> Any:
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return StaticDefault(ast.unparse(node))

    def _signature(self, fn: ast.FunctionDef, drop_first: bool) -> inspect.Signature:
        a = fn.args
        P = inspect.Parameter
        positional = [*a.posonlyargs, *a.args]
        kinds = [P.POSITIONAL_ONLY] * len(a.posonlyargs) + [P.POSITIONAL_OR_KEYWORD] * len(a.args)
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        params = []
        for arg, kind, default in zip(positional, kinds, defaults):
            params.append(P(arg.arg, kind, default=P.empty if default is None else self._default(default),
                            annotation=self._annotation(arg.annotation)))
        if drop_first:
            if not params:
                raise _NotStatic("__init__ without self")
            params = params[1:]
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL, annotation=self._annotation(a.vararg.annotation)))
        for arg, default in zip(a.kwonlyargs, a.kw_defaults):
            params.append(P(arg.arg, P.KEYWORD_ONLY, default=P.empty if default is None else self._default(default),
                            annotation=self._annotation(arg.annotation)))
        if a.kwarg:
            params.append(P(a.kwarg.arg, P.VAR_KEYWORD, annotation=self._annotation(a.kwarg.annotation)))
        return inspect.Signature(params)

    def _base_class(self, node: ast.AST) -> tuple["_ModuleReader", ast.ClassDef] | None:
        """The ClassDef of a base (in this module or in the module it is imported from); None for object."""
        if isinstance(node, ast.Name) and node.id == "object":
            return None
        if isinstance(node, ast.Name) and isinstance(self.defined.get(node.id), ast.ClassDef):
            return self, self.defined[node.id]  # type: ignore[return-value]
        if isinstance(node, ast.Name) and node.id in self.imported:
            source, attr = self.imported[node.id].split(":")
            if source and attr:
                reader = _reader(source)
                if isinstance(reader.defined.get(attr), ast.ClassDef):
                    return reader, reader.defined[attr]  # type: ignore[return-value]
        if self._qualified(node) in _OPAQUE_BASES:
            return _OPAQUE
        raise _NotStatic(f"base class {ast.unparse(node)} is not readable from source")

    def _qualified(self, node: ast.AST) -> str:
        """The dotted name ``node`` refers to through this module's imports (``""`` if unknown)."""
        if isinstance(node, ast.Name):
            source, _, attr = self.imported.get(node.id, ":").partition(":")
            return f"{source}.{attr}" if source and attr else source
        if isinstance(node, ast.Attribute):
            parent = self._qualified(node.value)
            return f"{parent}.{node.attr}" if parent else ""
        return ""

    def _class_parts(self, cls: ast.ClassDef) -> tuple[inspect.Signature, tuple[str, ...] | None, str | None]:
        """``(signature, runtime_kwargs, docstring)`` of a class, following single inheritance."""
        doc = ast.get_docstring(cls, clean=True)
        reader, current = self, cls
        init: tuple[_ModuleReader, ast.FunctionDef] | None = None
        runtime: tuple[str, ...] | None = None
        found_runtime = False
        for _ in range(32):  # the chain of bases, as Python's attribute lookup walks it
            if current.keywords or len(current.bases) > 1:
                raise _NotStatic(f"class {current.name} has a metaclass or several bases")
            if current is not cls and not all(reader._component_call(d) for d in current.decorator_list):
                raise _NotStatic(f"base class {current.name} has decorators besides @component")
            for stmt in current.body:
                if isinstance(stmt, ast.FunctionDef) and stmt.name in ("__new__", "__init_subclass__"):
                    raise _NotStatic(f"class {current.name} defines {stmt.name}")
                if isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__" and init is None:
                    if stmt.decorator_list:
                        raise _NotStatic("decorated __init__")
                    init = (reader, stmt)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("__init__", "__signature__", "__new__"):
                        raise _NotStatic(f"class {current.name} assigns {target.id}")
                    if isinstance(target, ast.Name) and target.id == "runtime_kwargs" and not found_runtime:
                        if stmt.value is None:
                            raise _NotStatic("runtime_kwargs without a value")
                        runtime, found_runtime = tuple(reader._literal(stmt.value)), True
            if not current.bases:
                break
            base = reader._base_class(current.bases[0])
            if base is None:
                break
            if base is _OPAQUE:
                if init is None:
                    raise _NotStatic(f"class {cls.name} inherits __init__ from {ast.unparse(current.bases[0])}")
                break
            reader, current = base
        else:
            raise _NotStatic(f"class {cls.name}: inheritance too deep")
        signature = init[0]._signature(init[1], drop_first=True) if init is not None else inspect.Signature()
        return signature, runtime, doc

    # ------------------------------------------------------------------ components
    def component(self, node: ast.ClassDef | ast.FunctionDef) -> StaticComponent | None:
        calls = [self._component_call(d) for d in node.decorator_list]
        if not any(calls):
            return None
        if len(node.decorator_list) != 1:
            raise _NotStatic(f"{node.name} has other decorators besides @component")
        call = calls[0]
        if len(call.args) != 2 or any(k.arg is None for k in call.keywords):
            raise _NotStatic("@component needs literal (kind, name) and keywords")
        kind, name = (self._literal(arg) for arg in call.args)
        options = {k.arg: k.value for k in call.keywords}
        unknown = set(options) - {"description", "capabilities", "available", "runtime_kwargs"}
        if unknown:
            raise _NotStatic(f"unknown @component keywords {sorted(unknown)}")
        if isinstance(node, ast.ClassDef):
            signature, runtime, doc = self._class_parts(node)
        else:
            if isinstance(node, ast.AsyncFunctionDef):
                raise _NotStatic("async factory")
            signature, runtime, doc = self._signature(node, drop_first=False), None, ast.get_docstring(node, clean=True)
        description = options.get("description")
        description = self._literal(description) if description is not None else None
        if description is None:
            description = doc.splitlines()[0] if doc and doc.strip() else ""
        if "runtime_kwargs" in options and not (isinstance(options["runtime_kwargs"], ast.Constant)
                                                and options["runtime_kwargs"].value is None):
            runtime = tuple(self._literal(options["runtime_kwargs"]))
        available = options.get("available")
        if available is not None and not (isinstance(available, ast.Constant) and available.value is None):
            available = self._reference(available)
        else:
            available = None
        capabilities = self._capabilities(options["capabilities"]) if "capabilities" in options else {}
        if not isinstance(kind, str) or not isinstance(name, str) or not isinstance(description, str):
            raise _NotStatic("kind, name and description must be strings")
        return StaticComponent(node.name, kind, name, description, capabilities, available,
                               tuple(runtime or ()), signature)

    def read(self) -> StaticModule:
        components: dict[str, StaticComponent] = {}
        hooks: list[str] = []
        registered = None
        for node in self.tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                found = self.component(node)
                if found is not None:
                    components[node.name] = found
            if isinstance(node, ast.FunctionDef) and any(
                    self._is_name_of(d, "cogframe.hookspecs", "hookimpl")
                    or (isinstance(d, ast.Call) and self._is_name_of(d.func, "cogframe.hookspecs", "hookimpl"))
                    for d in node.decorator_list):
                hooks.append(node.name)
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    body = body[1:]  # the docstring
                if node.name == "register_components" and not node.args.args and len(body) == 1:
                    stmt = body[0]
                    if (isinstance(stmt, ast.Return) and isinstance(stmt.value, (ast.List, ast.Tuple))
                            and all(isinstance(e, ast.Name) for e in stmt.value.elts)):
                        registered = tuple(e.id for e in stmt.value.elts)
        return StaticModule(self.module, components, tuple(hooks), registered)


_READERS: dict[str, "_ModuleReader"] = {}


def _reader(module: str) -> _ModuleReader:
    """The parsed reader of ``module`` (cached per process), or _NotStatic."""
    if module not in _READERS:
        found = module_source(module)
        if found is None:
            raise _NotStatic(f"no Python source for module {module}")
        path, text = found
        try:
            _READERS[module] = _ModuleReader(module, ast.parse(text, filename=path))
        except SyntaxError as exc:
            raise _NotStatic(f"{path}: {exc}") from exc
    return _READERS[module]


def read_module(module: str) -> StaticModule | None:
    """Reads the ``@component`` declarations and hooks of ``module`` from its source.

    Args:
        module: A dotted module name, e.g. ``cogframe.plugins.attention_swin3d``.

    Returns:
        The declarations, or None when the module cannot be read statically (no source, a syntax
        error, or any declaration that is not literal); the caller should then import it.
    """
    try:
        return _reader(module).read()
    except (_NotStatic, ValueError, TypeError):
        return None
