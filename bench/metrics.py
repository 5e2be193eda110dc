"""Metrics computed by the harness, never by the solver (DESIGN contract 1).

Pure functions over batches. Images are scored clipped to [0, 1]; PSNR and SSIM use ``skimage.metrics`` with
``data_range = 1``. ``map_loss`` is AIPO eq. (3) with Gaussian noise: L(x; λ) = ||y − f(x)||² − λ·log p_G(x),
where log p_G is the prior's density of x on [0,1]^n in nats (preprocessing Jacobian included).
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# Declarative metric metadata (torchmetrics-style): drives bolding and the regression check.
HIGHER_IS_BETTER = {"map_loss": False, "data_fit": False, "log_prior": True, "psnr": True, "ssim": True}


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


def data_fit(problem, x: torch.Tensor) -> torch.Tensor:
    """||y − f(x)||² per image."""
    return problem.data_fit(x)


@torch.no_grad()
def map_loss(problem, prior, x: torch.Tensor, lam) -> torch.Tensor:
    """L(x; λ) = ||y − f(x)||² − λ·log p_G(x) per image (AIPO eq. 3). ``lam`` is a scalar or a (B,) tensor."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    return problem.data_fit(x) - lam * prior.log_prob(x)


@torch.no_grad()
def score(problem, prior, x_hat: torch.Tensor, lam) -> dict[str, np.ndarray]:
    """All outcome metrics for a batch of reconstructions. ``x_hat`` is clipped to [0, 1] first, for every metric,
    so a solver that leaves the box (Lasso) is scored on the image it would be displayed as."""
    x = x_hat.clamp(0, 1)
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    fit = problem.data_fit(x)
    logp = prior.log_prob(x) if prior is not None else torch.full_like(fit, float("nan"))
    return {
        "map_loss": (fit - lam * logp).cpu().double().numpy(),
        "data_fit": fit.cpu().double().numpy(),
        "log_prior": logp.cpu().double().numpy(),
        "psnr": psnr(problem.x_true, x),
        "ssim": ssim(problem.x_true, x),
    }
