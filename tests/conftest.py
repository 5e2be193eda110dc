"""Shared fixtures (keep small). Tests run on CPU with one thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bench  # noqa: F401  (before any kernel runs: caps the CPU code path as every CLI run does; bench/core/numerics.py)

torch.set_num_threads(1)


@pytest.fixture
def rng():
    """A fixed numpy Generator for test data (not for code under test, which seeds from identity)."""
    return np.random.default_rng(0)


def write_fake_celeba(root, n: int = 6, splits=(0, 0, 0, 1, 2, 2), size=(218, 178), seed: int = 0):
    """A CelebA-layout folder: ``n`` random RGB JPEGs (H×W = ``size``) named 000001.jpg... and the partition file."""
    from PIL import Image

    rs = np.random.default_rng(seed)
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n):
        name = f"{k + 1:06d}.jpg"
        arr = (rs.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(img_dir / name, quality=90)
        lines.append(f"{name} {splits[k % len(splits)]}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def fake_celeba(tmp_path):
    return write_fake_celeba(tmp_path / "celeba")


@pytest.fixture
def test_solvers():
    """The runner tests' solvers (tests/kit/runs.py) registered for one test."""
    from kit.runs import registered_test_solvers

    with registered_test_solvers():
        yield


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """Two analytic Gaussian-logit priors saved as checkpoints; their paths."""
    from kit.runs import write_test_priors

    return write_test_priors(tmp_path_factory.mktemp("priors"))
