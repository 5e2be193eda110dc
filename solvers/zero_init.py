"""``zero-init``: AIPO §4.1's second baseline — Adam on x at the fixed target Λ from x0 = G(0)."""
from __future__ import annotations

from bench.core.lazy import lazy_module
from bench.solvers.base import SOLVERS, Solver
from bench.solvers.stages import FixedLambdaSolver, prior_image

torch = lazy_module("torch")


@SOLVERS.register("zero-init")
class ZeroInit(FixedLambdaSolver, Solver):
    """Projected Adam on L(x; Λ) (AIPO eq. 3) from x0 = clip(G(0), 0, 1), Λ fixed (AIPO §4.1).

    Decoding z0 = 0 is one pass; every other pass of ``ctx.budget`` (the MLE's share included, AIPO §4.1) is an
    Adam step (step ``lr``). Clipping: G(0) and every iterate are clamped to [0, 1]. Deterministic (no seed use).
    """

    start = "G(0)"
    description = "Adam on x at fixed lambda from G(0) (AIPO sec. 4.1 baseline)"
    # paper: Liu et al. 2023 (AIPO), sec. 4.1

    def initial_point(self, problem, prior, lam, ctx, tracer=None):
        z0 = torch.zeros((problem.batch_size, *prior.latent_shape), dtype=problem.y.dtype, device=problem.y.device)
        return prior_image(prior, z0)
