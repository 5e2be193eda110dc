"""Registry, the ImageSet every loader returns, and the shared resize."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Registry

torch = lazy_module("torch")

DATASETS = Registry("dataset", "bench.datasets")


@dataclass
class ImageSet:
    """float32 images in [0, 1], shape (N, C, H, W), with stable string ids (unique across datasets)."""

    images: torch.Tensor
    ids: list[str]
    dataset: str
    split: str
    missing: str | None = None   # set when only the first images of the split are here: how to get the rest

    def __len__(self):
        return len(self.ids)

    def require(self, n: int | None) -> None:
        """Raise UserError unless the first ``n`` images (None: the whole split) are here."""
        if n is None and self.missing:
            raise UserError(f"all of {self.dataset}/{self.split} needs the full dataset ({len(self)} images ship "
                            f"with the repository); {self.missing}")
        if n is not None and n > len(self):
            hint = f"; {self.missing}" if self.missing else ""
            raise UserError(f"{n} images requested from {self.dataset}/{self.split}, which has only {len(self)}"
                            f"{hint}")

    def head(self, n: int | None) -> "ImageSet":
        self.require(n)
        if n is None:
            return self
        return ImageSet(self.images[:n], self.ids[:n], self.dataset, self.split, self.missing if n == len(self)
                        else None)


class Dataset:
    """Subclasses register with ``@DATASETS.register(name)`` and implement ``load``."""

    name: str = "?"
    splits: tuple = ("test",)
    needs_root: bool = False
    ood: str | None = None  # the dataset that is out of distribution for priors trained on this one (its domain's
                            # OOD split; `list priors` shows both bits/dim)
    description: str = ""
    options: dict = {}  # extra keyword options of ``load``: name -> bench.core.registry.Param (or a plain default), set
                        # by spec: ``image-folder[channels=3]``

    def load(self, split: str, size: int, root: str | None = None) -> ImageSet:
        raise NotImplementedError


def parse_dataset_name(spec: str) -> str:
    """The registered name of a dataset spec (``image-folder[channels=3]`` -> ``image-folder``)."""
    from bench.core.registry import parse_spec

    return parse_spec(spec)[0]


def load_dataset(name: str, split: str = "test", size: int = 16, root: str | None = None,
                 limit: int | None = None) -> ImageSet:
    """Load ``split`` of dataset ``name`` at ``size``×``size``; ``limit`` keeps the first images (in id order).

    ``name`` may carry loader options as a spec (``image-folder[channels=3]``, see ``Dataset.options``); loaders
    whose ``load`` accepts ``limit`` get it too, so they read only the images they return (CelebA)."""
    import inspect

    from bench.core.registry import parse_spec, resolve_params

    name, overrides = parse_spec(name)
    ds = DATASETS.get(name)()
    options = resolve_params("dataset", name, ds.options, overrides)
    if split not in ds.splits:
        raise UserError(f"unknown split {split!r} for dataset {name!r}; valid: {', '.join(ds.splits)}")
    if not isinstance(size, int) or size < 4:
        raise UserError(f"image size must be an integer >= 4, got {size!r}")
    if ds.needs_root and not root:
        raise UserError(f"dataset {name!r} needs --data-root (a folder path)")
    if limit is not None and "limit" in inspect.signature(ds.load).parameters:
        options["limit"] = limit
    return ds.load(split, size, root, **options).head(limit)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Antialiased resize of an (H, W) or (H, W, C) float image in [0, 1] to size×size; returns (C, size, size)."""
    from skimage.transform import resize as sk_resize

    if img.ndim == 2:
        img = img[..., None]
    out = sk_resize(img, (size, size, img.shape[2]), anti_aliasing=True, preserve_range=True, order=1)
    return np.clip(out, 0, 1).transpose(2, 0, 1).astype(np.float32)
