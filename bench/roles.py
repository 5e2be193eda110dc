"""Which registered solver plays each role the report reads (:data:`bench.schema.TRIVIAL`: doing nothing,
:data:`bench.schema.BASELINE`: the paired comparison's baseline): the one whose class declares the role's attribute."""
from __future__ import annotations

from bench.solvers.base import SOLVERS


def role_solver(role: str) -> str | None:
    """The registered name of the solver whose class declares ``role`` (:data:`bench.schema.TRIVIAL` or
    :data:`bench.schema.BASELINE`) true, or None."""
    return next((name for name, cls in SOLVERS.items() if getattr(cls, role, False)), None)
