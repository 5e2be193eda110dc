"""Invertible building blocks shared by RealNVP and Glow.

Every flow layer maps ``x -> (y, logdet)`` in ``forward`` and ``y -> (x, logdet)`` in ``inverse``; ``logdet`` is
log|det| of *that* map's Jacobian, one value per image, shape (B,). Nothing here uses batch statistics after
initialisation, so every layer is batch independent (an image's output does not depend on the rest of its batch).

References: Dinh et al. 2016 "Density estimation using Real NVP" (RealNVP, §3.3–3.6); Kingma & Dhariwal 2018
"Glow: Generative flow with invertible 1x1 convolutions" (Glow, Table 1, §3).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


# --- shape ops ----------------------------------------------------------------------------------------------------
def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2), each 2x2 patch into channels (RealNVP §3.6, Fig. 3)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def checkerboard(h: int, w: int, parity: int, device=None, dtype=None) -> torch.Tensor:
    """(1, 1, H, W) mask b with b = 1 where (i + j + parity) is even (RealNVP §3.4, Fig. 3 left)."""
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    return ((i + j + parity) % 2 == 0).to(dtype or torch.float32).view(1, 1, h, w).to(device)


# --- small conv nets used inside couplings ------------------------------------------------------------------------
class ZeroConv2d(nn.Module):
    """3x3 conv initialised to zero, output scaled by exp(3·logs) (Glow code ``conv2d_zeros``): each coupling and
    split prior starts as the identity / a standard normal."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x):
        return self.conv(x) * torch.exp(3 * self.logs)


class GlowNet(nn.Module):
    """Glow coupling NN (Glow §3.3 / code ``f``): conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3."""

    def __init__(self, cin: int, cout: int, hidden: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.c2 = nn.Conv2d(hidden, hidden, 1)
        self.c3 = ZeroConv2d(hidden, cout)

    def forward(self, x):
        return self.c3(F.relu(self.c2(F.relu(self.c1(x)))))


class ResBlock(nn.Module):
    """Pre-activation residual block (RealNVP §4.1 uses ResNets as s and t), without batch norm so that the
    prior stays batch independent (plain convs; the zero-initialised output conv keeps early training stable)."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(F.relu(x))))


class ResNet(nn.Module):
    """s,t network of RealNVP: conv in -> ``blocks`` residual blocks -> ReLU -> zero-init conv out."""

    def __init__(self, cin: int, cout: int, hidden: int, blocks: int):
        super().__init__()
        self.inp = nn.Conv2d(cin, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(blocks)])
        self.out = ZeroConv2d(hidden, cout)

    def forward(self, x):
        return self.out(F.relu(self.blocks(self.inp(x))))


# --- invertible layers --------------------------------------------------------------------------------------------
class ActNorm(nn.Module):
    """Per-channel affine y = (x + b)·exp(logs) (Glow §3.1, Table 1 row 1).

    Data-dependent initialisation: the first forward call in *training* mode sets b and logs so that the
    post-actnorm activations of that batch have zero mean and unit variance per channel, then sets the buffer
    ``initialized``. After that (and always in eval mode) the layer never looks at batch statistics.
    logdet = H·W·Σ logs.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _init(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x):
        if self.training and not bool(self.initialized):
            self._init(x)
        y = (x + self.bias) * torch.exp(self.logs)
        ld = self.logs.sum() * (x.shape[2] * x.shape[3])
        return y, ld.expand(x.shape[0])

    def inverse(self, y):
        x = y * torch.exp(-self.logs) - self.bias
        ld = -self.logs.sum() * (y.shape[2] * y.shape[3])
        return x, ld.expand(y.shape[0])


class InvConv1x1LU(nn.Module):
    """Invertible 1x1 convolution with LU parametrisation (Glow §3.2, eq. 10): W = P·L·(U + diag(sign·exp(logs))).

    P is a fixed permutation, L unit lower triangular, U strictly upper triangular; logdet = H·W·Σ logs.
    Initialised from a random rotation (QR of a Gaussian matrix, drawn from the module RNG state at construction).
    """

    def __init__(self, ch: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(ch, ch))[0]
        p, l, u = torch.linalg.lu(w)
        s = torch.diagonal(u)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(ch, ch), -1))
        self.register_buffer("eye", torch.eye(ch))
        self.l = nn.Parameter(l)
        self.u = nn.Parameter(torch.triu(u, 1))
        self.logs = nn.Parameter(torch.log(torch.abs(s)))

    def _factors(self):
        lower = self.l * self.l_mask + self.eye
        upper = self.u * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.logs))
        return lower, upper

    def weight(self):
        lower, upper = self._factors()
        return self.p @ lower @ upper

    def forward(self, x):
        w = self.weight()
        y = F.conv2d(x, w.view(*w.shape, 1, 1))
        return y, (self.logs.sum() * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, y):
        lower, upper = self._factors()
        # W⁻¹ = U⁻¹ L⁻¹ Pᵀ via triangular solves (exact to float precision, no general inverse)
        eye = self.eye
        l_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        w_inv = u_inv @ l_inv @ self.p.T
        x = F.conv2d(y, w_inv.view(*w_inv.shape, 1, 1))
        return x, (-self.logs.sum() * (y.shape[2] * y.shape[3])).expand(y.shape[0])


