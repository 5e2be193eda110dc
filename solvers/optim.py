"""The optimisers of the solvers on x: Adam and GD steps (the batched L-BFGS is :mod:`bench.solvers.lbfgs`). Not a
solver itself (it registers nothing).

Rows are independent (README contract 3): Adam and GD are elementwise.

Box rule: x-space iterates are clamped to [0, 1] after every step (:func:`clamp01`).
"""
from __future__ import annotations

from bench.core.errors import UserError
from bench.core.lazy import lazy_module

torch = lazy_module("torch")


def rowwise(v, like: torch.Tensor) -> torch.Tensor:
    """A scalar or a (B,) tensor shaped to broadcast over the rows of ``like`` (B, ...)."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.view(-1, *([1] * (like.dim() - 1))) if v.dim() else v


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """The box projection Proj_[0,1]^n of AIPO App. A."""
    return x.clamp(0.0, 1.0)


# --- optimisers on x ----------------------------------------------------------------------------------------------
# AIPO Table 4's step size α, the default inner step of every x-space Adam solver (equal optimiser settings).
ADAM_LR = 0.05
# The robust protocol's step decay τ (passes): step t (1-based) is lr·τ/(τ + t − 1). The harness's own choice,
# measured (README "Protocols"): with a constant step, Adam keeps moving around the optimum and more budget can
# raise the loss; with this decay the loss at the full budget is below the loss at half of it. 0 = constant.
LR_DECAY = 100.0


def decayed(lr, decay: float, t: int):
    """The step of iteration ``t`` (1-based): ``lr`` if ``decay`` is 0, else lr·decay/(decay + t − 1)."""
    return lr if not decay else lr * (decay / (decay + t - 1))


class Adam:
    """Adam (Kingma & Ba 2014, Alg. 1) exactly as ``torch.optim.Adam`` computes it (betas 0.9/0.999, eps 1e-8),
    elementwise so rows never interact. ``lr`` is a float or a (B,) tensor (per-row step); ``decay`` τ > 0 makes
    step t take lr·τ/(τ + t − 1) (:func:`decayed`; t counts steps since the last :meth:`reset`)."""

    def __init__(self, lr, decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.decay, self.betas, self.eps = lr, decay, betas, eps
        self.reset()

    def reset(self):
        self.t, self.m, self.v = 0, None, None

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        if self.m is None:
            self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)
        self.t += 1
        self.m = self.m * b1 + g * (1 - b1)
        self.v = self.v * b2 + g * g * (1 - b2)
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        denom = self.v.sqrt() / (bc2 ** 0.5) + self.eps
        return x - rowwise(decayed(self.lr, self.decay, self.t), x) / bc1 * self.m / denom


class GD:
    """Plain gradient step x ← x − lr·g (AIPO Alg. 1 line 11, Alg. 2 line 5); ``decay`` as for :class:`Adam`."""

    def __init__(self, lr, decay: float = 0.0):
        self.lr, self.decay = lr, decay
        self.reset()

    def reset(self):
        self.t = 0

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return x - rowwise(decayed(self.lr, self.decay, self.t), x) * g


OPTIMIZERS = {"adam": Adam, "gd": GD}


def make_optimizer(name: str, lr, decay: float = 0.0):
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr, decay)
