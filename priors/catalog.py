"""Shipped checkpoints and loading priors by name or path.

A checkpoint is a ``.pt`` file written by :func:`bench.priors.training.save_checkpoint`:
``{"format": "flowprior-checkpoint", "version": 1, "config": "<JSON of model.config>", "state_dict": {...}}``,
read with ``torch.load(weights_only=True)``; the provenance JSON (same stem, ``.json``) sits beside it.
Shipped checkpoints live in ``priors/checkpoints/<name>.pt`` + ``<name>.json``.

:func:`load_prior` returns the model in eval mode with every parameter frozen (``requires_grad_(False)``), so
solvers' backward passes only ever touch x.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core.errors import UserError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
SHIPPED = ("realnvp-xs", "realnvp-s", "glow-xs", "glow-s")


@dataclass
class LoadedPrior:
    name: str
    model: torch.nn.Module
    sha256: str
    provenance: dict = field(default_factory=dict)
    path: str = ""


def shipped_names() -> list[str]:
    """Names of the checkpoints present in priors/checkpoints (the shipped ones first, in SHIPPED order)."""
    present = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.pt"))
    return [n for n in SHIPPED if n in present] + [n for n in present if n not in SHIPPED]


def _resolve(spec: str) -> tuple[str, Path]:
    spec = str(spec)
    if spec in SHIPPED or (CHECKPOINT_DIR / f"{spec}.pt").is_file():
        return spec, CHECKPOINT_DIR / f"{spec}.pt"
    p = Path(spec).expanduser()
    if p.suffix in (".pt", ".pth") or p.exists() or "/" in spec or "\\" in spec:
        return p.stem, p
    raise UserError(f"unknown prior {spec!r}; valid: {', '.join(shipped_names() or SHIPPED)} "
                    f"or a path to a .pt checkpoint")


def resolve_path(spec: str) -> Path:
    """The checkpoint file a prior name or path refers to."""
    return _resolve(spec)[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"provenance file {path} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"provenance file {path} must hold a JSON object")
    return d


def read_checkpoint(path, data: bytes | None = None) -> tuple[dict, dict]:
    """(config, state_dict) of a checkpoint file (or of its bytes ``data``, read earlier from ``path``), or a
    one-line UserError naming the file and what was expected."""
    path = Path(path)
    expected = "a prior checkpoint written by `python -m bench train-prior` (.pt with config + state_dict)"
    if data is None and not path.is_file():
        raise UserError(f"prior checkpoint {path} not found; expected {expected}")
    try:
        payload = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, unsupported globals, ...
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read {path}: not {expected} ({msg})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise UserError(f"{path} is not {expected}: no 'state_dict' entry")
    cfg = payload.get("config")
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except ValueError:
            raise UserError(f"{path}: embedded config is not valid JSON") from None
    if cfg is None:  # fall back to the provenance JSON beside the weights
        cfg = _read_json(path.with_suffix(".json")).get("config")
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise UserError(f"{path}: no model config (expected a 'config' entry with 'arch' in the .pt or its .json)")
    return cfg, payload["state_dict"]


def model_from_checkpoint(path, device="cpu", data: bytes | None = None) -> torch.nn.Module:
    """A frozen (eval, no parameter gradients) model from a checkpoint file or its bytes ``data``, its convolution
    weights in channels-last memory format (convolutions then skip a layout conversion on every call: 1.3–1.4× more
    image-passes per second for the 28×28 priors on a 2-core CPU, README "Performance"; numerics move in the last
    bits). Building it leaves the global torch RNG untouched (layer initialisers draw from it before the weights are
    loaded)."""
    from bench.priors.base import build_prior

    path = Path(path)
    cfg, state = read_checkpoint(path, data)
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_prior(cfg)
    except UserError as e:
        raise UserError(f"{path}: bad config: {e}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{path}: config does not build a {cfg.get('arch')!r} prior ({e})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        what = []
        if missing:
            what.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if extra:
            what.append(f"{len(extra)} unexpected keys (e.g. {extra[0]})")
        if shapes:
            k = shapes[0]
            what.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs expected "
                        f"{tuple(own[k].shape)})")
        raise UserError(f"{path}: weights do not match the config {cfg.get('arch')}/{cfg.get('preset')} "
                        f"{cfg.get('image_shape')}: {'; '.join(what)}")
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path}: weights hold non-finite values (NaN or inf) in {len(bad)} tensors (e.g. {bad[0]}); "
                        f"the checkpoint is damaged or its training diverged")
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device, memory_format=torch.channels_last)


def load_prior(spec: str, device="cpu") -> LoadedPrior:
    """Load a shipped prior by name (``realnvp-s``, ``glow-xs``, ...) or a checkpoint by path."""
    from bench.core.device import resolve_device

    if isinstance(device, str):
        device = resolve_device(device)
    name, path = _resolve(spec)
    model = model_from_checkpoint(path, device)
    prov = _read_json(path.with_suffix(".json"))
    return LoadedPrior(name=name, model=model, sha256=_sha256(path), provenance=prov, path=str(path))


def shipped() -> list[dict]:
    """One summary dict per checkpoint in priors/checkpoints."""
    rows = []
    for name in shipped_names():
        pt = CHECKPOINT_DIR / f"{name}.pt"
        prov = _read_json(pt.with_suffix(".json"))
        cfg = prov.get("config", {})
        rows.append({"name": name, "arch": cfg.get("arch", prov.get("arch")),
                     "preset": cfg.get("preset", prov.get("preset")), "dataset": prov.get("dataset"),
                     "size": prov.get("size"), "params": prov.get("params"), "test_bpd": prov.get("test_bpd"),
                     "ood_dataset": prov.get("ood_dataset"), "ood_bpd": prov.get("ood_bpd"), "val_bpd": prov.get("val_bpd"), "baseline_test_bpd": prov.get("gaussian_baseline_test_bpd"),
                     "file_size": pt.stat().st_size, "sha256": prov.get("sha256")})
    return rows


def _human(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return str(nbytes)


def print_shipped() -> None:
    """Table for ``python -m bench list priors``."""
    from bench.priors.base import ARCHS

    rows = shipped()
    archs = ", ".join(n for n in ARCHS.names())
    if not rows:
        print(f"no shipped checkpoints in {CHECKPOINT_DIR} (architectures: {archs}; "
              f"train one with `python -m bench train-prior`)")
        return
    from tabulate import tabulate

    table = [[r["name"], r["arch"], r["preset"], r["dataset"], r["size"], r["params"], r["test_bpd"],
              f"{r['ood_bpd']} ({r['ood_dataset']})" if r["ood_bpd"] is not None else "-",
              r["baseline_test_bpd"], _human(r["file_size"])] for r in rows]
    print(tabulate(table, headers=["name", "arch", "preset", "dataset", "size", "params", "test bits/dim",
                                   "OOD bits/dim", "gaussian bits/dim", "file"]))
    print(f"(architectures: {archs}; any prior also loads from a path to a .pt checkpoint)")
