"""Name -> plugin registries, plugin discovery, and declared parameters.

Every pluggable family uses one :class:`Registry`: tasks, datasets, prior architectures, solvers, executors and
the CLI's commands. Plugins register themselves with a decorator at import time (``@SOLVERS.register("aipo")``);
a registry made with a ``package`` imports every module of that package on first use (:func:`discover`), so that
dropping one new file into ``solvers/`` is all it takes to add a solver.

Every parameter a plugin takes (a solver's or task's ``parameters``, a dataset's ``options``, a prior
architecture's hyper-parameters) is declared as a :class:`Param`, and :func:`resolve_params` is the one place
where given values are checked against the declarations: name, type, integer size, range and choices.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
import pkgutil
import re
from dataclasses import dataclass, field

from bench.core.errors import UserError


@dataclass(frozen=True)
class Param:
    """A declared parameter of a plugin: its type, default, valid values, whether ``bench tune`` may search it,
    and a one-line doc (shown by ``list`` and in every error about the parameter).

    - ``default=None`` means "resolved later" (e.g. a per-task default); a value given for it is still checked
      against ``type``. A plain value in a ``parameters`` dict is shorthand for ``Param(type(value), value)``.
    - ``range``: the valid numbers, ``">0"``, ``">=1"``, ``"<=5"``, ``"(0,1)"``, ``"(0,1]"``, ``"[1,64]"`` (a value
      must also be finite); ``choices``: the valid values (``("adam", "gd")``). ``None`` values are not checked.
    - ``protocols`` maps another protocol's name (:mod:`bench.core.protocols`) to the parameter's value under it (e.g.
      ``{"paper": 0.0}``); ``default`` is the value under the default protocol.
    """

    type: type
    default: object = None
    range: str | None = None
    choices: tuple = ()
    doc: str = ""
    tunable: bool = False
    protocols: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if self.range is not None:
            _bounds(self.range)   # a malformed range fails when the plugin is imported

    def valid(self) -> str | None:
        """What values are valid, in words (``"> 0"``, ``"in (0, 1]"``, ``"one of adam, gd"``), or None."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.range is not None:
            lo, lo_in, hi, hi_in = _bounds(self.range)
            if lo is not None and hi is not None:
                return f"in {'[' if lo_in else '('}{_num(lo)}, {_num(hi)}{']' if hi_in else ')'}"
            if lo is not None:
                return f"{'>=' if lo_in else '>'} {_num(lo)}"
            return f"{'<=' if hi_in else '<'} {_num(hi)}"
        return None

    def accepts(self, value) -> bool:
        """Whether ``value`` lies in the declared range and choices (``None`` always does)."""
        if value is None:
            return True
        if self.choices and value not in self.choices:
            return False
        if self.range is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
            lo, lo_in, hi, hi_in = _bounds(self.range)
            if lo is not None and not (value >= lo if lo_in else value > lo):
                return False
            if hi is not None and not (value <= hi if hi_in else value < hi):
                return False
        return True


_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_ONE_SIDED = re.compile(rf"^\s*(>=|>|<=|<){_NUMBER}$")
_INTERVAL = re.compile(rf"^\s*([(\[]){_NUMBER},{_NUMBER}([)\]])\s*$")


@functools.lru_cache(maxsize=None)
def _bounds(rule: str) -> tuple:
    """``(lo, lo_inclusive, hi, hi_inclusive)`` of a range rule (None: unbounded); ValueError if malformed."""
    m = _ONE_SIDED.match(rule)
    if m:
        op, v = m.group(1), float(m.group(2))
        return (v, op == ">=", None, False) if op.startswith(">") else (None, False, v, op == "<=")
    m = _INTERVAL.match(rule)
    if m and float(m.group(2)) <= float(m.group(3)):
        return float(m.group(2)), m.group(1) == "[", float(m.group(3)), m.group(4) == "]"
    raise ValueError(f"malformed parameter range {rule!r}; expected e.g. '>0', '>=1', '(0,1]' or '[1,64]'")


