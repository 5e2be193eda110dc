"""``random-init``: AIPO §4.1's first baseline — Adam on x at the fixed target Λ from x0 = G(z0), z0 ~ N(0, I)."""
from __future__ import annotations

from bench.solvers.base import SOLVERS, Solver, row_randn
from bench.solvers.common import FixedLambdaSolver, prior_image


@SOLVERS.register("random-init")
class RandomInit(FixedLambdaSolver, Solver):
    """Projected Adam on L(x; Λ) (AIPO eq. 3) from x0 = clip(G(z0), 0, 1), Λ fixed (AIPO §4.1).

    z0 ~ N(0, I) is drawn per row from :func:`bench.solvers.base.row_randn`, keyed by (image id, seed index) —
    never by batch position, so the start is the same batched or alone, and a new seed index gives a new start.
    Decoding z0 is one pass; every other pass of ``ctx.budget`` (the MLE's share included, AIPO §4.1) is an Adam
    step (step ``lr``). Clipping: G(z0) and every iterate are clamped to [0, 1].
    """

    description = "Adam on x at fixed lambda from G(z0), z0 ~ N(0, I) (AIPO sec. 4.1 baseline)"
    paper = "Liu et al. 2023 (AIPO), sec. 4.1"

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        z0 = row_randn(problem, tuple(prior.latent_shape), ctx.seed, "random-init")
        return prior_image(prior, z0.to(problem.y.device, problem.y.dtype))
