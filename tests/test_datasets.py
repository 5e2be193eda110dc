"""Dataset loaders: shapes, range, ids, fixed splits, the augmentation view, the CelebA layout and its errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_fake_celeba

from bench.core.errors import UserError
from bench.datasets.augment import augment
from bench.datasets.base import DATASETS, load_dataset
from bench.datasets.lfw_faces import TEST_INDICES, VAL_INDICES, split_indices


def _check_set(s, n=None, c=1, size=16):
    x = s.images
    assert x.dtype == torch.float32 and x.dim() == 4
    assert x.shape[1:] == (c, size, size)
    assert n is None or x.shape[0] == n
    assert len(s.ids) == x.shape[0] == len(s)
    assert len(set(s.ids)) == len(s.ids)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.01  # not blank


def test_registered():
    assert {"lfw-faces", "ood", "celeba", "image-folder"} <= set(DATASETS.names())


@pytest.mark.parametrize("split,n", [("train", 70), ("val", 10), ("test", 20)])
def test_lfw_splits(split, n):
    s = load_dataset("lfw-faces", split)
    _check_set(s, n)
    assert all(i.startswith("lfw-faces/") for i in s.ids) and s.ids == sorted(s.ids)
    again = load_dataset("lfw-faces", split)
    assert again.ids == s.ids and torch.equal(again.images, s.images)


def test_lfw_split_disjoint_and_pinned():
    sp = split_indices()
    sets = [set(sp[k]) for k in ("train", "val", "test")]
    assert sum(map(len, sets)) == 100 and set.union(*sets) == set(range(100))
    assert tuple(sp["test"]) == TEST_INDICES and tuple(sp["val"]) == VAL_INDICES
    ids = [set(load_dataset("lfw-faces", k).ids) for k in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


@pytest.mark.parametrize("size", [8, 16, 24, 32])
def test_lfw_sizes(size):
    _check_set(load_dataset("lfw-faces", "test", size), 20, size=size)


def test_lfw_images_are_faces_resized():
    """Image k of the set is the k-th lfw_subset face, resized (25×25 source returns exactly)."""
    from skimage.data import lfw_subset

    s = load_dataset("lfw-faces", "test", 25)
    k = int(s.ids[3].split("/")[1])
    np.testing.assert_allclose(s.images[3, 0].numpy(), lfw_subset()[k], atol=1e-6)


def test_ood():
    s = load_dataset("ood", "test", 16)
    _check_set(s)
    assert len(s) >= 4 and all(i.startswith("ood/") for i in s.ids)
    assert load_dataset("ood", "test", 16).ids == s.ids
    s32 = load_dataset("ood", "test", 32)
    _check_set(s32, len(s), size=32)
    # different crops differ from each other and from the in-distribution ids
    assert not set(s.ids) & set(load_dataset("lfw-faces", "test").ids)
    flat = s.images.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(s)) * 1e3).min() > 0.5


def test_limit_and_unknown_split():
    assert load_dataset("lfw-faces", "test", limit=5).ids == load_dataset("lfw-faces", "test").ids[:5]
    with pytest.raises(UserError, match="nope"):
        load_dataset("lfw-faces", "nope")
    with pytest.raises(UserError, match="only 20"):
        load_dataset("lfw-faces", "test", limit=21)


def test_augment_shape_range_determinism():
    x = load_dataset("lfw-faces", "train", 16).images[:32]
    a1 = augment(x, torch.Generator().manual_seed(3))
    a2 = augment(x, torch.Generator().manual_seed(3))
    a3 = augment(x, torch.Generator().manual_seed(4))
    assert a1.shape == x.shape and a1.dtype == x.dtype
    assert a1.min() >= x.min() and a1.max() <= x.max()
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert not torch.equal(a1, x)
    # every output is a shifted (and possibly flipped) copy: its pixels are a subset of its own image's values
    for i in range(4):
        assert set(a1[i].flatten().tolist()) <= set(x[i].flatten().tolist())


def test_augment_pure_flip():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(1), pad=0)
    flipped = torch.tensor([torch.equal(a[i], x[i].flip(-1)) for i in range(64)])
    same = torch.tensor([torch.equal(a[i], x[i]) for i in range(64)])
    assert (flipped | same).all() and 10 < flipped.sum() < 54


def test_celeba_fake_folder(fake_celeba):
    tr = load_dataset("celeba", "train", 64, root=str(fake_celeba))
    va = load_dataset("celeba", "val", 64, root=str(fake_celeba))
    te = load_dataset("celeba", "test", 64, root=str(fake_celeba))
    _check_set(tr, 3, c=3, size=64)
    _check_set(te, 2, c=3, size=64)
    assert tr.ids == ["celeba/000001", "celeba/000002", "celeba/000003"]
    assert va.ids == ["celeba/000004"] and te.ids == ["celeba/000005", "celeba/000006"]
    assert load_dataset("celeba", "test", 16, root=str(fake_celeba), limit=1).images.shape == (1, 3, 16, 16)


def test_celeba_centre_crop(tmp_path):
    """The 148×148 centre crop is what gets resized: a frame outside it does not show."""
    from PIL import Image

    root = write_fake_celeba(tmp_path, n=1, splits=(2,))
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[35:183, 15:163] = 200  # exactly the centre crop: rows (218-148)//2.., cols (178-148)//2..
    Image.fromarray(arr).save(root / "img_align_celeba" / "000001.jpg", quality=100)
    x = load_dataset("celeba", "test", 32, root=str(root)).images
    assert abs(float(x.mean()) - 200 / 255) < 0.02


def test_celeba_limit_reads_only_needed(fake_celeba):
    """With a limit, images beyond it are never read (a missing later file does not matter)."""
    (fake_celeba / "img_align_celeba" / "000006.jpg").unlink()
    assert load_dataset("celeba", "test", 16, root=str(fake_celeba), limit=1).ids == ["celeba/000005"]
    with pytest.raises(UserError, match="000006.jpg"):
        load_dataset("celeba", "test", 16, root=str(fake_celeba))


def test_celeba_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="nowhere.*img_align_celeba"):
        load_dataset("celeba", "test", 64, root=str(missing))
    root = write_fake_celeba(tmp_path / "c", n=2, splits=(2,))
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match="list_eval_partition.txt"):
        load_dataset("celeba", "test", 64, root=str(root))
    (root / "list_eval_partition.txt").write_text("000001.jpg 2\n000002.jpg three\n")
    with pytest.raises(UserError, match=r"list_eval_partition.txt:2"):
        load_dataset("celeba", "test", 64, root=str(root))
    (root / "list_eval_partition.txt").write_text("000001.jpg 2\n")
    for p in (root / "img_align_celeba").iterdir():
        p.unlink()
    (root / "img_align_celeba").rmdir()
    with pytest.raises(UserError, match="img_align_celeba"):
        load_dataset("celeba", "test", 64, root=str(root))
    with pytest.raises(UserError, match="data-root"):
        load_dataset("celeba", "test", 64)


def test_image_folder(tmp_path):
    from PIL import Image

    rs = np.random.default_rng(1)
    Image.fromarray((rs.random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "b.png")
    Image.fromarray((rs.random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray((rs.random((25, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "c.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    s = load_dataset("image-folder", "test", 16, root=str(tmp_path))
    _check_set(s, 3, c=1)
    assert s.ids == ["image-folder/a", "image-folder/b", "image-folder/c"]
    rgb = load_dataset("image-folder[channels=3]", "test", 8, root=str(tmp_path))
    _check_set(rgb, 3, c=3, size=8)
    # the grey source becomes three equal channels
    assert torch.allclose(rgb.images[0, 0], rgb.images[0, 1]) and torch.allclose(rgb.images[0, 0], rgb.images[0, 2])
    with pytest.raises(UserError, match="channels"):
        load_dataset("image-folder[channels=2]", "test", 8, root=str(tmp_path))
    with pytest.raises(UserError, match="colour"):
        load_dataset("image-folder[colour=1]", "test", 8, root=str(tmp_path))


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        load_dataset("image-folder", "test", 16, root=str(tmp_path / "empty"))
    with pytest.raises(UserError, match="missing_dir"):
        load_dataset("image-folder", "test", 16, root=str(tmp_path / "missing_dir"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="x.png"):
        load_dataset("image-folder", "test", 16, root=str(tmp_path / "bad"))


def test_images_load_by_their_bit_depth(tmp_path):
    """8-bit by 255 and 16-bit by 65535 whatever the largest value (a dark 16-bit image stays dark); float images
    must already lie in [0, 1]."""
    from PIL import Image

    from bench.core.errors import UserError
    from bench.datasets.image_folder import read_image

    dark16 = np.full((8, 8), 200, dtype=np.uint16)
    Image.fromarray(dark16).save(tmp_path / "dark16.png")
    np.testing.assert_allclose(read_image(tmp_path / "dark16.png", channels=1), 200 / 65535, rtol=1e-6)
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(tmp_path / "u8.png")
    np.testing.assert_allclose(read_image(tmp_path / "u8.png", channels=1), 200 / 255, rtol=1e-3)
    Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32)).save(tmp_path / "ok.tif")
    np.testing.assert_allclose(read_image(tmp_path / "ok.tif", channels=1), 0.25, rtol=1e-6)
    Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32)).save(tmp_path / "f255.tif")
    with pytest.raises(UserError, match=r"float pixels must lie in \[0, 1\]"):
        read_image(tmp_path / "f255.tif")


def test_textures_are_fixed_point_samples_of_their_patch():
    """32 fixed patches; at any size a texture is the nearest-pixel sample of the same 64-px square."""
    from bench.datasets.patches import _source, crop
    from bench.datasets.textures import PER_IMAGE, SEED, SIDE, SOURCES

    s16, s32 = load_dataset("textures", "test", 16), load_dataset("textures", "test", 32)
    assert len(s16) == 32 and s16.ids == s32.ids and s16.ids[0] == "textures/grass-0"
    assert tuple(s16.images.shape[1:]) == (1, 16, 16) and tuple(s32.images.shape[1:]) == (1, 32, 32)
    assert torch.equal(s32.images[:, :, ::2, ::2], s16.images)          # 64 → 32 → 16 by point sampling
    full = crop(_source("gravel"), SIDE, [SEED, PER_IMAGE - 1, SOURCES.index("gravel")])
    assert np.allclose(load_dataset("textures", "test", 64).images[-1, 0].numpy(), np.clip(full, 0, 1), atol=1e-6)
