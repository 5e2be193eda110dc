"""``ood``: the embedded out-of-distribution set — grey square face crops from images shipped inside packages the
harness already depends on (nothing downloads):

- ``ood/astronaut``: ``skimage.data.astronaut()`` (Eileen Collins), box (72, 160, 92)
- ``ood/camera``: ``skimage.data.camera()`` (the cameraman, in profile behind his camera), box (100, 200, 100)
- ``ood/chelsea``: ``skimage.data.chelsea()`` (a cat face, "human-like"), box (30, 120, 240)
- ``ood/grace_hopper``: matplotlib's sample ``grace_hopper.jpg``, box (145, 145, 180)

Boxes are (top row, left column, side) in the source image, chosen (and checked visually) to frame the face
roughly as the LFW crops do: eyes about a third of the way down, forehead to mouth/chin. Colour crops are converted with ``skimage.color.rgb2gray``; all are resized
(antialiased) to the requested side. One split, ``test``, in id order.
"""
from __future__ import annotations

import numpy as np

from bench.core.lazy import lazy_module
from bench.datasets.base import DATASETS, Dataset, ImageSet, resize

torch = lazy_module("torch")

# name -> (top row, left column, side) in the source image's pixel grid
BOXES = {
    "astronaut": (72, 160, 92),
    "camera": (100, 200, 100),
    "chelsea": (30, 120, 240),
    "grace_hopper": (145, 145, 180),
}


def _source(name: str) -> np.ndarray:
    """The full source image as float in [0, 1] (H, W) or (H, W, 3)."""
    if name == "grace_hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            img = np.asarray(Image.open(f).convert("RGB"))
    else:
        from skimage import data

        img = getattr(data, name)()
    return img.astype(np.float64) / 255.0


def crop(name: str) -> np.ndarray:
    """The grey square face crop ``name`` at source resolution, float in [0, 1]."""
    from skimage.color import rgb2gray

    img = _source(name)
    if img.ndim == 3:
        img = rgb2gray(img)
    r, c, s = BOXES[name]
    out = img[r:r + s, c:c + s]
    assert out.shape == (s, s), (name, out.shape)
    return out


@DATASETS.register("ood")
class OODFaces(Dataset):
    splits = ("test",)
    description = "grey face crops (astronaut, cameraman, Grace Hopper, a cat) shipped with scikit-image/matplotlib"

    def load(self, split: str = "test", size: int = 16, root: str | None = None) -> ImageSet:
        names = sorted(BOXES)
        imgs = np.stack([resize(crop(n), size) for n in names])
        return ImageSet(torch.from_numpy(imgs), [f"ood/{n}" for n in names], "ood", split)
