"""The one interface every prior implements, its size presets, and the shared image preprocessing.

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

Each architecture declares its hyper-parameters (``hyperparameters``: name -> :class:`~bench.core.registry.Param`
with its type, valid range and doc) and the values of every size preset (``presets``: ``{"xs": {...}, "s": {...},
"m": {...}, "paper": {...}}``) next to its class, in its own file; :meth:`FlowPrior.__init__` resolves them into the
model's ``config`` (:meth:`FlowPrior.resolve_config`). The presets:

- ``xs``: tiny (tens of K parameters) for the smoke grid and the tests, 16x16 grey by default;
- ``s``: the embedded default at 16x16 grey; sized so that one forward+backward of ``log_prob`` w.r.t. x at
  batch 40 costs ~10-25 ms on one CPU thread (the default benchmark grid needs several hundred thousand of them);
- ``m``: the Fashion-MNIST priors, 28x28 grey;
- ``paper``: CelebA 64x64x3 scale (the architecture's paper settings).

A model's ``config`` is ``{"arch", "preset", "image_shape", <every hyper-parameter>}`` and :func:`build_prior`
rebuilds it exactly (checkpoints store it).

Preprocessing (RealNVP, Dinh et al. 2016 §4.1): u = logit(α + (1 − 2α)·x), α = 0.05. The training loop adds
uniform dequantisation noise to 8-bit data *before* calling ``log_prob``; the prior itself never adds noise.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from bench.core.errors import UserError
from bench.core.registry import Registry, resolve_params

ARCHS = Registry("prior architecture", "bench.priors")

PRESET_SHAPES = {"xs": (1, 16, 16), "s": (1, 16, 16), "m": (1, 28, 28), "paper": (3, 64, 64)}  # default (C, H, W)
# Bounds on hyper-parameters and image sides (a corrupt or hostile checkpoint config must not allocate terabytes
# before failing): ``range=DEPTH`` for counts of layers, scales or blocks, ``range=WIDTH`` for channel widths.
DEPTH, WIDTH, MAX_SIDE = "[1,64]", "[1,4096]", 1024

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
    """Base class: ``Arch(image_shape=None, preset="s", **hyper_parameters)``. Subclasses register with
    ``@ARCHS.register(name)``, declare ``hyperparameters`` and ``presets`` (module docstring), call
    ``super().__init__(image_shape, preset, **overrides)`` — which sets ``config`` and ``image_shape`` — build
    their layers from ``self.config`` and implement ``_forward`` / ``_inverse``."""

    name: str = "?"
    hyperparameters: dict = {}  # name -> bench.core.registry.Param (type, range, doc; the values come from the presets)
    presets: dict = {}      # preset name (every key of PRESET_SHAPES) -> {hyper-parameter: value}
    description: str = ""
    image_shape: tuple
    config: dict

    def __init__(self, image_shape=None, preset: str | None = "s", **overrides):
        super().__init__()
        self.config = self.resolve_config(image_shape, preset, overrides)
        self.image_shape = tuple(self.config["image_shape"])

    @classmethod
    def resolve_config(cls, image_shape, preset: str | None, overrides: dict) -> dict:
        """The model's config: the preset's hyper-parameters with ``overrides`` merged in, each checked against
        its declaration, and ``image_shape`` (default: the preset's); UserError for an unknown preset, an unknown
        hyper-parameter or a value out of range."""
        preset = "s" if preset is None else preset
        if preset not in cls.presets:
            raise UserError(f"unknown preset {preset!r} for prior {cls.name!r}; valid: {', '.join(cls.presets)}")
        values = cls.presets[preset]
        declared = {k: replace(p, default=values.get(k)) for k, p in cls.hyperparameters.items()}
        hp = resolve_params("prior", cls.name, declared, overrides)
        if image_shape is None:
            image_shape = PRESET_SHAPES[preset]
        if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3 or not all(
                isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in image_shape):
            raise UserError(f"image_shape must be (C, H, W) with whole numbers in 1..{MAX_SIDE}, got {image_shape!r}")
        return {"arch": cls.name, "preset": preset, "image_shape": [int(s) for s in image_shape], **hp}

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


def build_prior(config: dict) -> FlowPrior:
    """Rebuild a prior from its ``config`` dict (architecture looked up in the registry)."""
    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch is None:
        raise UserError("prior config has no 'arch' entry")
    return ARCHS.get(arch)(**cfg)


def n_params(model) -> int:
    """Number of weights of ``model``."""
    return sum(p.numel() for p in model.parameters())
