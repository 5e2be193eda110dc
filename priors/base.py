"""The one interface every prior implements, and the shared image preprocessing.

A prior is a bijection between an image x ∈ [0,1]^n and a latent z ∈ R^n with z ~ N(0, I) under the model.
Subclasses implement the flow on the *logit space* u (``_forward(u) -> (z, logdet)`` and
``_inverse(z) -> (u, logdet)``, each logdet being log|det| of that map's Jacobian, per image); this base class
adds the preprocessing and derives everything solvers use:

- ``log_prob(x)``: density of x on [0,1]^n in nats, *including* the preprocessing Jacobian, deterministic (no
  dequantisation noise at evaluation): log p(x) = log N(z; 0, I) + log|det ∂z/∂u| + log|det ∂u/∂x|.
- ``encode(x) -> z`` and ``decode(z) -> x`` over the full latent (split-off parts included, standardised by their
  learned Gaussians so that z ~ N(0, I)); ``z`` has shape ``(B, *latent_shape)`` with ``latent_shape ==
  image_shape``.
- ``decode_with_log_prob(z) -> (x, log p(x))`` in one pass (used by latent-space solvers).
- ``sample(n, temperature)``.

Preprocessing (RealNVP, Dinh et al. 2016 §4.1): u = logit(α + (1 − 2α)·x), α = 0.05. The training loop adds
uniform dequantisation noise to 8-bit data *before* calling ``log_prob``; the prior itself never adds noise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bench.registry import Registry

ARCHS = Registry("prior architecture", "bench.priors")

ALPHA = 0.05
LOG_2PI = math.log(2 * math.pi)


def to_logit(x: torch.Tensor, alpha: float = ALPHA):
    """x ∈ [0,1] → u = logit(α + (1−2α)x) and log|det ∂u/∂x| per image."""
    s = alpha + (1 - 2 * alpha) * x
    u = torch.log(s) - torch.log1p(-s)
    logdet = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
    return u, logdet


def from_logit(u: torch.Tensor, alpha: float = ALPHA):
    """Inverse of :func:`to_logit`: u → x, and log|det ∂x/∂u| per image."""
    s = torch.sigmoid(u)
    x = (s - alpha) / (1 - 2 * alpha)
    logdet = (torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
              - math.log(1 - 2 * alpha)).flatten(1).sum(1)
    return x, logdet


def std_normal_logp(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.flatten(1).pow(2).sum(1) + z[0].numel() * LOG_2PI)


class FlowPrior(nn.Module):
    """Base class. Subclasses set ``image_shape`` and ``config`` and implement ``_forward`` / ``_inverse``."""

    image_shape: tuple
    config: dict

    @property
    def latent_shape(self) -> tuple:
        return tuple(self.image_shape)

    @property
    def n(self) -> int:
        return math.prod(self.image_shape)

    # --- to implement -------------------------------------------------------------------------------------------
    def _forward(self, u: torch.Tensor):  # u (B, *image_shape) -> z (B, *latent_shape), log|det ∂z/∂u| (B,)
        raise NotImplementedError

    def _inverse(self, z: torch.Tensor):  # z -> u, log|det ∂u/∂z| (B,)
        raise NotImplementedError

    # --- derived ------------------------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        u, ld_pre = to_logit(x)
        z, ld = self._forward(u)
        return std_normal_logp(z) + ld + ld_pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(to_logit(x)[0])[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return from_logit(self._inverse(z)[0])[0]

    def decode_with_log_prob(self, z: torch.Tensor):
        u, ld_inv = self._inverse(z)
        x, ld_post = from_logit(u)
        # log p(x) = log N(z) − log|det ∂u/∂z| − log|det ∂x/∂u|
        return x, std_normal_logp(z) - ld_inv - ld_post

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        p = next(self.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        z = torch.randn((n, *self.latent_shape), generator=generator) * temperature
        return self.decode(z.to(device)).clamp(0, 1)


@ARCHS.register("gaussian")
class GaussianLogitPrior(FlowPrior):
    """Analytic reference prior: independent N(μ, σ²) per pixel in logit space (z = (u − μ)/σ).

    With μ = 0, σ = 1 it is a standard Gaussian on logit space — the analytic density used to test the metrics
    and solvers without a trained network. Fitted per pixel, it is also the "trivial prior" the shipped priors
    must beat.
    """

    def __init__(self, image_shape=(1, 16, 16), mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.config = {"arch": "gaussian", "image_shape": list(image_shape)}
        self.register_buffer("mean", torch.zeros(image_shape) if mean is None else mean.clone())
        self.register_buffer("log_std", torch.zeros(image_shape) if std is None else std.log().clone())

    def _forward(self, u):
        z = (u - self.mean) * torch.exp(-self.log_std)
        return z, (-self.log_std).sum().expand(u.shape[0])

    def _inverse(self, z):
        u = z * torch.exp(self.log_std) + self.mean
        return u, self.log_std.sum().expand(z.shape[0])
