"""``lasso-dct``: min_c ||AΦc − y||² + α||c||₁ with Φ the orthonormal 2-D DCT (Asim et al. 2020, footnote 1)."""
from __future__ import annotations

from bench.solvers.base import SOLVERS
from bench.solvers.lasso import LASSO_DEFAULTS, LassoSolver


@SOLVERS.register("lasso-dct")
class LassoDCT(LassoSolver):
    basis_kind = "dct"
    parameters = dict(LASSO_DEFAULTS)
    description = ("Lasso in the orthonormal 2-D DCT basis per channel, batched FISTA with restart to a relative "
                   "tolerance; no prior, lambda-independent")
