"""``naive-init``: Adam on x at the fixed target Λ from the task's naive estimate (clip(y), clip(A⁺y), mean-filled
holes) — the start a practitioner tries first, and the fourth start of the start-sensitivity table."""
from __future__ import annotations

from bench.solvers.base import SOLVERS, Solver
from bench.solvers.stages import FixedLambdaSolver


@SOLVERS.register("naive-init")
class NaiveInit(FixedLambdaSolver, Solver):
    """Projected Adam on L(x; Λ) (AIPO eq. 3) from x0 = the task's naive estimate (``observed``'s answer), Λ fixed.

    Not one of AIPO §4.1's baselines (the harness's own): with ``mle-init``, ``zero-init`` and ``random-init`` it
    measures whether the start matters at equal budget — where the four end apart, the objective has several
    basins and the start, not the optimiser, decides. The start costs no pass, so every pass of ``ctx.budget`` is
    an Adam step (step ``lr``, the protocol's decay); every iterate clamped to [0, 1]. Deterministic.
    """

    start = "the naive estimate"
    description = "Adam on x at fixed lambda from the naive estimate clip(y) / clip(A+y) / mean fill (start study)"

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        return problem.naive_estimate().clamp(0, 1)
