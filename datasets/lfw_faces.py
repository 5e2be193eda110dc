"""``lfw-faces``: the embedded in-distribution set, the 100 face images of scikit-image's ``lfw_subset``.

``skimage.data.lfw_subset()`` ships inside the scikit-image wheel (no download): 200 grey 25×25 crops, the first 100
of which are faces (the rest are non-faces, unused). Image ``k`` (0-based index into the subset) has id
``lfw-faces/{k:04d}``.

Split (fixed, reproducible): ``perm = np.random.default_rng(20230601).permutation(100)``;
``test = perm[:20]``, ``val = perm[20:30]``, ``train = perm[30:]`` (70 images); each split is returned in id order.
``val`` is held out from prior training (early stopping, step-size tuning) so ``test`` stays untouched; ``train``
and ``val`` together are the 80 non-test images of the 80/20 split. :func:`split_indices` recomputes the lists
(``TEST_INDICES`` / ``VAL_INDICES`` below pin them; a test checks the permutation still gives them):

- test: 0, 1, 2, 11, 27, 35, 37, 43, 44, 45, 47, 56, 60, 63, 70, 74, 89, 90, 95, 99
- val: 3, 13, 18, 20, 28, 30, 46, 69, 72, 76
- train: the other 70.

Images are resized (antialiased, :func:`bench.datasets.base.resize`) to the requested side (default 16; 8, 24 and
32 work, 32 is an upsampling of the 25×25 source).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize

torch = lazy_module("torch")

SPLIT_SEED = 20230601
N_FACES = 100
N_TEST, N_VAL = 20, 10
TEST_INDICES = (0, 1, 2, 11, 27, 35, 37, 43, 44, 45, 47, 56, 60, 63, 70, 74, 89, 90, 95, 99)
VAL_INDICES = (3, 13, 18, 20, 28, 30, 46, 69, 72, 76)


@lru_cache(maxsize=1)
def split_indices() -> dict[str, list[int]]:
    """Indices (into ``lfw_subset()[:100]``) of each split, sorted."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(N_FACES)
    parts = {"test": perm[:N_TEST], "val": perm[N_TEST:N_TEST + N_VAL], "train": perm[N_TEST + N_VAL:]}
    return {k: sorted(int(i) for i in v) for k, v in parts.items()}


@lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    from skimage.data import lfw_subset

    return np.asarray(lfw_subset()[:N_FACES], dtype=np.float64)


@DATASETS.register("lfw-faces")
class LFWFaces(Dataset):
    splits = ("train", "val", "test")
    ood = "textures"
    description = "100 grey LFW faces shipped with scikit-image; fixed 70/10/20 train/val/test split"

    def load(self, split: str, size: int = 16, root: str | None = None) -> ImageSet:
        idx = split_indices()[split]
        faces = _faces()
        imgs = np.stack([resize(faces[i], size) for i in idx])
        return ImageSet(torch.from_numpy(imgs), [f"lfw-faces/{i:04d}" for i in idx], "lfw-faces", split)
