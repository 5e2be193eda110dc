"""``fashion-mnist``: the sharp-prior domain, Zalando's Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence).

60,000 training and 10,000 test grey 28×28 images of clothing in the standard IDX format (gzipped or not). The
full set is read from a folder: ``--data-root`` if given, else where Debian's ``dataset-fashion-mnist`` package
installs it (``/usr/share/datasets/fashion-mnist``; ``apt-get install dataset-fashion-mnist``).

Splits (fixed, reproducible):

- ``test``: the 10,000 images of ``t10k-images-idx3-ubyte`` in file order; id ``fashion-mnist/test/{k:05d}``.
- ``val``: 5,000 images of ``train-images-idx3-ubyte`` chosen by ``default_rng(SPLIT_SEED).permutation(60000)[:5000]``,
  returned in file order; id ``fashion-mnist/train/{k:05d}`` (k = index in the training file).
- ``train``: the other 55,000, in file order, same ids.

The evaluation images the shipped grids use — the first ``SHIPPED["test"]`` test and ``SHIPPED["val"]`` validation
images — are shipped in ``datasets/data/fashion_mnist_eval.npz`` (uint8, with the sha256 of the source files), so
the benchmark runs without the package; prior training needs the full set. Where both exist they are identical (a
test checks it). Images are ``k/255`` at 28×28; another ``size`` is an antialiased resize.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize

torch = lazy_module("torch")

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
SPLIT_SEED = 20261206
N_TRAIN_FILE, N_VAL = 60000, 5000
SHIPPED_FILE = Path(__file__).with_name("data") / "fashion_mnist_eval.npz"
SHIPPED = {"test": 512, "val": 256}
INSTALL_HINT = (f"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist, files in "
                f"{DEBIAN_ROOT}) or pass --data-root FOLDER holding {FILES['train']}[.gz] and {FILES['test']}[.gz]")


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 array (N, H, W) from an IDX3 file (magic 0x00000803), gzipped if the name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or int.from_bytes(data[:4], "big") != 0x803:
        raise UserError(f"{path} is not an IDX3 image file (magic 0x00000803)")
    n, h, w = (int.from_bytes(data[4 * i:4 * i + 4], "big") for i in (1, 2, 3))
    if len(data) != 16 + n * h * w:
        raise UserError(f"{path} is truncated: header says {n}×{h}×{w} bytes, file has {len(data) - 16}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h, w)


def find_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def split_indices() -> dict[str, np.ndarray]:
    """Indices into the training file of ``train`` and ``val`` (sorted); ``test`` is the whole test file."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(N_TRAIN_FILE)
    return {"val": np.sort(perm[:N_VAL]), "train": np.sort(perm[N_VAL:])}


@lru_cache(maxsize=2)
def _full(root: str) -> dict[str, tuple[np.ndarray, list[str]]]:
    files = {k: find_file(Path(root), v) for k, v in FILES.items()}
    missing = [FILES[k] for k, p in files.items() if p is None]
    if missing:
        raise UserError(f"fashion-mnist: {', '.join(missing)} not found in {root}; {INSTALL_HINT}")
    train, test = read_idx_images(files["train"]), read_idx_images(files["test"])
    idx = split_indices()
    out = {"test": (test, [f"fashion-mnist/test/{k:05d}" for k in range(len(test))])}
    for split in ("train", "val"):
        out[split] = (train[idx[split]], [f"fashion-mnist/train/{k:05d}" for k in idx[split]])
    return out


@lru_cache(maxsize=1)
def _shipped() -> dict[str, tuple[np.ndarray, list[str]]]:
    with np.load(SHIPPED_FILE) as z:
        return {s: (z[f"{s}_images"], [str(i) for i in z[f"{s}_ids"]]) for s in SHIPPED}


def source(split: str, root: str | None) -> tuple[np.ndarray, list[str], bool]:
    """(uint8 images, ids, complete) of ``split``: the full split when the files are present, else the shipped
    subset (``complete = False``; the first images of the split, identical to the full files' first images)."""
    if root is None and Path(DEBIAN_ROOT).is_dir():
        root = DEBIAN_ROOT
    if root is not None:
        return (*_full(str(root))[split], True)
    if split in SHIPPED:
        return (*_shipped()[split], False)
    raise UserError(f"fashion-mnist: split {split!r} needs the full dataset; {INSTALL_HINT}")


@DATASETS.register("fashion-mnist")
class FashionMNIST(Dataset):
    splits = ("train", "val", "test")
    native_size = 28
    ood = "patches"
    train_augment = False  # 55,000 images: no shifts (reflect padding would invent borders); flips only
    description = ("Fashion-MNIST, 28×28 grey clothing (MIT); 55,000 train / 5,000 val / 10,000 test; "
                   f"the first {SHIPPED['test']} test and {SHIPPED['val']} val images ship with the repository")

    def load(self, split: str, size: int = 28, root: str | None = None, limit: int | None = None) -> ImageSet:
        """The split (see the module docstring); without the full files, the shipped first images of ``test`` and
        ``val``, marked incomplete (``ImageSet.missing`` says what to install for the rest)."""
        imgs, ids, complete = source(split, root)
        if limit is not None and (complete or limit <= len(ids)):
            imgs, ids, complete = imgs[:limit], ids[:limit], True
        x = imgs.astype(np.float32) / 255.0
        x = x[:, None] if size == imgs.shape[1] else np.stack([resize(im, size) for im in x])
        return ImageSet(torch.from_numpy(np.ascontiguousarray(x)), list(ids), "fashion-mnist", split,
                        missing=None if complete else INSTALL_HINT)
