"""What a benchmark runs: turning targets and hooks into callables.

A **target** (the *runner*, the code whose throughput is measured) is one of:

* a callable, sync or async;
* ``'module:callable'``: ``module`` is imported and the dotted attribute path after the colon
  is looked up in it (``'json:dumps'``, ``'roost.xmpp.jid:JID.parse'``);
* any other string: Python source, compiled **once** into a function whose body is that
  source, then called on every iteration, e.g. ``'sum(range(100))'`` or
  ``'d = {}; d["k"] = 1'``. If the source uses ``await`` (or ``async for``/``async with``)
  the function is ``async def``. When the source is a single expression its value is returned,
  so an expression that produces an awaitable is awaited like an async callable's result.
  Names the source reads that are neither builtins nor bound by the source itself are
  imported as modules when it is compiled (``'math.sqrt(2)'``, ``'xml.etree.ElementTree.
  fromstring("<a/>")'``): a benchmark one-liner should not need an import statement, and
  doing it at compile time keeps the import out of the measured loop. A name that is not an
  importable module is an error at compile time, not a ``NameError`` mid-run.

A **hook** (setup or teardown) is a callable or a ``'module:callable'`` string; it may be sync
or async.

**State convention.** ``setup()`` is called with no argument; whatever it returns is the
*state*. The runner and ``teardown`` receive the state as their one positional argument when a
setup hook was given *and* their signature accepts one positional argument; otherwise they
are called with no argument. Without a setup hook, a runner or teardown that *requires* an
argument is an error. Compiled source sees the state as the name ``state`` (``None`` without a
setup hook). The rule is decided once, from the signature, so the measured loop never pays for
an ``inspect`` call or a ``try``.

This module has no asyncio or multiprocessing in it: worker processes import it to rebuild a
target from its string form.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roost.bench.errors import TargetError

# 'package.module:attr.path': identifiers only, so '{1: 2}' or 'x[1:2]' stay source code.
_IMPORT_SPEC = re.compile(r"^\s*([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)\s*$")
_STATE = "state"
_FILENAME = "<roost bench target>"

Target = Callable[..., Any] | str
Hook = Callable[..., Any] | str


@dataclass(frozen=True, slots=True)
class Resolved:
    """A callable ready to loop, and whether it takes the setup state as its argument."""

    name: str
    func: Callable[..., Any]
    takes_state: bool


def is_import_spec(text: str) -> bool:
    return _IMPORT_SPEC.match(text) is not None


def display_name(target: Target | None) -> str:
    """How reports name a target: the string as given, else ``module.qualname``."""
    if target is None:
        return "-"
    if isinstance(target, str):
        return target.strip()
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{module}.{qualname}" if isinstance(module, str) else qualname
    return repr(target)


def import_spec(spec: str) -> Callable[..., Any]:
    """Resolve ``'module:attr.path'`` to the callable it names."""
    match = _IMPORT_SPEC.match(spec)
    if match is None:
        raise TargetError(f"{spec!r} is not of the form 'module:callable'")
    module_name, path = match.groups()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r} (from {spec!r}): {exc}") from exc
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise TargetError(f"{spec!r}: {part!r} not found in {obj!r}") from exc
    if not callable(obj):
        raise TargetError(f"{spec!r} names {obj!r}, which is not callable")
    return obj  # type: ignore[no-any-return]


def importable_spec(target: Target) -> str:
    """The string form of a target, for a worker process to rebuild it.

    Strings pass through. A callable is accepted when ``module:qualname`` imports back to the
    very same object (a module-level function or class); lambdas, closures and bound methods
    cannot cross a process boundary this way and are rejected.
    """
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        spec = f"{module}:{qualname}"
        try:
            if import_spec(spec) is target:
                return spec
        except TargetError:
            pass
    raise TargetError(
        f"{display_name(target)} cannot be sent to a worker process: processes mode needs a "
        "'module:callable' string, a module-level function, or a source string"
    )


def _arity(func: Callable[..., Any]) -> tuple[bool, bool]:
    """Whether ``func`` can be called with (no argument, one positional argument)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        # Some builtins publish no signature; assume the common case, a plain call.
        return True, False
    try:
        signature.bind()
        none_ok = True
    except TypeError:
        none_ok = False
    try:
        signature.bind(None)
        one_ok = True
    except TypeError:
        one_ok = False
    return none_ok, one_ok


