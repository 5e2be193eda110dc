"""``image-folder``: any folder of images (e.g. a user's own OOD set), same conventions as the other loaders.

Every ``.png .jpg .jpeg .bmp .tif .tiff`` file directly inside ``--data-root`` (case-insensitive extension, not
recursive), sorted by file name; id ``image-folder/<file stem>``. Each image is centre-cropped to a square, resized
(antialiased) to the requested side, and converted to ``channels`` channels: 1 (default, grey via
``skimage.color.rgb2gray``, matching the embedded grey priors) or 3 (RGB; grey sources are repeated). Select RGB
with the dataset spec ``image-folder[channels=3]``. One split, ``test``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize

torch = lazy_module("torch")

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


MAX_PIXELS = 50_000_000   # a larger file is refused before it is decoded (a 14000² PNG needs ~2.4 GB as float64)


def read_image(path, channels: int = 3) -> np.ndarray:
    """Read an image file as float64 in [0, 1]: (H, W) when ``channels == 1``, else (H, W, 3).

    Integer images are scaled by their type's range (8-bit by 255, 16-bit by 65535, whatever their largest
    value); float images must already lie in [0, 1] (there is no range to scale by), else the file is refused."""
    from PIL import Image, UnidentifiedImageError
    from skimage.color import rgb2gray

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise UserError(f"image {path} is {w}x{h} pixels; at most {MAX_PIXELS:,} are read (resize it first)")
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                if im.mode == "I" and (lo < 0 or hi > 65535):
                    raise UserError(f"image {path}: 32-bit integer pixels ({lo:g}..{hi:g}) are not supported; "
                                    f"save it as 8- or 16-bit")
                arr = np.repeat((arr / 65535.0)[..., None], 3, axis=2)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
                if not np.isfinite(arr).all() or lo < 0 or hi > 1:
                    raise UserError(f"image {path}: float pixels must lie in [0, 1], got {lo:g}..{hi:g} "
                                    f"(save it as 8- or 16-bit, or rescale it)")
                arr = np.repeat(arr[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    return rgb2gray(arr) if channels == 1 else arr


def centre_crop(img: np.ndarray, side: int | None = None) -> np.ndarray:
    """Centre ``side``×``side`` crop (default: the largest square) of an (H, W[, C]) array."""
    H, W = img.shape[:2]
    s = min(H, W) if side is None else min(side, H, W)
    top, left = (H - s) // 2, (W - s) // 2
    return img[top:top + s, left:left + s]


def list_images(root) -> list[Path]:
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist or is not a folder; expected a folder of "
                        f"{'/'.join(e[1:] for e in EXTENSIONS)} images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise UserError(f"image folder {folder} holds no images; expected files ending in {', '.join(EXTENSIONS)}")
    return files


@DATASETS.register("image-folder")
class ImageFolder(Dataset):
    splits = ("test",)
    needs_root = True
    options = {"channels": Param(int, 1, choices=(1, 3), doc="channels of the loaded images: 1 (grey) or 3 (RGB)")}
    description = "any folder of png/jpg/bmp/tif images (--data-root), centre-cropped; grey, or image-folder[channels=3]"

    def load(self, split: str = "test", size: int = 16, root: str | None = None, limit: int | None = None,
             channels: int = 1) -> ImageSet:
        files = list_images(root)
        stems = [p.stem for p in files]
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise UserError(f"image folder {root} has several files named {dup[0]!r} (ids are file stems); "
                            "rename them")
        if limit is not None:
            files = files[:limit]
        imgs = []
        for p in files:
            im = centre_crop(read_image(p, channels))
            imgs.append(resize(im, size))
        return ImageSet(torch.from_numpy(np.stack(imgs)), [f"image-folder/{p.stem}" for p in files],
                        "image-folder", split)
