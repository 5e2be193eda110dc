"""Maximum-likelihood training of a flow prior on a small dataset, with early stopping on a validation split.

Data (8-bit view of the [0,1] images): k = round(255·x) ∈ {0..255}.

- Training points are uniformly dequantised, x = (k + U)/256 with U ~ U(0,1)^n drawn from a seeded generator
  (Theis et al. 2016; RealNVP §4.1), after random flips and, for small datasets (the dataset's ``train_augment``),
  random shifts (:func:`bench.datasets.augment.augment`).
- Evaluation is deterministic: x = (k + 0.5)/256, the cell centres.

Bits/dim convention (what every number in the provenance JSON means): the continuous density p on [0,1]^n is
turned into a distribution over the 256^n cells by P(k) ≈ p(x)·256^{−n}, so

    bpd = (−log p(x) + n·log 256) / (n·ln 2) = −log p(x) / (n·ln 2) + 8.

The training loss is the same quantity at the dequantised points (its expectation upper-bounds the discrete
negative log-likelihood in bits/dim). Optimiser: Adam with a linear warm-up, gradient-norm clipping; the
checkpoint kept is the one with the lowest validation bits/dim (early stopping — with ~70 training faces the
held-out loss turns up after about a thousand steps).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

import torch

from bench.core.errors import UserError
from bench.core.provenance import git_commit
from bench.core.seeding import derive_seed, generator
from bench.priors.base import ARCHS, n_params, to_logit
from bench.priors.gaussian import GaussianLogitPrior

INIT_IMAGES = 4096  # images of the data-dependent (actnorm) initialisation: all of a small set, bounded memory
FORMAT = "flowprior-checkpoint"
FORMAT_VERSION = 1
BPD_CONVENTION = ("bpd = -log p(x)/(n ln 2) + 8 with p the density on [0,1]^n, evaluated at the cell centres "
                  "x = (k+0.5)/256, k = round(255 x); training uses x = (k+U)/256, U ~ U(0,1)")


# --- pure helpers -------------------------------------------------------------------------------------------------
def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0,1] floats -> 8-bit levels k = round(255·x) (as float)."""
    return torch.round(x.clamp(0, 1) * 255)


def centres(k: torch.Tensor) -> torch.Tensor:
    """Deterministic evaluation points x = (k + 0.5)/256."""
    return (k + 0.5) / 256


