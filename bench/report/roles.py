"""Which registered solver plays each role the report reads (:data:`bench.core.schema.TRIVIAL`: doing nothing,
:data:`bench.core.schema.BASELINE`: the paired comparison's baseline): the one whose class declares the role's attribute."""
from __future__ import annotations

from bench.solvers.base import SOLVERS


def role_solver(role: str) -> str | None:
    """The registered name of the solver whose class declares ``role`` (:data:`bench.core.schema.TRIVIAL` or
    :data:`bench.core.schema.BASELINE`) true, or None."""
    return next((name for name, cls in SOLVERS.items() if getattr(cls, role, False)), None)
