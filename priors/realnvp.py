"""Multiscale RealNVP (Dinh et al. 2016, §3.6 "Multi-scale architecture").

Each scale: ``n_checker`` checkerboard affine couplings (alternating parity), squeeze, ``n_channel`` channel-wise
affine couplings (alternating halves), then half of the channels are factored out (eq. 13: z_i = h_i[half]);
the last scale is ``n_final`` checkerboard couplings. Factored-out parts are modelled as N(0, I) (as in the paper),
so the packed latent z (factored-out parts in order, then the top) is N(0, I) under the model.

Coupling networks are small ResNets (§4.1) with a tanh-bounded log-scale (s = scale·tanh(s_raw)). Batch
normalisation of the paper is omitted so that log p(x) never depends on the rest of the batch.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.core.errors import UserError
from bench.core.registry import Param
from bench.priors.base import ARCHS, DEPTH, WIDTH, FlowPrior
from bench.priors.layers import RealNVPCoupling, pack, squeeze, unpack, unsqueeze


@ARCHS.register("realnvp")
class RealNVP(FlowPrior):
    """``RealNVP(image_shape, preset, scales=, hidden=, blocks=, n_checker=, n_channel=, n_final=)``."""

    description = "RealNVP (Dinh et al. 2016): checkerboard + channel affine couplings, squeeze, factor-out"
    hyperparameters = {
        "scales": Param(int, range=DEPTH, doc="scales: checkerboard couplings, squeeze, channel couplings, split"),
        "hidden": Param(int, range=WIDTH, doc="feature maps of the coupling ResNets"),
        "blocks": Param(int, range=DEPTH, doc="residual blocks per coupling ResNet"),
        "n_checker": Param(int, range=DEPTH, doc="checkerboard couplings per scale"),
        "n_channel": Param(int, range=DEPTH, doc="channel-wise couplings per scale"),
        "n_final": Param(int, range=DEPTH, doc="checkerboard couplings of the last scale"),
    }
    # paper: 4 scales (64 -> 4 pixels), residual s/t networks of 8 blocks with 64 feature maps (Dinh et al. §4.1)
    presets = {
        "xs": {"scales": 2, "hidden": 8, "blocks": 1, "n_checker": 1, "n_channel": 1, "n_final": 1},
        "s": {"scales": 2, "hidden": 16, "blocks": 1, "n_checker": 2, "n_channel": 2, "n_final": 2},
        "m": {"scales": 2, "hidden": 16, "blocks": 1, "n_checker": 3, "n_channel": 3, "n_final": 3},
        "paper": {"scales": 4, "hidden": 64, "blocks": 8, "n_checker": 3, "n_channel": 3, "n_final": 4},
    }

    def __init__(self, image_shape=None, preset: str | None = "s", **overrides):
        super().__init__(image_shape, preset, **overrides)
        cfg = self.config
        c, h, w = self.image_shape
        scales, hid, nb = cfg["scales"], cfg["hidden"], cfg["blocks"]
        if h % (2 ** scales) or w % (2 ** scales):
            raise UserError(f"realnvp with {scales} scales needs H and W divisible by {2 ** scales}, "
                            f"got image shape {list(self.image_shape)}")
        self.scales = nn.ModuleList()
        self.piece_shapes = []
        for _ in range(scales):
            checker = nn.ModuleList([RealNVPCoupling(c, hid, nb, "checkerboard", k % 2, (h, w))
                                     for k in range(cfg["n_checker"])])
            c, h, w = c * 4, h // 2, w // 2
            channel = nn.ModuleList([RealNVPCoupling(c, hid, nb, "channel", k % 2)
                                     for k in range(cfg["n_channel"])])
            self.scales.append(nn.ModuleDict({"checker": checker, "channel": channel}))
            self.piece_shapes.append((c - c // 2, h, w))
            c = c // 2
        self.final = nn.ModuleList([RealNVPCoupling(c, hid, nb, "checkerboard", k % 2, (h, w))
                                    for k in range(cfg["n_final"])])
        self.piece_shapes.append((c, h, w))

    def _forward(self, u):
        h, ld, pieces = u, 0, []
        for sc in self.scales:
            for layer in sc["checker"]:
                h, l = layer(h)
                ld = ld + l
            h = squeeze(h)
            for layer in sc["channel"]:
                h, l = layer(h)
                ld = ld + l
            keep = h.shape[1] // 2
            pieces.append(h[:, keep:])
            h = h[:, :keep]
        for layer in self.final:
            h, l = layer(h)
            ld = ld + l
        pieces.append(h)
        return pack(pieces, self.image_shape), ld

    def _inverse(self, z):
        pieces = unpack(z, self.piece_shapes)
        h, ld = pieces[-1], 0
        for layer in reversed(self.final):
            h, l = layer.inverse(h)
            ld = ld + l
        for i in reversed(range(len(self.scales))):
            sc = self.scales[i]
            h = torch.cat([h, pieces[i]], 1)
            for layer in reversed(sc["channel"]):
                h, l = layer.inverse(h)
                ld = ld + l
            h = unsqueeze(h)
            for layer in reversed(sc["checker"]):
                h, l = layer.inverse(h)
                ld = ld + l
        return h, ld
