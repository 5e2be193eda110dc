"""``cs``: noisy compressed sensing y = A x + e (AIPO §4.3, Asim §3.2).

The sensing matrix ``A`` (iid N(0, 1/m)) depends on (task parameters, image size, seed index) and is shared by
every image of that seed, as in the GlowIP code; the noise depends on the image id too. ``y`` is ``(B, m)``.
"""
from __future__ import annotations

import math

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.core.seeding import generator
from bench.tasks.base import TASKS, Problem, Task, sigma_param

torch = lazy_module("torch")

# AIPO §4.3: m = 4000 and m = 2000 at n = 12288; presets at other sizes keep these fractions.
CS_FRACTION_HIGH = 0.3255


@TASKS.register("cs")
class CompressedSensing(Task):
    """y = A x + e, A_ij ~ N(0, 1/m), e ~ N(0, σ²I) (AIPO §4.3, Asim §3.2).

    ``m`` is a fraction of n when ≤ 1 (float in (0, 1]) and an absolute count when > 1 (a whole number; the
    parameter's float default makes ``cs[m=2000]`` arrive as 2000.0, stored back as the int 2000).
    ``noise`` says what ``sigma`` measures: ``"entry"`` (default, AIPO §4.3: e ~ N(0, 0.1²I), σ per measurement)
    or ``"norm"`` (Asim §3.2 / Bora et al.: √E||e||² = sigma, i.e. σ = sigma/√m per measurement).
    Projection (App. A): alternate x ← x − Aᵀ(AAᵀ)⁻¹(Ax − y) and the box clip, ending on the affine step's clip.
    """

    parameters = {"m": Param(float, CS_FRACTION_HIGH,
                             doc="measurements: a whole number > 1, or a fraction of n in (0, 1]"),
                  "sigma": sigma_param(0.1),
                  "noise": Param(str, "entry", choices=("entry", "norm"),
                                 doc="what sigma measures: entry (per measurement, AIPO) or norm (Asim)")}
    naive_text = "clip(A⁺y)"
    description = ("y = A x + e, A iid N(0, 1/m), e ~ N(0, sigma^2 I); m absolute or a fraction of n; "
                   "noise=norm: sigma is the noise norm (Asim)")
    order = 1
    sweep_param = "m"
    # GlowIP's settings (Asim App. A: 30 iterations, lr 0.1), γ = 0 (Asim §2)
    solver_defaults = {"latent-lbfgs": {"lr": 0.1, "steps": 30, "gamma": 0.0}}

    def validate(self):
        """``m``: a whole number > 1 or a fraction in (0, 1] (one rule over two ranges, so not a Param range);
        stored as an int when it is a count."""
        m = self.params["m"]
        if (isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0
                or (m > 1 and not float(m).is_integer())):
            raise UserError(f"task 'cs': m must be a whole number > 1 or a fraction in (0, 1], got {m!r}")
        if m > 1:
            self.params["m"] = int(m)

    def noise_sigma(self, d: int) -> float:
        sigma = float(self.params["sigma"])
        return sigma / math.sqrt(d) if self.params["noise"] == "norm" else sigma

    def check_shape(self, shape) -> None:
        self.m_for(math.prod(shape))

    def m_for(self, n: int) -> int:
        m = self.params["m"]
        m = int(m) if m > 1 else max(1, int(round(m * n)))
        if m > n:
            raise UserError(f"task 'cs': m={m} measurements exceed the n={n} pixels of an image; use m <= {n} or a "
                            f"fraction in (0, 1]")
        return m

    def matrix(self, n: int, seed: int) -> torch.Tensor:
        m = self.m_for(n)
        return torch.randn((m, n), generator=generator("A", self.identity(), n, seed)) / math.sqrt(m)

    def _make(self, x, ids, seed):
        n = x[0].numel()
        A = self.matrix(n, seed).to(x.device)
        gram_inv = torch.linalg.inv(A @ A.T)
        A64 = A.double()
        p = Problem(self, x, torch.zeros(0), ids, seed,
                    {"A": A, "gram_inv": gram_inv, "A64": A64, "gram_inv64": torch.linalg.inv(A64 @ A64.T)})
        e = torch.stack([self.noise((A.shape[0],), i, seed, x.device) for i in ids])
        p.y = self.forward(p, x) + e
        return p

    # Products with A are accumulated in float64 and rounded back to the input dtype: float32 GEMM results depend on
    # the number of rows in the batch (MKL/cuBLAS pick different kernels), which breaks "batched equals single"
    # (README contract 3) once an optimiser amplifies the 1e-7 differences; rounded float64 results do not.
    @staticmethod
    def _a64(p):
        A = p.state.get("A64", p.state["A"])
        return A if A.dtype == torch.float64 else A.double()

    def forward(self, p, x):
        return (x.flatten(1).double() @ self._a64(p).T).to(x.dtype)

    def adjoint(self, p, r):
        return (r.double() @ self._a64(p)).to(r.dtype).view(r.shape[0], *p.shape)

    def project(self, p, x, iters):
        A = self._a64(p)
        G = torch.linalg.inv(A @ A.T) if "gram_inv64" not in p.state else p.state["gram_inv64"]
        shape = x.shape
        v, y = x.flatten(1).double(), p.y.double()
        for _ in range(iters):
            v = v - ((v @ A.T - y) @ G) @ A
            v = v.clamp(0, 1)
        return v.to(x.dtype).view(shape)

    def least_norm(self, p):
        """A⁺y = Aᵀ(AAᵀ)⁻¹y (A has full row rank m ≤ n with probability 1)."""
        A = self._a64(p)
        G = p.state["gram_inv64"] if "gram_inv64" in p.state else torch.linalg.inv(A @ A.T)
        return ((p.y.double() @ G) @ A).to(p.y.dtype).view(p.y.shape[0], *p.shape)

    def tangent(self, p, v):
        """v − Aᵀ(AAᵀ)⁻¹Av, in float64."""
        A = self._a64(p)
        G = p.state["gram_inv64"] if "gram_inv64" in p.state else torch.linalg.inv(A @ A.T)
        w = v.flatten(1).double()
        return (w - ((w @ A.T) @ G) @ A).to(v.dtype).view(v.shape)

    def operator_norm(self, p):
        """The largest singular value of A (torch.linalg, float64)."""
        return float(torch.linalg.matrix_norm(self._a64(p), ord=2))

    def dense_matrix(self, p):
        """A as the problem holds it (``state["A"]``)."""
        return p.state.get("A")
