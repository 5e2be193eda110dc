"""``observed``: the trivial baseline — the naive estimate from y alone, no prior, no passes."""
from __future__ import annotations

from bench.solvers.base import SOLVERS, Solver, SolveResult


@SOLVERS.register("observed")
class Observed(Solver):
    """Doing nothing: x̂ = the task's naive estimate (:meth:`bench.tasks.Problem.naive_estimate`):

    - denoise: clip(y, 0, 1);
    - cs: clip(A⁺y, 0, 1), the clipped least-norm solution;
    - inpaint: the observed pixels, holes filled with the mean of the image's observed pixels.

    It spends no prior pass and ignores λ; the harness scores it with the row's prior and λ like every solver, so
    each MAP, PSNR and SSIM table shows which solvers beat doing nothing.
    """

    parameters: dict = {}
    uses_prior = False
    lam_independent = True
    does_nothing = True
    description = "trivial baseline: clip(y), clip(A^+ y), or observed pixels with mean-filled holes; no prior"

    def solve(self, problem, prior, lam, ctx):
        x = problem.naive_estimate()
        return SolveResult(x, info={"objective": problem.data_fit(x)})   # ||y − f(x̂)||², for the record
