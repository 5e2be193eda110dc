"""``textures``: an out-of-distribution set of high-frequency natural textures, grey, from two images shipped inside
the scikit-image wheel (nothing downloads): grass and gravel.

Patch k of source s is the square of side ``SIDE`` at a position drawn from ``default_rng([SEED, k, index of s])``,
point-sampled (nearest pixel, no antialiasing) to the requested side, so the texture keeps its fine detail at any
size; ``PER_IMAGE`` patches per source, id ``textures/{source}-{k}``. One split, ``test``, in id order.

Why a second OOD set: the faces priors, trained on 70 faces, score every *smooth* natural image better than their own
test faces (the likelihood paradox of Nalisnick et al. 2019; README "Priors"), so ``patches`` (antialiased) is not
out of distribution for them. High-frequency textures are: measured, 1.4-1.6 bits/dim worse than the test faces for
all four faces priors. ``list priors`` prints both figures; a test keeps the gap at least 0.8 bits/dim.
"""
from __future__ import annotations

import numpy as np

from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet
from bench.datasets.patches import _source, crop

torch = lazy_module("torch")

SOURCES = ("grass", "gravel")
SIDE, PER_IMAGE, SEED = 64, 16, 20261206


def texture(name: str, k: int, size: int) -> np.ndarray:
    """Patch ``k`` of source ``name``, point-sampled to size×size; float32 (1, size, size) in [0, 1]."""
    img = crop(_source(name), SIDE, [SEED, k, SOURCES.index(name)])
    idx = (np.arange(size) * SIDE) // size
    return np.clip(img[idx][:, idx], 0, 1)[None].astype(np.float32)


@DATASETS.register("textures")
class Textures(Dataset):
    splits = ("test",)
    description = f"{len(SOURCES) * PER_IMAGE} grey high-frequency texture patches (grass, gravel) shipped with scikit-image"

    def load(self, split: str = "test", size: int = 16, root: str | None = None) -> ImageSet:
        keys = [(s, k) for s in SOURCES for k in range(PER_IMAGE)]
        imgs = np.stack([texture(s, k, size) for s, k in keys])
        return ImageSet(torch.from_numpy(imgs), [f"textures/{s}-{k}" for s, k in keys], "textures", split)
