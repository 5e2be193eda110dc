"""``patches``: an out-of-distribution set of natural-image patches, grey, from images shipped inside the
scikit-image wheel (nothing downloads): textures (brick, grass, gravel), photographs (camera, coffee, coins, moon,
rocket) and a scanned page.

Patch k of source image s is the square of side ``SIDE`` at a position drawn from
``default_rng([SEED, k, index of s])`` inside the image, so the set is fixed; ``PER_IMAGE`` patches per source,
id ``patches/{source}-{k}``. Colour sources are converted with ``skimage.color.rgb2gray``; every patch is resized
(antialiased) to the requested side. One split, ``test``, in id order.

Neither faces nor clothing: both shipped domains' priors score these patches far worse than their own test images
(``list priors`` prints both figures; a test keeps the gap at least 0.8 bits/dim).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize

torch = lazy_module("torch")

SOURCES = ("brick", "camera", "coffee", "coins", "grass", "gravel", "moon", "page", "rocket")
SIDE, PER_IMAGE, SEED = 96, 4, 20261206


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray:
    from skimage import data
    from skimage.color import rgb2gray

    img = np.asarray(getattr(data, name)(), dtype=np.float64)
    img = img / 255.0 if img.max() > 1 else img
    return rgb2gray(img) if img.ndim == 3 else img


def patch(name: str, k: int) -> np.ndarray:
    """Patch ``k`` of source ``name`` at source resolution, float in [0, 1]."""
    return crop(_source(name), SIDE, [SEED, k, SOURCES.index(name)])


def crop(img: np.ndarray, side: int, key) -> np.ndarray:
    """The side×side square of ``img`` at a position drawn from ``default_rng(key)``."""
    rng = np.random.default_rng(key)
    r = int(rng.integers(0, img.shape[0] - side + 1))
    c = int(rng.integers(0, img.shape[1] - side + 1))
    return img[r:r + side, c:c + side]


@DATASETS.register("patches")
class Patches(Dataset):
    splits = ("test",)
    description = f"{len(SOURCES) * PER_IMAGE} grey natural-image patches (textures, photographs, text) shipped with scikit-image"

    def load(self, split: str = "test", size: int = 16, root: str | None = None) -> ImageSet:
        keys = [(s, k) for s in SOURCES for k in range(PER_IMAGE)]
        imgs = np.stack([resize(patch(s, k), size) for s, k in keys])
        return ImageSet(torch.from_numpy(imgs), [f"patches/{s}-{k}" for s, k in keys], "patches", split)
