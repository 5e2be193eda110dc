"""Name -> class registries and plugin discovery.

Every pluggable family (tasks, datasets, priors, solvers) uses one :class:`Registry`. Plugins register themselves
with a decorator at import time; :func:`discover` imports every module of a package so that dropping one new file
into ``solvers/`` is all it takes to add a solver.
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
from dataclasses import dataclass, field

from bench.errors import UserError


@dataclass(frozen=True)
class Param:
    """A declared parameter of a plugin (solver or task): its type, default, whether ``bench tune`` may search it,
    and a one-line doc. ``default=None`` means "resolved later" (e.g. a per-task default); a value given for it
    is still checked against ``type``. A plain value in a ``parameters`` dict is shorthand for
    ``Param(type(value), value)``.

    ``default`` is the value under the default protocol; ``protocols`` maps another protocol's name
    (:mod:`bench.protocols`) to the parameter's value under it (e.g. ``{"paper": 0.0}``)."""

    type: type
    default: object = None
    tunable: bool = False
    doc: str = ""
    protocols: dict = field(default_factory=dict, hash=False)


def as_param(declared) -> Param:
    """``declared`` as a :class:`Param` (a plain default value becomes ``Param(type(value), value)``)."""
    if isinstance(declared, Param):
        return declared
    return Param(type(declared) if declared is not None else object, declared)


def defaults(declared: dict) -> dict:
    """The default value of every declared parameter (``Param`` or plain value), in declared order."""
    return {k: as_param(v).default for k, v in declared.items()}


def protocol_values(declared: dict, protocol: str) -> dict:
    """The parameters whose value under ``protocol`` differs from their default (``Param.protocols``)."""
    return {k: as_param(v).protocols[protocol] for k, v in declared.items()
            if protocol in as_param(v).protocols}


class Registry:
    """Name -> plugin class. ``package``: the package whose modules :func:`discover` imports on first use."""

    def __init__(self, kind: str, package: str | None = None):
        self.kind = kind
        self.package = package
        self._items: dict[str, object] = {}
        self._discovered = package is None

    def register(self, name: str):
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
            discover(self.package)

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


def discover(package: str) -> None:
    """Import every module of ``package`` (e.g. ``bench.solvers``) so that its plugins register themselves."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
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
    """Merge overrides into declared defaults, rejecting unknown keys and casting to the default's type.

    ``declared`` maps names to :class:`Param` or to plain defaults. A parameter whose default is ``None`` keeps the
    value as given, after checking it against the declared ``Param.type`` (when one is declared)."""
    params = {k: as_param(v) for k, v in declared.items()}
    out = {k: p.default for k, p in params.items()}
    for k, v in overrides.items():
        if k not in params:
            raise UserError(f"unknown parameter {k!r} for {kind} {name!r}; valid: {', '.join(sorted(params)) or 'none'}")
        d = params[k].default
        if isinstance(d, bool):
            if not isinstance(v, bool):
                raise UserError(f"parameter {k!r} of {kind} {name!r} must be true/false, got {v!r}")
        elif isinstance(d, int) and not isinstance(d, bool):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                raise UserError(f"parameter {k!r} of {kind} {name!r} must be an integer, got {v!r}")
            _check_int_size(kind, name, k, v)
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"parameter {k!r} of {kind} {name!r} must be a number, got {v!r}")
            v = float(v)
        elif d is None:
            _check_type(kind, name, k, params[k].type, v)
        elif isinstance(d, str) and not isinstance(v, str):
            v = str(v)
        out[k] = v
    return out


MAX_INT = 2 ** 31 - 1   # integer parameters (step counts, sizes): anything larger overflows columns, not a setting


def _check_int_size(kind: str, name: str, key: str, v: int) -> None:
    """Raise UserError for an integer parameter beyond ±MAX_INT (``aipo[K=1e30]``), before any work."""
    if abs(v) > MAX_INT:
        got = f"{float(v):.3g}" if abs(v) < 1e300 else f"a {len(str(abs(v)))}-digit number"
        raise UserError(f"parameter {key!r} of {kind} {name!r} must be an integer of magnitude at most {MAX_INT:,}, "
                        f"got {got}")


def _check_type(kind: str, name: str, key: str, typ, v) -> None:
    """Raise UserError if ``v`` is not a value of the declared type ``typ`` (value kept as given)."""
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
        raise UserError(f"parameter {key!r} of {kind} {name!r} must be {want} ({typ.__name__}), got {v!r}")
    if typ is int:
        _check_int_size(kind, name, key, int(v))