def dequantize(k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Uniform dequantisation x = (k + U)/256, U drawn from ``gen`` (CPU) and moved to k's device."""
    u = torch.rand(k.shape, generator=gen).to(k.device, k.dtype)
    return (k + u) / 256


def bits_per_dim(log_prob: torch.Tensor, n: int) -> torch.Tensor:
    """bpd = −log p(x)/(n·ln 2) + 8 (module docstring)."""
    return -log_prob / (n * math.log(2)) + 8


@torch.no_grad()
def evaluate_bpd(model, images: torch.Tensor, batch: int = 256) -> float:
    """Mean bits/dim of ``images`` (in [0,1]) at their 8-bit cell centres; deterministic."""
    k = quantize(images)
    n = images[0].numel()
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    vals = [bits_per_dim(model.log_prob(centres(k[i:i + batch]).to(dev)), n).cpu() for i in range(0, len(k), batch)]
    return float(torch.cat(vals).mean())


def ood_bpd(model, dataset: str, size: int) -> dict:
    """Bits/dim of the OOD set declared by ``dataset`` (``Dataset.ood``), for the provenance and ``list priors``:
    ``{"ood_dataset": name, "ood_bpd": value}`` (empty if the dataset declares none)."""
    from bench.datasets.base import DATASETS, load_dataset, parse_dataset_name

    ood = DATASETS.get(parse_dataset_name(dataset)).ood
    if ood is None:
        return {}
    return {"ood_dataset": ood, "ood_bpd": round(evaluate_bpd(model, load_dataset(ood, "test", size).images), 4)}


def fit_gaussian_baseline(train_images: torch.Tensor) -> GaussianLogitPrior:
    """The trivial prior: independent per-pixel N(μ, σ²) fitted (ML) in logit space on the train cell centres."""
    u, _ = to_logit(centres(quantize(train_images)).double())
    mean, std = u.mean(0), u.std(0, unbiased=False).clamp_min(1e-3)
    return GaussianLogitPrior(tuple(train_images.shape[1:]), mean=mean.float(), std=std.float())


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(model, path) -> str:
    """Write ``{"format", "version", "config" (JSON string), "state_dict"}`` (loadable with weights_only=True)
    atomically; returns the sha256 of the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "config": json.dumps(model.config, sort_keys=True),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


def build_model(arch: str, preset: str, image_shape, seed_parts) -> torch.nn.Module:
    """Construct a model with parameters drawn from an RNG seeded by ``seed_parts`` (the global RNG is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("prior-init", *seed_parts))
        return ARCHS.get(arch)(image_shape, preset)


# --- the training loop --------------------------------------------------------------------------------------------
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")   # checkpoint names: no path separators, no ".."


def train_prior(arch: str, dataset: str = "lfw-faces", size: int = 16, preset: str = "s",
                steps: int = 10000, minutes: float | None = None, seed: int = 0, out: str | Path = ".", batch: int = 32,
                lr: float = 1e-3, device: str = "auto", name: str | None = None, eval_every: int = 25,
                patience: int = 40, warmup: int = 50, progress: bool = True, data_root: str | None = None,
                train_images: int | None = None, eval_images: int | None = None, init: str | None = None) -> dict:
    """Train ``arch``/``preset`` on ``dataset`` (split ``train``, augmented), select on ``val``, report ``test``.

    Writes ``out/<name>.pt`` and ``out/<name>.json`` (default name ``<arch>-<preset>``) and returns the provenance.
    ``data_root`` is the dataset folder (CelebA); ``train_images`` / ``eval_images`` keep the first images of the
    train / val and test splits (None: all — CelebA's full train split is ~8 GB as float32 at 64×64×3).
    Stops after ``steps`` optimiser steps, ``minutes`` of wall time, or ``patience`` evaluations without a new best
    validation bits/dim, whichever comes first. ``init``: a checkpoint of the same architecture, preset and image
    shape to continue from (its weights replace the fresh initialisation; the provenance records it and its
    steps, so a run split in two is described in full).
    """
    from bench.core.device import resolve_device
    from bench.datasets.augment import augment
    from bench.datasets.base import DATASETS, load_dataset, parse_dataset_name

    ARCHS.get(arch)   # UserError naming the valid architectures
    if steps < 1 or batch < 1 or lr <= 0:
        raise UserError(f"--steps and --batch must be >= 1 and --lr > 0 (got {steps}, {batch}, {lr})")
    if name is not None and not SAFE_NAME.match(name):
        raise UserError(f"--name {name!r} is not a safe file name (letters, digits, '.', '_', '-', starting with a "
                        f"letter or digit, at most 64; it names OUT/<name>.pt and never leaves --out)")
    dev = resolve_device(device)
    t0 = time.time()
    train = load_dataset(dataset, "train", size, root=data_root, limit=train_images).images
    val = load_dataset(dataset, "val", size, root=data_root, limit=eval_images).images
    test = load_dataset(dataset, "test", size, root=data_root, limit=eval_images).images
    shape = tuple(train.shape[1:])
    n = math.prod(shape)
    name = name or f"{arch}-{preset}"
    ident = (arch, preset, dataset, size, seed)
    model = build_model(arch, preset, shape, ident).to(dev)
    gen = generator("train-prior", *ident)
    k_train = quantize(train)
    shifts = getattr(DATASETS.get(parse_dataset_name(dataset)), "train_augment", True)

    # data-dependent initialisation (actnorm) on a dequantised pass over the first INIT_IMAGES training images
    model.train()
    with torch.no_grad():
        model.log_prob(dequantize(k_train[:INIT_IMAGES], gen).to(dev))
    previous = None
    if init is not None:
        from bench.priors.catalog import model_from_checkpoint, read_checkpoint

        config, _ = read_checkpoint(init)
        if config != model.config:
            raise UserError(f"--init {init}: its config {config} differs from the model being trained "
                            f"{model.config}")
        model.load_state_dict(model_from_checkpoint(init).state_dict())
        prev_json = Path(init).with_suffix(".json")
        previous = json.loads(prev_json.read_text()) if prev_json.is_file() else {"sha256": sha256_file(init)}
        previous.pop("history", None)

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    best = {"val_bpd": math.inf, "step": 0, "state": copy.deepcopy(model.state_dict())}
    history, bad, step, train_bpd_run = [], 0, 0, float("nan")
    deadline = t0 + minutes * 60 if minutes else math.inf

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=name, dynamic_ncols=True, mininterval=1.0)

    def _eval():
        model.eval()
        v = evaluate_bpd(model, val)
        model.train()
        return v

    stop_reason = "steps"
    while step < steps:
        idx = torch.randint(0, len(k_train), (batch,), generator=gen)
        kb = quantize(augment(k_train[idx] / 255, gen, pad=None if shifts else 0))
        x = dequantize(kb, gen).to(dev)
        loss = bits_per_dim(model.log_prob(x), n).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        opt.step()
        sched.step()
        step += 1
        lv = float(loss.detach())
        train_bpd_run = lv if math.isnan(train_bpd_run) else 0.95 * train_bpd_run + 0.05 * lv
        if not math.isfinite(lv):
            stop_reason = "non-finite loss"
            break
        if step % eval_every == 0 or step == steps:
            v = _eval()
            history.append({"step": step, "train_bpd": round(train_bpd_run, 4), "val_bpd": round(v, 4)})
            if v < best["val_bpd"]:
                best = {"val_bpd": v, "step": step, "state": copy.deepcopy(model.state_dict())}
                bad = 0
            else:
                bad += 1
            if bar is not None:
                bar.set_postfix(train=f"{train_bpd_run:.3f}", val=f"{v:.3f}", best=f"{best['val_bpd']:.3f}")
            if bad >= patience:
                stop_reason = f"early stop (no val improvement in {patience} evaluations)"
                break
        if bar is not None:
            bar.update(1)
        if time.time() > deadline:
            stop_reason = "time limit"
            break
    if bar is not None:
        bar.close()

    model.load_state_dict(best["state"])
    model.eval()
    result = {
        "train_bpd": evaluate_bpd(model, train), "val_bpd": evaluate_bpd(model, val),
        "test_bpd": evaluate_bpd(model, test),
    }
    baseline = fit_gaussian_baseline(train)
    out = Path(out)
    pt = out / f"{name}.pt"
    sha = save_checkpoint(model, pt)
    prov = {
        "name": name, "config": model.config, "arch": arch, "preset": preset, "params": n_params(model),
        "dataset": dataset, "size": size, "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "augmentation": "bench.datasets.augment.augment: horizontal flip" + (" + random reflect-pad shift" if shifts else ""),
        "steps_run": step, "steps_max": steps, "minutes_max": minutes, "stop_reason": stop_reason,
        "best_step": best["step"], "seed": seed, "batch": batch, "lr": lr, "optimizer": "Adam",
        "warmup": warmup, "eval_every": eval_every, "patience": patience,
        **{k: round(v, 4) for k, v in result.items()},
        "gaussian_baseline_test_bpd": round(evaluate_bpd(baseline, test), 4),
        **ood_bpd(model, dataset, size),
        "bpd_convention": BPD_CONVENTION, "history": history,
        "continued_from": previous,
        "git_commit": git_commit()[0], "sha256": sha, "file_size": pt.stat().st_size,
        "torch_version": torch.__version__, "device": str(dev), "wall_time_s": round(time.time() - t0, 1),
    }
    with open(out / f"{name}.json", "w") as f:
        json.dump(prov, f, indent=1)
    return prov