def _num(v: float) -> str:
    """A bound as messages write it: ``1``, not ``1.0``."""
    return str(int(v)) if float(v).is_integer() else str(v)


def as_param(declared) -> Param:
    """``declared`` as a :class:`Param` (a plain default value becomes ``Param(type(value), value)``)."""
    if isinstance(declared, Param):
        return declared
    return Param(type(declared) if declared is not None else object, declared)


def as_params(declared: dict) -> dict:
    """Every entry of a ``parameters`` dict as a :class:`Param`, in declared order."""
    return {k: as_param(v) for k, v in declared.items()}


def defaults(declared: dict) -> dict:
    """The default value of every declared parameter (``Param`` or plain value), in declared order."""
    return {k: as_param(v).default for k, v in declared.items()}


def protocol_values(declared: dict, protocol: str) -> dict:
    """The parameters whose value under ``protocol`` differs from their default (``Param.protocols``)."""
    return {k: as_param(v).protocols[protocol] for k, v in declared.items()
            if protocol in as_param(v).protocols}


class Registry:
    """Name -> plugin. ``package``: the package whose modules :func:`discover` imports on first use (only those
    whose name starts with ``prefix``: ``Registry("executor", "bench.run", "executor_")`` finds ``bench/run/executor_*.py``).
    """

    def __init__(self, kind: str, package: str | None = None, prefix: str = ""):
        self.kind = kind
        self.package = package
        self.prefix = prefix
        self._items: dict[str, object] = {}
        self._discovered = package is None

    def register(self, name: str):
        """Decorator: register the decorated object as ``name`` (and set its ``name`` attribute)."""
        def deco(obj):
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            try:
                obj.name = name
            except (AttributeError, TypeError):
                pass
            return obj
        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (no error if it is not registered)."""
        self._items.pop(name, None)

    @contextlib.contextmanager
    def temporarily(self, name: str, obj):
        """Register ``obj`` as ``name`` for the duration of a ``with`` block (tests, in-process plugins); the name
        is unregistered afterwards. Discovery runs first, so a temporary entry never hides a real plugin's
        registration order."""
        self._ensure()
        self.register(name)(obj)
        try:
            yield obj
        finally:
            self.unregister(name)

    def _ensure(self):
        if not self._discovered:
            self._discovered = True
            discover(self.package, self.prefix)

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._items)

    def get(self, name: str):
        self._ensure()
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name):
        self._ensure()
        return name in self._items

    def items(self):
        self._ensure()
        return sorted(self._items.items())


def import_plugins(modules) -> tuple:
    """Import the ``--plugin`` modules (each registers what it declares); a module that cannot be imported or
    fails while importing is one UserError naming it. Returns the module names (worker processes import them too)."""
    for m in modules or ():
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise UserError(f"--plugin {m!r} cannot be imported: {e}") from None
        except Exception as e:  # noqa: BLE001 -- a plugin's own error (SyntaxError, NameError, ...) in one line
            where = f" ({e.filename}:{e.lineno})" if isinstance(e, SyntaxError) else ""
            raise UserError(f"--plugin {m!r} failed while importing: {type(e).__name__}: {e}{where}") from None
    return tuple(modules or ())


def discover(package: str, prefix: str = "") -> None:
    """Import every module of ``package`` (e.g. ``bench.solvers``) whose name starts with ``prefix`` (modules
    starting with ``_`` excepted), so that its plugins register themselves."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith(prefix) and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[(.*)\])?\s*$")


def _parse_value(text: str):
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip("'\"")