def _state_rule(name: str, func: Callable[..., Any], has_setup: bool, role: str) -> bool:
    none_ok, one_ok = _arity(func)
    if has_setup and one_ok:
        return True
    if none_ok:
        return False
    if has_setup:
        raise TargetError(f"{role} {name} must accept zero arguments or one (the setup state)")
    raise TargetError(f"{role} {name} needs an argument, but no setup hook provides one")


def resolve_target(target: Target, *, has_setup: bool) -> Resolved:
    name = display_name(target)
    if isinstance(target, str):
        func = import_spec(target) if is_import_spec(target) else compile_source(target)
    elif callable(target):
        func = target
    else:
        raise TargetError(f"a target must be a callable or a string, got {target!r}")
    return Resolved(name, func, _state_rule(name, func, has_setup, "target"))


def resolve_hook(hook: Hook, *, role: str, has_setup: bool) -> Resolved:
    """Resolve a setup (``role='setup'``) or teardown hook."""
    name = display_name(hook)
    if isinstance(hook, str):
        func = import_spec(hook)
    elif callable(hook):
        func = hook
    else:
        raise TargetError(f"{role} hook must be a callable or 'module:callable', got {hook!r}")
    if role == "setup":
        if not _arity(func)[0]:
            raise TargetError(f"setup hook {name} must be callable with no argument")
        return Resolved(name, func, False)
    return Resolved(name, func, _state_rule(name, func, has_setup, f"{role} hook"))


# --- compiling source strings -------------------------------------------------------------


class _Names(ast.NodeVisitor):
    """Collect what the source reads, what it binds, and dotted module-looking chains."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.bound: set[str] = {_STATE}
        self.chains: set[tuple[str, ...]] = set()
        self.is_async = False

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.loaded.add(node.id)
        else:
            self.bound.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name):
            self.chains.add((current.id, *reversed(parts)))
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.bound.add(node.arg)

    def visit_alias(self, node: ast.alias) -> None:
        self.bound.add(node.asname or node.name.split(".")[0])

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.bound.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = _define
    visit_AsyncFunctionDef = _define
    visit_ClassDef = _define

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> None:
        self.is_async = True
        self.generic_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.is_async = True
        self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.is_async = True
        self.generic_visit(node)

    def visit_comprehension(self, node: ast.comprehension) -> None:
        if node.is_async:
            self.is_async = True
        self.generic_visit(node)


def _import_free_names(source: str, names: _Names) -> dict[str, Any]:
    """Import the modules the source refers to; fail on any other unknown name."""
    namespace: dict[str, Any] = {}
    free = sorted(names.loaded - names.bound - set(dir(builtins)))
    for root in free:
        try:
            namespace[root] = importlib.import_module(root)
        except ImportError as exc:
            raise TargetError(
                f"{source!r}: name {root!r} is not defined and is not an importable module"
            ) from exc
        # 'xml.etree.ElementTree.fromstring': import the longest prefix that is a module, so
        # the attribute lookups in the loop find submodules already loaded.
        for chain in sorted(c for c in names.chains if c[0] == root):
            for end in range(2, len(chain) + 1):
                try:
                    importlib.import_module(".".join(chain[:end]))
                except ImportError:
                    break
    return namespace


def compile_source(source: str) -> Callable[..., Any]:
    """Compile source code into a function ``(state=None)`` that runs it once per call."""
    text = source.strip()
    if not text:
        raise TargetError("empty source string")
    try:
        tree = ast.parse(text, filename=_FILENAME, mode="exec")
    except SyntaxError as exc:
        raise TargetError(f"cannot compile {text!r}: {exc.msg} (column {exc.offset})") from exc
    names = _Names()
    names.visit(tree)
    body: list[ast.stmt] = list(tree.body)
    if len(body) == 1 and isinstance(body[0], ast.Expr):
        body = [ast.copy_location(ast.Return(value=body[0].value), body[0])]
    # Parse a template rather than constructing FunctionDef by hand: its constructor fields
    # change between Python versions (type_params arrived in 3.12).
    keyword = "async def" if names.is_async else "def"
    module = ast.parse(f"{keyword} __roost_bench__({_STATE}=None):\n    pass\n")
    function = module.body[0]
    assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
    function.body = body
    ast.fix_missing_locations(module)
    namespace = _import_free_names(text, names)
    try:
        code = compile(module, _FILENAME, "exec")
    except SyntaxError as exc:
        # What the parser accepts but the compiler rejects in a function body, e.g. 'nonlocal x'.
        raise TargetError(f"cannot compile {text!r}: {exc.msg}") from exc
    exec(code, namespace)
    func: Callable[..., Any] = namespace["__roost_bench__"]
    func.__qualname__ = func.__name__ = text
    return func