# Bounds that keep the Glow inverse finite (see GlowCoupling and SplitPrior). The shipped checkpoints' activations
# on their training, test and OOD images stay well inside them (coupling log-scale ≥ −4.8, split log-std in
# [−3.5, 0.7]), so log p(x) of real images is unchanged; only far-off latents (z ~ N(0, I) draws, L-BFGS iterates)
# are affected, which before decoded to inf/NaN for about 4 % of draws on glow-s.
GLOW_LOG_SCALE_MIN = -8.0
SPLIT_LOG_STD_BOUND = 5.0


class GlowCoupling(nn.Module):
    """Affine coupling (Glow Table 1 row 3, code ``revnet2d_step``): x = [xa, xb]; h = NN(xa);
    shift = h[:, 0::2], scale = sigmoid(h[:, 1::2] + 2); yb = (xb + shift)·scale; logdet = Σ log scale.

    The scale is bounded in both directions, scale ≥ exp(``GLOW_LOG_SCALE_MIN``): the forward pass's sigmoid
    bounds it above by 1, but the inverse divides by it, and an unbounded 1/sigmoid(·) overflows for far-off
    latents. Forward and inverse use the same bounded scale, so they stay exact inverses."""

    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.ca = ch // 2
        self.net = GlowNet(self.ca, 2 * (ch - self.ca), hidden)

    def _st(self, xa):
        h = self.net(xa)
        shift, raw = h[:, 0::2], h[:, 1::2]
        return shift, F.logsigmoid(raw + 2.0).clamp(min=GLOW_LOG_SCALE_MIN)

    def forward(self, x):
        xa, xb = x[:, :self.ca], x[:, self.ca:]
        shift, log_scale = self._st(xa)
        yb = (xb + shift) * torch.exp(log_scale)
        return torch.cat([xa, yb], 1), log_scale.flatten(1).sum(1)

    def inverse(self, y):
        ya, yb = y[:, :self.ca], y[:, self.ca:]
        shift, log_scale = self._st(ya)
        xb = yb * torch.exp(-log_scale) - shift
        return torch.cat([ya, xb], 1), -log_scale.flatten(1).sum(1)


