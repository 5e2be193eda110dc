"""Tasks: the inverse problems (forward operator, noise model, projection), one plugin file each.

Importable as ``bench.tasks``. :mod:`bench.tasks.base` holds :class:`Problem`, the :class:`Task` contract and the
``TASKS`` registry; every other module of this folder is a task that registers itself (found by discovery, so a
new task is one new file here, or a ``--plugin`` module).
"""
from bench.tasks.base import TASKS, Problem, Task, make_task, sigma_param

__all__ = ["TASKS", "Problem", "Task", "make_task", "sigma_param"]
