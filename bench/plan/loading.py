"""Per-process caches of what units load by name: prior metadata, checkpoint bytes and dataset splits.

No model stays in a cache: :func:`fresh_model` builds a new one from the checkpoint's immutable bytes each time, so
nothing a solver does to its model reaches another unit or any score (README contract 1).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

_PRIORS: dict = {}
_IMAGES: dict = {}
_CHECKPOINTS: dict = {}


def _catalog_load(spec: str, device):
    """The one call into the prior catalog (tests monkeypatch this)."""
    from bench.priors.catalog import load_prior

    return load_prior(spec, device)


@dataclass(frozen=True)
class PriorMeta:
    """What planning needs of a prior: its name, the checkpoint's sha256 and the image shape it models."""

    name: str
    sha256: str
    image_shape: tuple


def get_prior(spec: str, device="cpu") -> PriorMeta:
    """Load and validate prior ``spec`` once per process (a bad checkpoint is a UserError before any work) and keep
    only its metadata: no model stays in this process for a solver to find; units build theirs (:func:`fresh_model`)."""
    key = (spec, str(device))
    if key not in _PRIORS:
        lp = _catalog_load(spec, torch.device(device))
        _PRIORS[key] = PriorMeta(lp.name, lp.sha256, tuple(lp.model.image_shape))
    return _PRIORS[key]


def fresh_model(spec: str, device, sha256: str):
    """A new frozen model of prior ``spec``, built from the checkpoint's bytes (read once per process and immutable,
    verified against ``sha256``). Each unit builds one for its solver and another for scoring."""
    from bench.priors.catalog import model_from_checkpoint, resolve_path

    if spec not in _CHECKPOINTS:
        path = resolve_path(spec)
        data = path.read_bytes()
        _CHECKPOINTS[spec] = (path, data, hashlib.sha256(data).hexdigest())
    path, data, digest = _CHECKPOINTS[spec]
    if digest != sha256:
        raise RuntimeError(f"prior {spec!r} changed since the run was planned (sha256 {digest[:12]} != "
                           f"{sha256[:12]})")
    return model_from_checkpoint(path, torch.device(device), data)


def get_images(dataset: str, split: str, size: int, root: str | None):
    """The whole ``split`` of ``dataset`` at ``size`` (an ImageSet), cached per process."""
    from bench.datasets.base import load_dataset

    key = (dataset, split, size, root)
    if key not in _IMAGES:
        _IMAGES[key] = load_dataset(dataset, split, size, root)
    return _IMAGES[key]
