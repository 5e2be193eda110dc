"""``lasso-wvt``: min_c ||AΦc − y||² + α||c||₁ with Φ an orthonormal periodized wavelet synthesis (Asim et al.
2020, footnote 1).

Default wavelet ``haar`` (= db1): the Lasso-wavelet baseline of Bora et al. (2017), whose CelebA set-up Asim et al.
follow, uses db1; and Haar allows the full decomposition at the small sizes this benchmark runs (16×16: 4 levels),
where PyWavelets' level rule gives db4 one level at 16×16 and none at 8×8. ``level`` defaults to PyWavelets' maximum.
"""
from __future__ import annotations

from bench.core.registry import Param
from bench.solvers.base import SOLVERS
from bench.solvers.lasso import LASSO_DEFAULTS, LassoSolver, make_basis, wavelet_level


@SOLVERS.register("lasso-wvt")
class LassoWVT(LassoSolver):
    basis_kind = "wavelet"
    parameters = {**LASSO_DEFAULTS, "wavelet": Param(str, "haar", doc="PyWavelets wavelet name"),
                  "level": Param(int, None, range=">=0", doc="decomposition depth (None: full depth)")}
    description = ("Lasso in an orthonormal periodized wavelet basis per channel (PyWavelets), batched FISTA with "
                   "restart to a relative tolerance; no prior, lambda-independent")

    def validate(self):
        """The wavelet must be one of PyWavelets' orthogonal ones (a list only the library knows)."""
        wavelet_level(8, 8, self.params["wavelet"], 0)  # raises UserError for unknown / non-orthogonal wavelets

    def basis(self, h, w, device):
        return make_basis("wavelet", h, w, device, self.params["wavelet"], self.params["level"])
