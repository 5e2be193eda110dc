"""The MAP objective of AIPO eq. (3), in one place: every solver's gradient and the harness's scoring use it.

    L(x; λ) = −log p_e(y − f(x)) − λ·log p_G(x)

- Data term (the noise likelihood): every task has Gaussian noise e ~ N(0, σ²I) over the d entries of y, so
  −log p_e(y − f(x)) = ||y − f(x)||²/(2σ²) + (d/2)·log(2πσ²) (:func:`gaussian_nll`). d = m for compressed
  sensing and n for denoising and inpainting (inpainting's y = M⊙(x + e) has one entry per pixel, AIPO §2.3;
  the missing entries have zero residual and still count in d, which is what AIPO Table 3's values need).
  The data fit ||y − f(x)||² is kept as its own column (``data_fit``) and ``data_nll`` is this term.
- Prior term: log p_G(x) in the discretised 8-bit convention (:func:`log_prior`): the continuous density of x on
  [0,1]^n (the flow's ``log_prob``, preprocessing Jacobian included) minus n·log 256, i.e. the log-probability of
  x's 8-bit cell when the density is flat inside it. So ``−log_prior/(n ln 2)`` is x's bits/dim
  (:func:`bits_per_dim`), the number flow papers report, and log p_G < 0 as in AIPO Tables 1–3, where the MAP
  loss rises with λ.

Both conventions are checked against the paper's own numbers in README ("The objective").
"""
from __future__ import annotations

import math

from bench.core.lazy import lazy_module

torch = lazy_module("torch")


LOG_256 = math.log(256.0)


def gaussian_nll(fit: torch.Tensor, sigma: float, d: int) -> torch.Tensor:
    """−log N(r; 0, σ²I_d) = ||r||²/(2σ²) + (d/2)·log(2πσ²), from the squared residual norm ``fit`` = ||r||²."""
    return fit / (2.0 * sigma * sigma) + 0.5 * d * math.log(2.0 * math.pi * sigma * sigma)


def gaussian_nll_grad_scale(sigma: float) -> float:
    """d(−log p_e)/d(||r||²) = 1/(2σ²): the factor turning ∇||y − f(x)||² into ∇(−log p_e)."""
    return 1.0 / (2.0 * sigma * sigma)


def discretise(log_density: torch.Tensor, n: int) -> torch.Tensor:
    """The 8-bit discretised log-probability from a continuous log-density on [0,1]^n: log p − n·log 256."""
    return log_density - n * LOG_256


def log_prior(model, x: torch.Tensor) -> torch.Tensor:
    """log p_G(x) per image in the discretised convention (module docstring), for a flow ``model``."""
    return discretise(model.log_prob(x), x[0].numel())


def bits_per_dim(log_prior_value, n: int):
    """bits/dim = −log p_G(x)/(n·ln 2) for a discretised log p_G (works on tensors, arrays and floats)."""
    return -log_prior_value / (n * math.log(2.0))


def map_loss(data_nll, log_prior_value, lam):
    """L(x; λ) = −log p_e − λ·log p_G (AIPO eq. 3) from its two terms; ``lam`` a scalar or per-row values."""
    return data_nll - lam * log_prior_value


def problem_map_loss(problem, model, x: torch.Tensor, lam) -> torch.Tensor:
    """L(x; λ) per row of ``problem`` for a flow ``model``, without gradients; ``lam`` a scalar or per-row values."""
    with torch.no_grad():
        return map_loss(problem.data_nll(x), log_prior(model, x), torch.as_tensor(lam, dtype=x.dtype, device=x.device))
