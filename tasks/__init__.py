"""Tasks: the inverse problems (forward operator, noise model, projection), one plugin file each.

Importable as ``bench.tasks``. :mod:`bench.tasks.base` holds :class:`Problem`, the :class:`Task` contract and the
``TASKS`` registry; every other module of this folder is a task that registers itself (found by discovery, so a
new task is one new file here, or a ``--plugin`` module). The task classes and their constants are re-exported
lazily (importing this package does not import the task files).
"""
from __future__ import annotations

import importlib

from bench.tasks.base import TASKS, Problem, Task, make_task

__all__ = ["TASKS", "Problem", "Task", "make_task", "Denoise", "CompressedSensing", "Inpaint",
           "CS_FRACTION_HIGH", "CS_FRACTION_LOW"]

_LAZY = {"Denoise": "denoise", "CompressedSensing": "cs", "Inpaint": "inpaint",
         "CS_FRACTION_HIGH": "cs", "CS_FRACTION_LOW": "cs"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"bench.tasks.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'bench.tasks' has no attribute {name!r}")