class RealNVPCoupling(nn.Module):
    """RealNVP affine coupling (Dinh et al. eq. 8–9): y = b⊙x + (1−b)⊙(x⊙exp(s(b⊙x)) + t(b⊙x)).

    ``mask="checkerboard"`` uses the spatial checkerboard b (parity ``parity``) with the mask fed as an extra input
    channel; ``mask="channel"`` uses the first / second half of the channels (``parity`` swaps the halves).
    The log-scale is s = scale·tanh(s_raw) with a learned per-channel ``scale`` (RealNVP code), for stability.
    """

    def __init__(self, ch: int, hidden: int, blocks: int, mask: str, parity: int, size: tuple | None = None):
        super().__init__()
        self.mask, self.parity = mask, parity
        if mask == "checkerboard" and size is not None:  # cached (not saved: it is a function of the shape)
            self.register_buffer("b", checkerboard(size[0], size[1], parity), persistent=False)
        if mask == "checkerboard":
            self.net = ResNet(ch + 1, 2 * ch, hidden, blocks)
            self.scale = nn.Parameter(torch.ones(1, ch, 1, 1))
        elif mask == "channel":
            self.half = ch // 2
            cin = self.half if parity == 0 else ch - self.half
            cout = ch - cin
            self.net = ResNet(cin, 2 * cout, hidden, blocks)
            self.scale = nn.Parameter(torch.ones(1, cout, 1, 1))
        else:
            raise ValueError(f"unknown coupling mask {mask!r}")

    def _split(self, x):
        a, b = x[:, :self.half], x[:, self.half:]
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, cond, act):
        return torch.cat([cond, act], 1) if self.parity == 0 else torch.cat([act, cond], 1)

    def _st(self, inp):
        h = self.net(inp)
        s_raw, t = h[:, 0::2], h[:, 1::2]
        return self.scale * torch.tanh(s_raw), t

    def _couple(self, x, sign: int):
        if self.mask == "checkerboard":
            b = getattr(self, "b", None)
            if b is None or b.shape[-2:] != x.shape[-2:]:
                b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device, x.dtype)
            xb = x * b
            s, t = self._st(torch.cat([xb, b.expand(x.shape[0], 1, -1, -1)], 1))
            s, t = s * (1 - b), t * (1 - b)
            if sign > 0:
                y = xb + (1 - b) * (x * torch.exp(s) + t)
            else:
                y = xb + (1 - b) * ((x - t) * torch.exp(-s))
            return y, sign * s.flatten(1).sum(1)
        cond, act = self._split(x)
        s, t = self._st(cond)
        act = act * torch.exp(s) + t if sign > 0 else (act - t) * torch.exp(-s)
        return self._join(cond, act), sign * s.flatten(1).sum(1)

    def forward(self, x):
        return self._couple(x, +1)

    def inverse(self, y):
        return self._couple(y, -1)


class SplitPrior(nn.Module):
    """Glow multiscale split (Glow code ``split2d``): h = [h1, h2]; h2 ~ N(μ(h1), σ(h1)²) with (μ, log σ) from a
    zero-initialised conv on h1. ``forward`` returns h1, the standardised ε = (h2 − μ)/σ and logdet = −Σ log σ;
    ``inverse`` maps (h1, ε) back with logdet = +Σ log σ. log σ is clamped to ±``SPLIT_LOG_STD_BOUND`` in both
    directions (the inverse multiplies by σ, which overflows for far-off latents otherwise)."""

    def __init__(self, ch: int):
        super().__init__()
        self.keep = ch // 2
        self.conv = ZeroConv2d(self.keep, 2 * (ch - self.keep))

    def _params(self, h1):
        h = self.conv(h1)
        return h[:, 0::2], h[:, 1::2].clamp(-SPLIT_LOG_STD_BOUND, SPLIT_LOG_STD_BOUND)

    def forward(self, h):
        h1, h2 = h[:, :self.keep], h[:, self.keep:]
        mean, logs = self._params(h1)
        eps = (h2 - mean) * torch.exp(-logs)
        return h1, eps, -logs.flatten(1).sum(1)

    def inverse(self, h1, eps):
        mean, logs = self._params(h1)
        h2 = mean + eps * torch.exp(logs)
        return torch.cat([h1, h2], 1), logs.flatten(1).sum(1)


# --- latent packing -----------------------------------------------------------------------------------------------
def pack(pieces: list[torch.Tensor], image_shape) -> torch.Tensor:
    """Concatenate the flattened multiscale latents into one (B, *image_shape) tensor."""
    b = pieces[0].shape[0]
    return torch.cat([p.reshape(b, -1) for p in pieces], 1).reshape(b, *image_shape)


def unpack(z: torch.Tensor, shapes: list[tuple]) -> list[torch.Tensor]:
    """Inverse of :func:`pack` given each piece's per-image shape."""
    b = z.shape[0]
    flat = z.reshape(b, -1)
    out, i = [], 0
    for s in shapes:
        k = math.prod(s)
        out.append(flat[:, i:i + k].reshape(b, *s))
        i += k
    return out