def parse_spec(spec: str) -> tuple[str, dict]:
    """Parse ``"aipo[alpha=0.01,K=20]"`` into ``("aipo", {"alpha": 0.01, "K": 20})``."""
    m = _SPEC.match(spec)
    if not m:
        raise UserError(f"cannot parse {spec!r}; expected NAME or NAME[key=value,...]")
    name, body = m.group(1), m.group(2)
    params = {}
    if body:
        for part in body.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(f"cannot parse parameter {part!r} in {spec!r}; expected key=value")
            k, v = part.split("=", 1)
            params[k.strip()] = _parse_value(v)
    return name, params


def format_spec(name: str, params: dict) -> str:
    """Inverse of :func:`parse_spec` for the *overridden* parameters only (stable order)."""
    if not params:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in sorted(params.items()))}]"


def resolve_params(kind: str, name: str, declared: dict, overrides: dict) -> dict:
    """Merge ``overrides`` into the declared defaults and check every value against its :class:`Param`: the one
    place parameters are validated. Unknown names are refused; a given value is cast to its default's type (an
    integer-valued float to int, a number to float); a parameter whose default is ``None`` keeps the value as
    given, after checking it against the declared ``type``; then every value that is not ``None`` must lie in
    the declared ``range`` and ``choices``. Each failure is one UserError naming the parameter, the bad value and
    what is valid."""
    params = as_params(declared)
    for k in overrides:
        if k not in params:
            raise UserError(f"unknown parameter {k!r} for {kind} {name!r}; valid: {', '.join(sorted(params)) or 'none'}")
    out = {}
    for k, p in params.items():
        v = _cast(kind, name, k, p, overrides[k]) if k in overrides else p.default
        if not p.accepts(v):
            raise _invalid(kind, name, k, p, p.valid(), repr(v))
        out[k] = v
    return out


MAX_INT = 2 ** 31 - 1   # integer parameters (step counts, sizes): anything larger overflows columns, not a setting


def _invalid(kind: str, name: str, key: str, p: Param, want: str, got: str) -> UserError:
    """The one-line error for a bad value of parameter ``key``: what is valid, what was given, and its doc."""
    doc = f" ({p.doc})" if p.doc else ""
    return UserError(f"parameter {key!r} of {kind} {name!r} must be {want}, got {got}{doc}")


def _cast(kind: str, name: str, key: str, p: Param, v):
    """``v`` checked against (and cast to) the declared type of ``p``."""
    d = p.default
    if isinstance(d, bool):
        if not isinstance(v, bool):
            raise _invalid(kind, name, key, p, "true/false", repr(v))
    elif isinstance(d, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise _invalid(kind, name, key, p, "an integer", repr(v))
        _check_int_size(kind, name, key, p, v)
    elif isinstance(d, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _invalid(kind, name, key, p, "a number", repr(v))
        v = float(v)
    elif d is None:
        _check_type(kind, name, key, p, v)
    elif isinstance(d, str) and not isinstance(v, str):
        v = str(v)
    return v


def _check_int_size(kind: str, name: str, key: str, p: Param, v: int) -> None:
    """Raise UserError for an integer parameter beyond ±MAX_INT (``aipo[K=1e30]``), before any work."""
    if abs(v) > MAX_INT:
        got = f"{float(v):.3g}" if abs(v) < 1e300 else f"a {len(str(abs(v)))}-digit number"
        raise _invalid(kind, name, key, p, f"an integer of magnitude at most {MAX_INT:,}", got)


def _check_type(kind: str, name: str, key: str, p: Param, v) -> None:
    """Raise UserError if ``v`` is not a value of the declared type ``p.type`` (value kept as given)."""
    typ = p.type
    if typ is bool:
        ok, want = isinstance(v, bool), "true/false"
    elif typ is int:
        ok, want = (not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer())),
                    "an integer")
    elif typ is float:
        ok, want = not isinstance(v, bool) and isinstance(v, (int, float)), "a number"
    elif typ is str:
        ok, want = isinstance(v, str), "a string"
    else:
        return
    if not ok:
        raise _invalid(kind, name, key, p, f"{want} ({typ.__name__})", repr(v))
    if typ is int:
        _check_int_size(kind, name, key, p, int(v))
