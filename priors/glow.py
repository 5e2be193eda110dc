"""Glow (Kingma & Dhariwal 2018): L levels of [squeeze, K × (actnorm, LU 1x1 conv, affine coupling), split].

Glow §3 / Fig. 2: each level squeezes (C,H,W) -> (4C,H/2,W/2), applies K flow steps (Table 1: actnorm with
data-dependent init, invertible 1x1 convolution in LU form, affine coupling with scale sigmoid(s + 2)), then — for
all but the last level — splits off half of the channels, modelled by a Gaussian whose mean and log-std come from
a zero-initialised conv of the kept half (learned prior, code ``split2d``). The split-off parts are standardised by
that Gaussian, so the packed latent z (all splits, then the top) is N(0, I) under the model.

The flow works on logit space (see :mod:`bench.priors.base` for the preprocessing and the derived interface).
"""
from __future__ import annotations

from torch import nn

from bench.core.errors import UserError
from bench.core.registry import Param
from bench.priors.base import ARCHS, DEPTH, WIDTH, FlowPrior
from bench.priors.layers import ActNorm, GlowCoupling, InvConv1x1LU, SplitPrior, pack, squeeze, unpack, unsqueeze


class FlowStep(nn.Module):
    """One step of flow (Glow Fig. 2a): actnorm -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(ch), InvConv1x1LU(ch), GlowCoupling(ch, hidden)])

    def forward(self, x):
        ld = 0
        for layer in self.layers:
            x, l = layer(x)
            ld = ld + l
        return x, ld

    def inverse(self, y):
        ld = 0
        for layer in reversed(self.layers):
            y, l = layer.inverse(y)
            ld = ld + l
        return y, ld


@ARCHS.register("glow")
class Glow(FlowPrior):
    """Multiscale Glow prior. ``Glow(image_shape, preset, levels=, steps=, hidden=)``."""

    description = "Glow (Kingma & Dhariwal 2018): actnorm, LU 1x1 conv, affine coupling, learned split priors"
    hyperparameters = {
        "levels": Param(int, range=DEPTH, doc="levels L: squeeze, K steps of flow, split"),
        "steps": Param(int, range=DEPTH, doc="steps of flow K per level"),
        "hidden": Param(int, range=WIDTH, doc="hidden channels of the coupling networks"),
    }
    # paper: L = 4 levels, K = 32 steps per level, 512 hidden channels (Kingma & Dhariwal 2018 §5; the GlowIP code
    # of Asim et al. 2020 App. A uses K = 48)
    presets = {
        "xs": {"levels": 2, "steps": 2, "hidden": 16},
        "s": {"levels": 3, "steps": 4, "hidden": 32},
        "m": {"levels": 2, "steps": 6, "hidden": 48},
        "paper": {"levels": 4, "steps": 32, "hidden": 512},
    }

    def __init__(self, image_shape=None, preset: str | None = "s", **overrides):
        super().__init__(image_shape, preset, **overrides)
        c, h, w = self.image_shape
        levels, steps, hidden = self.config["levels"], self.config["steps"], self.config["hidden"]
        if h % (2 ** levels) or w % (2 ** levels):
            raise UserError(f"glow with {levels} levels needs H and W divisible by {2 ** levels}, "
                            f"got image shape {list(self.image_shape)}")
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.piece_shapes = []
        for i in range(levels):
            c, h, w = c * 4, h // 2, w // 2
            self.levels.append(nn.ModuleList([FlowStep(c, hidden) for _ in range(steps)]))
            if i < levels - 1:
                self.splits.append(SplitPrior(c))
                self.piece_shapes.append((c - c // 2, h, w))
                c = c // 2
        self.piece_shapes.append((c, h, w))

    def _forward(self, u):
        h, ld, pieces = u, 0, []
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, l = step(h)
                ld = ld + l
            if i < len(self.splits):
                h, eps, l = self.splits[i](h)
                ld = ld + l
                pieces.append(eps)
        pieces.append(h)
        return pack(pieces, self.image_shape), ld

    def _inverse(self, z):
        pieces = unpack(z, self.piece_shapes)
        h, ld = pieces[-1], 0
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                h, l = self.splits[i].inverse(h, pieces[i])
                ld = ld + l
            for step in reversed(self.levels[i]):
                h, l = step.inverse(h)
                ld = ld + l
            h = unsqueeze(h)
        return h, ld
