"""Modules imported on first use, so that listing plugins (``bench list solvers``) needs no torch.

``torch = lazy_module("torch")`` at the top of a plugin file binds a stand-in that imports the real module the first
time one of its attributes is read and from then on holds the real module's namespace, so ``torch.zeros(...)`` costs
one dict lookup, as with a plain import. Only attribute access is deferred: code that runs at import time must not
touch the module (class bodies, default arguments, module constants).
"""
from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str):
        real = self.__dict__.get("_real")
        if real is None:   # first use: import, and copy the namespace in once (later reads are dict hits)
            real = importlib.import_module(self.__name__)
            self.__dict__.update(vars(real), _real=real)
        return getattr(real, attr)


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` that imports it when an attribute is first read."""
    return _LazyModule(name)
