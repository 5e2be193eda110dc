"""Training view for prior training: random pad-and-crop shifts and horizontal flips.

:func:`augment` keeps the batch shape and the [0, 1] range (reflect padding, no interpolation), and draws all its
randomness from the ``torch.Generator`` it is given, so a training run is reproducible from its seed.
"""
from __future__ import annotations

from bench.core.lazy import lazy_module

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


def augment(images: torch.Tensor, generator: torch.Generator, pad: int | None = None,
            flip: bool = True) -> torch.Tensor:
    """Randomly shift each image of a (N, C, H, W) batch by up to ``pad`` pixels (reflect-pad then crop back to
    H×W; default ``pad = max(1, H // 8)``) and flip it left-right with probability 1/2."""
    N, C, H, W = images.shape
    if pad is None:
        pad = max(1, min(H, W) // 8)
    pad = min(pad, H - 1, W - 1)
    gdev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (N,), generator=generator, device=gdev).to(images.device)
    ox = torch.randint(0, 2 * pad + 1, (N,), generator=generator, device=gdev).to(images.device)
    flips = (torch.rand((N,), generator=generator, device=gdev) < 0.5).to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect") if pad > 0 else images
    ar_h = torch.arange(H, device=images.device)
    ar_w = torch.arange(W, device=images.device)
    rows = oy[:, None] + ar_h                                     # (N, H)
    cols = torch.where(flips[:, None], W - 1 - ar_w, ar_w) if flip else ar_w.expand(N, W)
    cols = ox[:, None] + cols                                     # (N, W)
    n = torch.arange(N, device=images.device)[:, None, None, None]
    c = torch.arange(C, device=images.device)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]
