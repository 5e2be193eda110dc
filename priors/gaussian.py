"""``gaussian``: the analytic reference prior, an independent Gaussian per pixel in logit space."""
from __future__ import annotations

import torch
from torch import nn

from bench.priors.base import ARCHS, FlowPrior


@ARCHS.register("gaussian")
class GaussianLogitPrior(FlowPrior):
    """Independent N(μ, σ²) per pixel in logit space: z = (u − μ)/σ. ``GaussianLogitPrior(image_shape, preset,
    mean=, std=)``; μ and log σ are its weights (trainable, saved in checkpoints).

    With μ = 0, σ = 1 (the default) it is a standard Gaussian on logit space — the analytic density used to test
    the metrics and solvers without a trained network. Fitted per pixel, it is also the "trivial prior" the shipped
    priors must beat. It has no hyper-parameters: its presets only set the default image shape.
    """

    description = "independent Gaussian per pixel in logit space (analytic reference, the trivial prior)"
    presets = {"xs": {}, "s": {}, "m": {}, "paper": {}}

    def __init__(self, image_shape=None, preset: str | None = "s", mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__(image_shape, preset)
        shape = self.image_shape
        self.mean = nn.Parameter(torch.zeros(shape) if mean is None else mean.detach().clone())
        self.log_std = nn.Parameter(torch.zeros(shape) if std is None else std.detach().log())

    def _forward(self, u):
        z = (u - self.mean) * torch.exp(-self.log_std)
        return z, (-self.log_std).sum().expand(u.shape[0])

    def _inverse(self, z):
        u = z * torch.exp(self.log_std) + self.mean
        return u, self.log_std.sum().expand(z.shape[0])
