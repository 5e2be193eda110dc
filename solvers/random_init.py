"""``random-init``: AIPO §4.1's first baseline — Adam on x at the fixed target Λ from x0 = G(z0), z0 ~ N(0, I)."""
from __future__ import annotations

from bench.core.registry import Param
from bench.solvers.base import SOLVERS, Solver, row_randn
from bench.solvers.stages import FixedLambdaSolver, prior_image


@SOLVERS.register("random-init")
class RandomInit(FixedLambdaSolver, Solver):
    """Projected Adam on L(x; Λ) (AIPO eq. 3) from x0 = clip(G(z0), 0, 1), Λ fixed (AIPO §4.1).

    z0 ~ N(0, T²·I) is drawn per row from :func:`bench.solvers.base.row_randn`, keyed by (image id, seed index) —
    never by batch position, so the start is the same batched or alone, and a new seed index gives a new start.
    Decoding z0 is one pass; every other pass of ``ctx.budget`` (the MLE's share included, AIPO §4.1) is an Adam
    step (step ``lr``). Clipping: G(z0) and every iterate are clamped to [0, 1].

    ``temperature`` T defaults to 1 (AIPO §4.1 draws z0 from the standard Gaussian). A weak Glow can map a few such
    draws to non-finite images (its inverse affine coupling divides by sigmoid(·) scales); those rows are reported
    with status ``nan``, not hidden. Asim et al. (Fig. 4, right) also try T = 0.1 and 0.7.
    """

    parameters = {**FixedLambdaSolver.parameters,
                  "temperature": Param(float, 1.0, range=">=0", doc="z0 ~ N(0, temperature² I)")}
    stochastic = True   # z ~ N(0, T²I) keyed by the seed index
    start = "G(z), z ~ N(0, I)"
    description = "Adam on x at fixed lambda from G(z0), z0 ~ N(0, I) (AIPO sec. 4.1 baseline)"
    # paper: Liu et al. 2023 (AIPO), sec. 4.1

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        z0 = self.params["temperature"] * row_randn(problem, tuple(prior.latent_shape), ctx.seed, "random-init")
        return prior_image(prior, z0.to(problem.y.device, problem.y.dtype))
