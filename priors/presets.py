"""Size presets of the flow architectures, and the config round trip shared by both.

- ``xs``: tiny (tens of K parameters) for the smoke grid and the tests.
- ``s``: the embedded default at 16x16 grey; sized so that one forward+backward of ``log_prob`` w.r.t. x at
  batch 40 costs ~10-25 ms on one CPU thread (the default benchmark grid needs several hundred thousand of them).
- ``paper``: CelebA 64x64x3 scale. Glow: L = 4 levels, K = 32 steps per level, 512 hidden channels (Kingma &
  Dhariwal 2018 §5 / the GlowIP code of Asim et al. 2020 App. A, which uses K = 48). RealNVP: 4 scales (64 -> 4
  pixels), residual s/t networks with 8 blocks of 64 feature maps (Dinh et al. 2016 §4.1).

A model's ``config`` is ``{"arch", "preset", "image_shape", <every hyper-parameter>}`` and
``ARCHS.get(config["arch"])(**config_without_arch)`` rebuilds it exactly (see :func:`build_prior`).
"""
from __future__ import annotations

from bench.errors import UserError

PRESETS = {
    "realnvp": {
        "xs": {"scales": 2, "hidden": 8, "blocks": 1, "n_checker": 1, "n_channel": 1, "n_final": 1},
        "s": {"scales": 2, "hidden": 16, "blocks": 1, "n_checker": 2, "n_channel": 2, "n_final": 2},
        "m": {"scales": 2, "hidden": 16, "blocks": 1, "n_checker": 3, "n_channel": 3, "n_final": 3},
        "paper": {"scales": 4, "hidden": 64, "blocks": 8, "n_checker": 3, "n_channel": 3, "n_final": 4},
    },
    "glow": {
        "xs": {"levels": 2, "steps": 2, "hidden": 16},
        "s": {"levels": 3, "steps": 4, "hidden": 32},
        "m": {"levels": 2, "steps": 6, "hidden": 48},
        "paper": {"levels": 4, "steps": 32, "hidden": 512},
    },
}

DEFAULT_SHAPE = {"xs": (1, 16, 16), "s": (1, 16, 16), "m": (1, 28, 28), "paper": (3, 64, 64)}
# Bounds on checkpoint configs (a corrupt or hostile config must not allocate terabytes before failing).
MAX_HIDDEN, MAX_DEPTH, MAX_SIDE = 4096, 64, 1024


def resolve_config(arch: str, image_shape, preset: str | None, overrides: dict) -> dict:
    """Merge ``overrides`` into the preset's hyper-parameters; reject unknown keys / presets (UserError)."""
    table = PRESETS[arch]
    if preset is None:
        preset = "s"
    if preset not in table:
        raise UserError(f"unknown preset {preset!r} for prior {arch!r}; valid: {', '.join(table)}")
    hp = dict(table[preset])
    for k, v in overrides.items():
        if k not in hp:
            raise UserError(f"unknown hyper-parameter {k!r} for prior {arch!r}; valid: {', '.join(sorted(hp))}")
        hi = MAX_HIDDEN if k == "hidden" else MAX_DEPTH
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= hi:
            raise UserError(f"hyper-parameter {k} of prior {arch!r} must be a whole number in 1..{hi}, got {v!r}")
        hp[k] = int(v)
    if image_shape is None:
        image_shape = DEFAULT_SHAPE[preset]
    if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in image_shape):
        raise UserError(f"image_shape must be (C, H, W) with whole numbers in 1..{MAX_SIDE}, got {image_shape!r}")
    image_shape = [int(s) for s in image_shape]
    return {"arch": arch, "preset": preset, "image_shape": image_shape, **hp}


def build_prior(config: dict):
    """Rebuild a prior from its ``config`` dict (architecture looked up in the registry)."""
    from bench.priors.base import ARCHS

    cfg = dict(config)
    arch = cfg.pop("arch", None)
    if arch is None:
        raise UserError("prior config has no 'arch' entry")
    return ARCHS.get(arch)(**cfg)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
