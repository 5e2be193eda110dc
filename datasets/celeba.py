"""``celeba``: the standard aligned CelebA folder layout, read from ``--data-root``::

    ROOT/img_align_celeba/000001.jpg ... 202599.jpg
    ROOT/list_eval_partition.txt        lines "000001.jpg 0"  (0 = train, 1 = val, 2 = test)

Each image is centre-cropped to 148×148 and resized (antialiased) to the requested side — 64 in the AIPO/GlowIP
setup — as RGB (C = 3). Splits come from the partition file; each split is in file-name order and ids are
``celeba/<file stem>``. Only the images that are returned are read, so ``limit`` (passed through by
:func:`bench.datasets.base.load_dataset`) keeps a run on the first few test images cheap.

A missing root, image folder or partition file, a malformed partition line, or a listed image that is not in the
folder raises one :class:`~bench.core.errors.UserError` that names the path and the expected layout.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize
from bench.datasets.image_folder import centre_crop, read_image

torch = lazy_module("torch")

CROP = 148
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
LAYOUT = "expected ROOT/img_align_celeba/*.jpg and ROOT/list_eval_partition.txt with lines like '000001.jpg 0'"


def _fail(path, what: str):
    raise UserError(f"CelebA: {what}: {path} ({LAYOUT})")


def read_partition(path: Path) -> dict[str, int]:
    """``{file name: split code}`` from ``list_eval_partition.txt``."""
    if not path.is_file():
        _fail(path, "missing partition file")
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                _fail(f"{path}:{lineno}", f"malformed partition line {line.strip()[:60]!r}")
            out[parts[0]] = int(parts[1])
    if not out:
        _fail(path, "empty partition file")
    return out


def split_files(root, split: str) -> list[Path]:
    """The image paths of ``split`` in file-name order (checks the layout, reads no image)."""
    root = Path(root)
    if not root.is_dir():
        _fail(root, "data root does not exist")
    folder = root / "img_align_celeba"
    if not folder.is_dir():
        _fail(folder, "missing image folder")
    part = read_partition(root / "list_eval_partition.txt")
    code = SPLIT_CODES[split]
    return [folder / name for name in sorted(n for n, c in part.items() if c == code)]


def load_image(path: Path, size: int) -> np.ndarray:
    """(3, size, size) float32: centre 148×148 crop, antialiased resize."""
    return resize(centre_crop(read_image(path, channels=3), CROP), size)


@DATASETS.register("celeba")
class CelebA(Dataset):
    splits = ("train", "val", "test")
    needs_root = True
    description = "CelebA folder (img_align_celeba/ + list_eval_partition.txt), centre crop 148, RGB"

    def load(self, split: str = "test", size: int = 64, root: str | None = None,
             limit: int | None = None) -> ImageSet:
        files = split_files(root, split)
        if not files:
            _fail(Path(root) / "list_eval_partition.txt", f"no images in split {split!r}")
        if limit is not None:
            files = files[:limit]
        for p in files:
            if not p.is_file():
                _fail(p, "image listed in list_eval_partition.txt is missing")
        imgs = np.stack([load_image(p, size) for p in files])
        return ImageSet(torch.from_numpy(imgs), [f"celeba/{p.stem}" for p in files], "celeba", split)
