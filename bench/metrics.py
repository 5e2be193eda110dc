"""Metrics computed by the harness, never by the solver (README contract 1).

Pure functions over batches. Images are scored clipped to [0, 1]; PSNR and SSIM use ``skimage.metrics`` with
``data_range = 1``. ``map_loss`` is AIPO eq. (3) as :mod:`bench.objective` defines it:
L(x; λ) = −log p_e(y − f(x)) − λ·log p_G(x), the Gaussian noise likelihood of the task and the discretised
(8-bit) log-density of the prior, in nats. ``data_fit`` = ||y − f(x)||², ``data_nll`` = −log p_e(y − f(x)),
``log_prior`` = log p_G(x), ``bits_per_dim`` = −log p_G(x)/(n ln 2).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench import objective

# Declarative metric metadata (torchmetrics-style): drives bolding and the regression check.
HIGHER_IS_BETTER = {"map_loss": False, "data_fit": False, "data_nll": False, "log_prior": True,
                    "bits_per_dim": False, "psnr": True, "ssim": True}
# The outcome columns of every result row, in order.
METRICS = ("map_loss", "data_fit", "data_nll", "log_prior", "bits_per_dim", "psnr", "ssim")


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).clamp(0, 1).numpy()


def psnr(x_true: torch.Tensor, x_hat: torch.Tensor) -> np.ndarray:
    """PSNR in dB per image of a (B, C, H, W) batch, on images clipped to [0, 1]."""
    a, b = _np(x_true), _np(x_hat)
    return np.array([peak_signal_noise_ratio(a[i], b[i], data_range=1.0) for i in range(len(a))])


def ssim(x_true: torch.Tensor, x_hat: torch.Tensor) -> np.ndarray:
    """SSIM per image (channel axis 0; the 7×7 default window, shrunk for images smaller than 7 pixels)."""
    a, b = _np(x_true), _np(x_hat)
    win = min(7, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2
    return np.array([structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0, win_size=win)
                     for i in range(len(a))])


@torch.no_grad()
def map_loss(problem, prior, x: torch.Tensor, lam) -> torch.Tensor:
    """L(x; λ) per image (AIPO eq. 3, :mod:`bench.objective`) for a flow ``prior``; ``lam`` scalar or (B,)."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    return objective.map_loss(problem.data_nll(x), objective.log_prior(prior, x), lam)


@torch.no_grad()
def score(problem, prior, x_hat: torch.Tensor, lam) -> dict[str, np.ndarray]:
    """All outcome metrics (``METRICS``) for a batch of reconstructions. ``x_hat`` is clipped to [0, 1] first, for
    every metric, so a solver that leaves the box (Lasso) is scored on the image it would be displayed as."""
    x = x_hat.clamp(0, 1)
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    fit = problem.data_fit(x)
    nll = objective.gaussian_nll(fit, problem.sigma, problem.d)
    logp = objective.log_prior(prior, x) if prior is not None else torch.full_like(fit, float("nan"))
    as_np = lambda t: t.cpu().double().numpy()  # noqa: E731
    return {
        "map_loss": as_np(objective.map_loss(nll, logp, lam)),
        "data_fit": as_np(fit),
        "data_nll": as_np(nll),
        "log_prior": as_np(logp),
        "bits_per_dim": objective.bits_per_dim(as_np(logp), problem.n),
        "psnr": psnr(problem.x_true, x),
        "ssim": ssim(problem.x_true, x),
    }
