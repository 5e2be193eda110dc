"""``denoise``: y = x + e (AIPO §4.2)."""
from __future__ import annotations

from bench.core.lazy import lazy_module
from bench.tasks.base import TASKS, Problem, Task, sigma_param

torch = lazy_module("torch")


@TASKS.register("denoise")
class Denoise(Task):
    """y = x + e, e ~ N(0, σ²I) (AIPO §4.2). The constraint set {x : x = y} is one point: Proj = clip(y, 0, 1)."""

    parameters = {"sigma": sigma_param(0.1)}
    description = "y = x + e, e ~ N(0, sigma^2 I)"
    naive_text = "clip(y)"
    point_constraint = True
    order = 0
    # GlowIP's settings (Asim App. A: 20 iterations, lr 1), γ = 1 at σ = 0.1 and n = 12288 (Asim Fig. 2), which
    # latent-lbfgs rescales to the image size (see solvers/latent_lbfgs.py)
    solver_defaults = {"latent-lbfgs": {"lr": 1.0, "steps": 20, "gamma": 1.0}}

    def _make(self, x, ids, seed):
        e = torch.stack([self.noise(x.shape[1:], i, seed, x.device) for i in ids])
        return Problem(self, x, x + e, ids, seed)

    def forward(self, p, x):
        return x

    def adjoint(self, p, r):
        return r

    def project(self, p, x, iters):
        return p.y.clamp(0, 1).expand_as(x).clone()

    def least_norm(self, p):
        return p.y.clone()

    def operator_norm(self, p):
        return 1.0

    def observed_image(self, p):
        """y itself (it has the image shape; not clipped)."""
        return p.y
