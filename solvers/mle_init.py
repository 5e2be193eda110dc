"""``mle-init``: AIPO §4.1's third baseline — Adam on x at the fixed target Λ, started from the MLE x*(0).

"to demonstrate that AIPO's outperformance indeed results from amortization rather than merely the MLE
initialization, gradient descent with the MLE initialization is used as the third baseline approach."
"""
from __future__ import annotations

from bench.solvers.base import SOLVERS, Solver
from bench.solvers.stages import MLE_PARAMS, FixedLambdaSolver, MLEStart


@SOLVERS.register("mle-init")
class MLEInit(MLEStart, FixedLambdaSolver, Solver):
    """Projected Adam on L(x; Λ) (AIPO eq. 3) from x*(0) (eq. 4), Λ fixed (AIPO §4.1).

    - Start: the MLE stage of :func:`bench.solvers.stages.mle` — ``ctx.mle_steps`` passes of projected gradient
      ascent on log p_G (``mle_optimizer``, step ``mle_lr``; App. A projections, ending in the box) for cs and
      inpaint, charged to this row's budget; clip(y, 0, 1) at no cost for denoising. Under the robust protocol
      projected Adam on the tangent gradient, under the paper protocol projected GD (App. A).
    - Then Adam (step ``lr``) at Λ for the rest of ``ctx.budget``; every iterate clamped to [0, 1].
    """

    parameters = {**FixedLambdaSolver.parameters, **MLE_PARAMS}
    start = "x*(0), the MLE of eq. (4)"
    description = "Adam on x at fixed lambda from the MLE x*(0) (AIPO sec. 4.1 baseline)"
    # paper: Liu et al. 2023 (AIPO), sec. 4.1
