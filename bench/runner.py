"""The grid runner: grid → work units → Parquet part files, with resume and provenance.

Data path (README "Layout" and "Results"): a validated :class:`~bench.grid.Grid` is expanded by :func:`plan_units` into
*work units*: one solver over all images of one split × the λ values of one (task, prior, split, seed). A unit is a
plain JSON-able dict (its *spec*) and :func:`execute_unit` — a top-level function that loads dataset, prior, task and
solver from their names and caches them per process — runs it and writes the unit's files with
:func:`bench.store.write_unit`. Executors (:mod:`bench.executors`) decide where units run.

Inside a unit (:func:`execute_unit`)
- The Problem is built once for the images (``task.make``, randomness keyed by task, image id and seed index) and
  expanded to rows (image × λ, image-major) with ``Problem.take``; ``solver.solve`` runs once on the whole batch
  with a :class:`~bench.budget.BudgetedPrior` of ``budget`` passes per row. Solvers with ``lam_independent = True``
  are solved once per image and their rows replicated across λ (their traces are kept for the first λ only).
- The harness scores ``x_hat`` with :func:`bench.metrics.score` and the *raw* prior (never the budgeted one).
- Failures are isolated: an exception gives rows with ``status = "error"`` and a one-line ``error``;
  :class:`~bench.errors.BudgetExceeded` gives ``"overspend"``; a row whose ``x_hat`` is not finite gives ``"nan"``.
- ``wall_time_s`` is the unit's wall time (problem, solve, scoring; cached loading excluded) divided by its rows.

Identity and resume
- ``unit_id`` and ``cell_id`` are stable hashes of what determines the numbers (task spec and parameters, prior
  name + sha256, dataset, split, image ids, λ, solver spec with its resolved (possibly tuned) parameters, seed,
  budget, MLE steps, image size) — never of the grid name or run order. ``cell_id`` identifies one row
  (cell × image).
- Resume is per cell: before running, every rows file in DIR is read (an unreadable or inconsistent unit is
  reported and recomputed); a unit whose cells all exist is skipped, one with some λ present runs only the
  missing λ. So filtered runs and a later full run of the same grid compose without duplicate rows.
- ``DIR/run.json`` records the resolved grid, its hash, the git commit, package versions and the tuned file; a run
  with a different grid, commit or tuned file into the same DIR is refused (``--resume-anyway`` overrides).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import numerics, store
from bench.metrics import METRICS
from bench.errors import BudgetExceeded, UserError
from bench.grid import Grid, is_prior_path

RUN_JSON = "run.json"
SCORE_CHUNK = 128

# ------------------------------------------------------------------------------------------ per-process caches
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
    verified against ``sha256``). Each unit builds one for its solver and another for scoring, so nothing a solver
    does to its model — or to any model it finds in this process — reaches another unit or any score."""
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


def clear_caches() -> None:
    _PRIORS.clear()
    _IMAGES.clear()
    _CHECKPOINTS.clear()


# ------------------------------------------------------------------------------------------------ identity
def _hash(obj, n: int = 20) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


IDENTITY_KEYS = ("task", "task_params", "prior_name", "prior_sha256", "dataset", "dataset_split", "split",
                 "image_size", "solver", "solver_params", "tuned", "seed", "budget", "mle_steps")


def unit_identity(spec: dict) -> dict:
    return {**{k: spec[k] for k in IDENTITY_KEYS}, "image_ids": list(spec["image_ids"]),
            "lams": [float(x) for x in spec["lams"]]}


def unit_id(spec: dict) -> str:
    return _hash(unit_identity(spec))


def cell_id(spec: dict, image_id: str, lam: float) -> str:
    return _hash({**{k: spec[k] for k in IDENTITY_KEYS}, "image_id": image_id, "lam": float(lam)})


def cell_ids(spec: dict) -> list[str]:
    """Cell ids of a unit's rows, image-major (the row order of its files)."""
    return [cell_id(spec, i, lam) for i in spec["image_ids"] for lam in spec["lams"]]


def with_lams(spec: dict, lams) -> dict:
    s = dict(spec, lams=[float(x) for x in lams])
    s["unit_id"] = unit_id(s)
    return s


# ---------------------------------------------------------------------------------------------- provenance
def git_commit() -> tuple[str, bool]:
    """(HEAD commit of the code's repository or "unknown", whether tracked files have uncommitted changes)."""
    from bench import REPO_ROOT

    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown", False
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def versions() -> dict:
    import bench

    out = {"python": sys.version.split()[0], "flowprior-bench": bench.__version__}
    for mod, name in (("torch", "torch"), ("numpy", "numpy"), ("pandas", "pandas"), ("pyarrow", "pyarrow"),
                      ("scipy", "scipy"), ("skimage", "scikit-image"), ("pywt", "PyWavelets")):
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            out[name] = "unknown"
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------- planning
def resolve_prior(spec: str, prior_dir: str | None) -> str:
    """Shipped names pass through; relative checkpoint paths resolve against ``prior_dir`` (default: cwd)."""
    if not is_prior_path(spec):
        return spec
    p = Path(spec).expanduser()
    if not p.is_absolute():
        p = Path(prior_dir or ".") / p
    return str(p.resolve())


def preflight(grid: Grid, prior_dir: str | None = None) -> None:
    """Everything a grid needs from outside (data folders, checkpoint files), checked at once: one UserError that
    lists what is missing and how to get it."""
    from bench.datasets.base import DATASETS

    problems = []
    for split in grid.values("splits"):
        ds, root = grid.dataset_for(split)
        cls = DATASETS.get(ds)
        flag = "--data-root" if split == "id" else "--ood-root"
        if cls.needs_root and not root:
            problems.append(f"{flag} (dataset {ds!r} for split {split!r} reads images from a folder)")
        elif root and not Path(root).expanduser().is_dir():
            problems.append(f"{flag} {root!r} is not a folder")
    missing = []
    for spec in grid.values("priors"):
        if is_prior_path(spec) and not Path(resolve_prior(spec, prior_dir)).is_file():
            recipe = grid.prior_recipes.get(spec)
            missing.append(f"{spec}" + (f" (make it with: {recipe})" if recipe else ""))
    if missing:
        where = (f" under --prior-dir {prior_dir}" if prior_dir
                 else " (relative to the current directory or --prior-dir)")
        problems.append(f"prior checkpoint(s){where}: " + ", ".join(missing))
    if problems:
        raise UserError(f"grid {grid.name!r} cannot start, missing: " + "; ".join(problems))


def split_images(grid: Grid, split: str) -> list[str]:
    """Image ids of a grid split (first ``images_per_split`` of the dataset's test split, id order)."""
    ds, root = grid.dataset_for(split)
    iset = get_images(ds, "test", grid.image_size, root)
    k = grid.images_per_split[split]
    if k is not None and k > len(iset):
        raise UserError(f"images_per_split = {k} exceeds the {len(iset)} images of {ds}/test (split {split!r}); "
                        f"use at most {len(iset)} or \"all\"")
    return list(iset.ids if k is None else iset.ids[:k])


def image_channels(grid: Grid, split: str) -> tuple:
    ds, root = grid.dataset_for(split)
    return tuple(get_images(ds, "test", grid.image_size, root).images.shape[1:])


def lookup_tuned(tuned: dict | None, solver: str, task: str, prior: str) -> dict:
    if not tuned:
        return {}
    return dict(tuned.get(solver, {}).get(task, {}).get(prior, {}))


def make_unit(*, task: str, prior_spec: str, prior, dataset: str, dataset_split: str, split: str, data_root,
              image_size: int, image_ids, lams, solver: str, tuned_params: dict, seed: int, budget: int,
              mle_steps: int, device: str, provenance: dict, imports=()) -> dict:
    """A unit spec (plain data; see the module docstring)."""
    from bench.registry import parse_spec
    from bench.solvers.base import SOLVERS
    from bench.tasks import make_task

    t = make_task(task)
    name, overrides = parse_spec(solver)
    cls = SOLVERS.get(name)
    overrides = {**overrides, **tuned_params}
    inst = cls(**overrides)
    spec = {
        "task": t.spec, "task_params": dict(t.params), "prior": prior_spec, "prior_name": prior.name,
        "prior_sha256": prior.sha256, "dataset": dataset, "dataset_split": dataset_split, "split": split,
        "data_root": data_root, "image_size": image_size, "image_ids": list(image_ids),
        "lams": sorted(float(x) for x in lams), "solver": solver, "solver_overrides": overrides,
        "solver_params": dict(inst.params), "tuned": bool(tuned_params), "seed": int(seed), "budget": int(budget),
        "mle_steps": int(mle_steps), "device": str(device), "provenance": dict(provenance), "imports": list(imports),
    }
    spec["unit_id"] = unit_id(spec)
    return spec


def plan_units(grid: Grid, *, device: str = "cpu", tuned: dict | None = None, prior_dir: str | None = None,
               provenance: dict | None = None, imports=()) -> list[dict]:
    """Expand a grid into unit specs: one per (split, prior, task, seed, solver), λ merged over blocks."""
    from bench.tasks import make_task

    provenance = provenance or {}
    images = {s: split_images(grid, s) for s in grid.values("splits")}
    for s in images:
        for t in grid.values("tasks"):
            make_task(t).check_shape(image_channels(grid, s))
    priors = {}
    for spec in grid.values("priors"):
        lp = get_prior(resolve_prior(spec, prior_dir), "cpu")
        for s in images:
            shape = image_channels(grid, s)
            if lp.image_shape != shape:
                raise UserError(f"prior {spec!r} models images of shape {lp.image_shape} but grid "
                                f"{grid.name!r} gives {shape} (image_size {grid.image_size}, split {s!r})")
        priors[spec] = lp
    keys: dict = {}
    for b in grid.blocks:
        for split in b.splits:
            for prior in b.priors:
                for task in b.tasks:
                    for seed in b.seeds:
                        for solver in b.solvers:
                            for budget in grid.budgets:   # each budget is its own cell (AIPO's schedule uses it)
                                keys.setdefault((split, prior, task, seed, solver, budget), set()).update(b.lams)
    units = []
    for (split, prior, task, seed, solver, budget), lams in keys.items():
        ds, root = grid.dataset_for(split)
        units.append(make_unit(
            task=task, prior_spec=resolve_prior(prior, prior_dir), prior=priors[prior], dataset=ds,
            dataset_split="test", split=split, data_root=root, image_size=grid.image_size, image_ids=images[split],
            lams=lams, solver=solver, tuned_params=lookup_tuned(tuned, solver, task, prior), seed=seed,
            budget=budget, mle_steps=grid.mle_steps, device=device, provenance=provenance, imports=imports))
    return units


# ------------------------------------------------------------------------------------------------- execution
def _one_line(e: BaseException, limit: int = 400) -> str:
    msg = f"{type(e).__name__}: {e}".replace("\r", " ").replace("\n", " ")
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


def _build_solver(spec: dict):
    from bench.registry import parse_spec
    from bench.solvers.base import SOLVERS

    return SOLVERS.get(parse_spec(spec["solver"])[0])(**spec["solver_overrides"])


def _rows_frame(spec: dict, *, status, error, metrics: dict, nfe_used, iterations, wall_s: float,
                info: dict | None = None) -> pd.DataFrame:
    ids = [i for i in spec["image_ids"] for _ in spec["lams"]]
    lams = [float(lam) for _ in spec["image_ids"] for lam in spec["lams"]]
    n = len(ids)
    prov = spec["provenance"]
    cols = {
        "cell_id": cell_ids(spec), "unit_id": [spec["unit_id"]] * n, "task": [spec["task"]] * n,
        "prior": [spec["prior_name"]] * n, "prior_sha256": [spec["prior_sha256"]] * n,
        "dataset": [spec["dataset"]] * n, "split": [spec["split"]] * n, "image_id": ids, "lam": lams,
        "solver": [spec["solver"]] * n, "seed": [spec["seed"]] * n, "image_size": [spec["image_size"]] * n,
    }
    for k in METRICS:
        cols[k] = np.asarray(metrics.get(k, np.full(n, np.nan)), dtype=np.float64)
    cols.update({
        "nfe_used": np.asarray(nfe_used, dtype=np.int64), "budget": [spec["budget"]] * n,
        "iterations": np.asarray(iterations, dtype=np.int64), "wall_time_s": [wall_s / max(n, 1)] * n,
        "status": list(status), "error": list(error),
        "git_commit": [prov.get("git_commit", "unknown")] * n,
        "torch_version": [prov.get("torch_version", torch.__version__)] * n,
        "numpy_version": [prov.get("numpy_version", np.__version__)] * n,
        "device": [spec["device"]] * n, "torch_threads": [torch.get_num_threads()] * n,
        "cpu_isa": [numerics.describe()] * n, "started_at": [prov.get("started_at", "")] * n,
        "grid_name": [prov.get("grid_name", "")] * n, "grid_hash": [prov.get("grid_hash", "")] * n,
        "tuned": [bool(spec["tuned"])] * n, "mle_steps": [spec["mle_steps"]] * n,
    })
    for k, v in sorted(spec["task_params"].items()):
        cols[f"p_task_{k}"] = [v] * n
    for k, v in sorted(spec["solver_params"].items()):
        cols[f"p_solver_{k}"] = [v] * n
    for k, v in sorted((info or {}).items()):
        cols[f"info_{k}"] = v
    return pd.DataFrame(cols)


def error_rows(spec: dict, message: str, status: str = "error") -> pd.DataFrame:
    """Rows for a unit that failed before producing anything."""
    n = len(spec["image_ids"]) * len(spec["lams"])
    return _rows_frame(spec, status=[status] * n, error=[message] * n, metrics={}, nfe_used=[0] * n,
                       iterations=[0] * n, wall_s=0.0)


def _score(problem, prior, x_hat, lam) -> dict:
    from bench.metrics import score

    parts = []
    for i in range(0, x_hat.shape[0], SCORE_CHUNK):
        rows = list(range(i, min(i + SCORE_CHUNK, x_hat.shape[0])))
        parts.append(score(problem.take(rows), prior, x_hat[i:i + len(rows)], lam[i:i + len(rows)]))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _score_trace(trace, full, model, lam_full, expand):
    """A trace recorded as iterates (``Trace.x``), scored like x̂ for every row of ``full`` at the row's own λ:
    returns (the trace with ``nfe``/``loss`` per row of ``full``, the identity row map)."""
    from bench.metrics import map_loss
    from bench.solvers.base import Trace

    idx = torch.as_tensor(expand)
    dev = full.y.device
    out = Trace()
    for nfe, x in zip(trace.nfe, trace.x):
        xs = x.to(dev, full.y.dtype)[idx.to(dev)].clamp(0, 1)
        loss = torch.cat([map_loss(full.take(list(range(i, min(i + SCORE_CHUNK, len(idx))))), model,
                                   xs[i:i + SCORE_CHUNK], lam_full[i:i + SCORE_CHUNK])
                          for i in range(0, len(idx), SCORE_CHUNK)])
        out.record(torch.as_tensor(nfe)[idx], loss)
    return out, list(range(len(idx)))


def _per_row(value, n: int):
    """A per-row info value as a length-n numpy array, or None if it is not one."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 1 and value.shape[0] == n:
            return value.numpy()
        return None
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == n:
        arr = np.asarray(value)
        return arr if arr.ndim == 1 and arr.dtype.kind in "biuf" else None
    return None


def _traces_frame(spec: dict, trace, expand_rows, cids) -> pd.DataFrame:
    """Long table (cell_id, unit_id, nfe, map_loss) from a solver Trace; ``expand_rows[k]`` = solve row of row k."""
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                          (("cell_id", str), ("unit_id", str), ("nfe", "int64"), ("map_loss", "float64"))})
    if trace is None or not trace.nfe:
        return empty
    try:
        B = int(torch.as_tensor(trace.loss[0]).numel())
        nfe = np.stack([np.broadcast_to(torch.as_tensor(v).cpu().numpy().reshape(-1), (B,)) for v in trace.nfe])
        loss = np.stack([torch.as_tensor(v).cpu().double().numpy().reshape(-1) for v in trace.loss])
        if nfe.shape != loss.shape:
            return empty
        keep = [k for k, r in enumerate(expand_rows) if r is not None]
        cols = [expand_rows[k] for k in keep]
        T = nfe.shape[0]
        return pd.DataFrame({
            "cell_id": np.repeat(np.asarray([cids[k] for k in keep])[None, :], T, 0).reshape(-1),
            "unit_id": spec["unit_id"],
            "nfe": nfe[:, cols].reshape(-1).astype(np.int64),
            "map_loss": loss[:, cols].reshape(-1),
        })
    except Exception:  # noqa: BLE001 -- a malformed trace never costs the rows
        return empty


def _run_unit(spec: dict):
    from bench.budget import BudgetedPrior
    from bench.solvers.base import SolveContext
    from bench.tasks import make_task

    device = torch.device(spec["device"])
    iset = get_images(spec["dataset"], spec["dataset_split"], spec["image_size"], spec["data_root"])
    pos = {i: k for k, i in enumerate(iset.ids)}
    ids, lams = list(spec["image_ids"]), [float(x) for x in spec["lams"]]
    x = iset.images[[pos[i] for i in ids]].clone()
    task = make_task(spec["task"])
    solver = _build_solver(spec)
    B, L = len(ids), len(lams)
    N = B * L

    t0 = time.perf_counter()
    problem = task.make(x.to(device), ids, spec["seed"])
    row_img = [i for i in range(B) for _ in range(L)]
    full = problem.take(row_img)
    lam_full = torch.tensor([lam for _ in range(B) for lam in lams], dtype=x.dtype, device=device)
    if solver.lam_independent:
        solve_p, solve_lam, expand = problem, torch.full((B,), lams[0], dtype=x.dtype, device=device), row_img
        trace_rows = [r if k % L == 0 else None for k, r in enumerate(row_img)]
    else:
        solve_p, solve_lam, expand = full, lam_full, list(range(N))
        trace_rows = expand
    if reason := solver.skip(solve_p.for_solver()):
        # the combination does not apply (declared by the solver): no solve, no prior pass
        return error_rows(spec, _one_line(reason), status="skipped"), None, None
    budget = int(spec["budget"])
    bp = (BudgetedPrior(fresh_model(spec["prior"], device, spec["prior_sha256"]), budget, solve_p.batch_size)
          if solver.uses_prior else None)
    ctx = SolveContext(budget=budget, mle_steps=spec["mle_steps"], seed=spec["seed"], device=device)

    status, error = ["ok"] * N, [""] * N
    x_hat, trace, info = None, None, {}
    try:
        # the solver gets copies without the clean images; the harness scores with its own full, lam_full
        res = solver.solve(solve_p.for_solver(), bp, solve_lam.clone(), ctx)
        used = bp.used if bp is not None else torch.zeros(solve_p.batch_size, dtype=torch.long)
        if int(used.max()) > budget:
            raise BudgetExceeded((used > budget).nonzero().flatten().tolist(), int(used.max()), budget)
        xs = res.x_hat.detach()
        if tuple(xs.shape) != (solve_p.batch_size, *solve_p.shape):
            raise ValueError(f"solver returned x_hat of shape {tuple(xs.shape)}, "
                             f"expected {(solve_p.batch_size, *solve_p.shape)}")
        x_hat = xs.to(device=device, dtype=x.dtype)[torch.as_tensor(expand, device=device)]
        trace, info = res.trace, res.info or {}
        scorer = fresh_model(spec["prior"], device, spec["prior_sha256"])
        if trace is not None and trace.x:
            try:
                trace, trace_rows = _score_trace(trace, full, scorer, lam_full, expand)
            except Exception:  # noqa: BLE001 -- a trace that cannot be scored never costs the rows
                trace = None
    except BudgetExceeded as e:
        status, error = ["overspend"] * N, [_one_line(e)] * N
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- failure isolation: the run goes on
        status, error = ["error"] * N, [_one_line(e) if not isinstance(e, SystemExit)
                                        else f"solver called exit({e.code!r})"] * N

    used = bp.used.clone() if bp is not None else torch.zeros(solve_p.batch_size, dtype=torch.long)
    nfe_used = used[torch.as_tensor(expand)].numpy()
    iterations = nfe_used.copy()
    info_cols = {}
    for k, v in info.items():
        arr = _per_row(v, solve_p.batch_size)
        if arr is None:
            continue
        if k == "iterations":
            iterations = arr[expand].astype(np.int64)
        else:
            info_cols[k] = arr[expand]

    metrics = {k: np.full(N, np.nan) for k in METRICS}
    if x_hat is not None:
        finite = torch.isfinite(x_hat.flatten(1)).all(1).cpu()
        for k in torch.nonzero(~finite).flatten().tolist():
            status[k], error[k] = "nan", "solver returned a non-finite x_hat (NaN or inf)"
        ok = [k for k in range(N) if status[k] == "ok"]
        if ok:
            try:
                sc = _score(full.take(ok), scorer, x_hat[torch.as_tensor(ok, device=device)],
                            lam_full[torch.as_tensor(ok, device=device)])
                for k, v in sc.items():
                    metrics[k][ok] = v
            except Exception as e:  # noqa: BLE001
                for k in ok:
                    status[k], error[k] = "error", "scoring failed: " + _one_line(e)
    wall = time.perf_counter() - t0

    cids = cell_ids(spec)
    rows = _rows_frame(spec, status=status, error=error, metrics=metrics, nfe_used=nfe_used, iterations=iterations,
                       wall_s=wall, info=info_cols)
    traces = _traces_frame(spec, trace, trace_rows, cids)
    recon = _recon(full, x_hat, cids)
    return rows, traces, recon


def _recon(full, x_hat, cids) -> dict:
    """Arrays for figures: cell_id, x_hat, x_true, observed (the task's ``observed_image``), mask."""
    x_true = full.x_true.detach().cpu().float().numpy()
    xh = x_hat.detach().cpu().float().numpy() if x_hat is not None else np.full_like(x_true, np.nan)
    # what y shows as an image, and which of its pixels were observed: the task says (Task.observed_image/_mask)
    observed = full.task.observed_image(full).detach().cpu().float().numpy()
    mask = full.task.observed_mask(full).detach().cpu().float().numpy()
    return {"cell_id": np.asarray(cids), "x_hat": xh.astype(np.float32), "x_true": x_true.astype(np.float32),
            "observed": observed.astype(np.float32), "mask": mask.astype(np.float32)}


def execute_unit(spec: dict, out_dir) -> dict:
    """Run one work unit and write its part files; returns a summary dict. Top-level and pure in its inputs (a
    spec of names and numbers, an output folder), so any executor can ship it to another process or machine."""
    t0 = time.perf_counter()
    for mod in spec.get("imports", ()):
        importlib.import_module(mod)
    try:
        rows, traces, recon = _run_unit(spec)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 -- loading failed: the unit becomes error rows
        rows, traces, recon = error_rows(spec, _one_line(e)), None, None
    store.write_unit(out_dir, spec["unit_id"], rows, traces, recon)
    return summarize(spec["unit_id"], rows, time.perf_counter() - t0)


OVERHEAD = 1.25      # solver arithmetic, scoring and writing on top of the prior passes (default grid, measured)
UNIT_OVERHEAD_S = 0.15   # per unit: building its two models, the problem, scoring and writing (smoke grid, measured)


def estimate_wall(units: list[dict], workers: int) -> tuple[int, float]:
    """(image-passes, estimated seconds) of running ``units`` with ``workers`` parallel workers: each unit's passes
    at the cost of one pass of its prior at its batch, timed here (3 passes after a warm-up per prior and batch).
    Budget-spending solvers are charged their full budget, λ-independent ones half of it, prior-free ones nothing."""
    from bench.solvers.base import SOLVERS

    cost, passes, secs = {}, 0, 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as every unit runs (several threads on small batches oversubscribe the cores)
    try:
        for u in units:
            cls = SOLVERS.get(u["solver"].split("[")[0])
            if cls.uses_prior:
                n, t = _unit_cost(u, cls, cost)
                passes, secs = passes + n, secs + t
    finally:
        torch.set_num_threads(threads)
    return passes, (secs * OVERHEAD + UNIT_OVERHEAD_S * len(units)) / max(1, int(workers))


def _unit_cost(u, cls, cost: dict) -> tuple[int, float]:
    """(image-passes, seconds of prior passes) of one unit; ``cost`` caches the timed pass per (prior, batch)."""
    B = len(u["image_ids"]) * (1 if cls.lam_independent else len(u["lams"]))
    n = u["budget"] // 2 if cls.lam_independent else u["budget"]
    key = (u["prior"], u["prior_sha256"], B, u["image_size"])
    if key not in cost:
        model = fresh_model(u["prior"], u["device"], u["prior_sha256"])
        x = torch.rand((B, *model.image_shape), generator=torch.Generator().manual_seed(0)).clamp(0.02, 0.98)
        x = x.to(u["device"]).requires_grad_(True)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        torch.autograd.grad(model.log_prob(x).sum(), x)
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            torch.autograd.grad(model.log_prob(x).sum(), x)
        sync()
        cost[key] = (time.perf_counter() - t0) / 3
    return B * n, cost[key] * n


def summarize(uid: str, rows: pd.DataFrame, wall_s: float) -> dict:
    counts = rows["status"].value_counts().to_dict()
    return {"unit_id": uid, "rows": int(len(rows)), "status": {k: int(v) for k, v in counts.items()},
            "wall_s": float(wall_s)}


# ------------------------------------------------------------------------------------------------- resume
def _unit_files(out_dir: Path, uid: str) -> list[Path]:
    return [out_dir / store.ROWS / f"{uid}.parquet", out_dir / store.TRACES / f"{uid}.parquet",
            out_dir / store.RECON / f"{uid}.npz"]


def remove_unit(out_dir: Path, uid: str) -> None:
    for p in _unit_files(out_dir, uid):
        if p.exists():
            p.unlink()


KEY_COLUMNS = ["task", "prior", "split", "lam", "solver", "seed", "budget", "image_id"]  # a cell × image, readable


def _check_unit_files(out_dir: Path, uid: str) -> pd.DataFrame:
    """A finished unit's rows (cell_id, unit_id, status, KEY_COLUMNS) after :func:`bench.store.verify_unit` has
    checked its three files; raises if anything is off."""
    return store.verify_unit(out_dir, uid)[["cell_id", "unit_id", "status"] + KEY_COLUMNS]


@dataclass
class Scan:
    """What a results directory holds: readable rows, corrupt units, leftovers of a killed run."""

    rows: pd.DataFrame                              # cell_id, unit_id, status, KEY_COLUMNS of every readable unit
    corrupt: list = field(default_factory=list)     # (unit_id, reason)
    leftovers: list = field(default_factory=list)   # our temp files; traces/recon of units whose rows never landed

    @property
    def done(self) -> dict[str, str]:
        return dict(zip(self.rows["cell_id"], self.rows["status"]))


def scan_dir(out_dir) -> Scan:
    """Read-only survey of ``out_dir`` (every rows file is read; traces and recon files are checked)."""
    out_dir = Path(out_dir)
    finished = store.unit_ids(out_dir)
    leftovers = []
    own = {store.TRACES: ".parquet", store.RECON: ".npz"}
    for sub in (store.TRACES, store.RECON, store.ROWS):
        d = out_dir / sub
        if d.is_dir():   # only names this harness writes: other files (yours) are never touched
            leftovers += [f for f in sorted(d.iterdir()) if f.is_file() and (
                store.is_temp_name(f.name) or (sub in own and f.name.endswith(own[sub])
                                               and store.UNIT_ID.match(f.name[:-len(own[sub])])
                                               and f.name[:-len(own[sub])] not in finished))]
    parts, corrupt = [], []
    for uid in sorted(finished):
        try:
            parts.append(_check_unit_files(out_dir, uid))
        except Exception as e:  # noqa: BLE001
            corrupt.append((uid, _one_line(e, 160)))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cell_id", "unit_id", "status"]
                                                                            + KEY_COLUMNS)
    return Scan(rows, corrupt, leftovers)


def clean_dir(out_dir, scan: Scan, warn) -> None:
    """Remove corrupt units (reported through ``warn``; their cells are then recomputed) and leftovers."""
    for uid, why in scan.corrupt:
        warn(f"unit {uid} in {out_dir} is unreadable or corrupt ({why}); recomputing it")
        remove_unit(Path(out_dir), uid)
    for f in scan.leftovers:
        if f.exists():
            f.unlink()


def planned_keys(units) -> dict:
    """{(task, prior, split, lam, solver, seed, budget, image_id): cell_id} of planned units."""
    return {(u["task"], u["prior_name"], u["split"], float(lam), u["solver"], u["seed"], u["budget"], i):
            cell_id(u, i, lam) for u in units for i in u["image_ids"] for lam in u["lams"]}


def stale_rows(scan: Scan, keys: dict) -> pd.DataFrame:
    """Finished rows for the same (task, prior, split, λ, solver, seed, budget, image) as a planned cell but another
    cell id:
    computed with other solver parameters or another prior checkpoint (code or checkpoint changed since)."""
    r = scan.rows
    if r.empty:
        return r
    k = list(zip(r["task"], r["prior"], r["split"], r["lam"].astype(float), r["solver"], r["seed"],
                 r["budget"].astype(int), r["image_id"]))
    mask = [key in keys and keys[key] != c for key, c in zip(k, r["cell_id"])]
    return r[mask]


def reduce_to_missing(units: list[dict], done: dict) -> tuple[list[dict], list[dict]]:
    """Split planned units into (to run, fully done); a partly done unit runs only its missing λ values."""
    run, skipped = [], []
    for u in units:
        missing = [lam for lam in u["lams"] if any(cell_id(u, i, lam) not in done for i in u["image_ids"])]
        if not missing:
            skipped.append(u)
        elif len(missing) == len(u["lams"]):
            run.append(u)
        else:
            run.append(with_lams(u, missing))
    return run, skipped


# ------------------------------------------------------------------------------------------------- run.json
def check_writable(out_dir) -> None:
    """Fail early (UserError) when ``out_dir`` cannot be created or written; creates nothing."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise UserError(f"output directory {str(p)!r} exists and is not a directory")
    anc = p
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"output directory {str(p)!r} cannot be created: {str(anc)!r} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"output directory {str(p)!r} is not writable ({str(anc)!r} is read-only)")


def prepare_out_dir(out_dir) -> None:
    """Create ``out_dir`` and prove it is writable with a probe file (UserError otherwise)."""
    p = Path(out_dir)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"output directory {str(p)!r} is not writable: {e.strerror or e}") from None


LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on a run directory (``DIR/.lock``, flock), held for the whole of one ``run``: a second run
    into the same ``--out`` is refused at once, naming the holder. Creates the directory if needed; ``release``
    removes the directory again if this lock created it and nothing else was written there."""

    def __init__(self, out_dir: Path):
        import fcntl

        self.out_dir = Path(out_dir)
        self.created = not self.out_dir.exists()
        prepare_out_dir(self.out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise UserError(f"another `bench run` ({holder}) is writing to {str(self.out_dir)!r}; wait for it to "
                            f"finish, or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()}, started {now_iso()}".encode(), 0)

    def release(self) -> None:
        import fcntl

        try:   # remove a directory this lock created and nothing else wrote into, while still holding the lock
            if self.created and [p.name for p in self.out_dir.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                self.out_dir.rmdir()
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def refuse_foreign_dir(out_dir: Path) -> None:
    """A non-empty folder that is not a run directory (no run.json, no rows) is never written into."""
    if not out_dir.is_dir() or (out_dir / RUN_JSON).exists() or store.unit_ids(out_dir):
        return
    entries = [p.name for p in out_dir.iterdir() if p.name != LOCK_NAME]
    if entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"output directory {str(out_dir)!r} is not empty ({shown}) and is not a run directory "
                        f"(no {RUN_JSON}); choose a new or empty folder for --out")


def read_run_json(out_dir) -> dict | None:
    p = Path(out_dir) / RUN_JSON
    if not p.exists():
        return None
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{str(p)!r} is unreadable ({_one_line(e, 120)}); move the directory aside or use "
                        f"another --out") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs", []), list):
        raise UserError(f"{str(p)!r} is not a run record (expected a JSON object with a list of runs); move the "
                        f"directory aside or use another --out")
    return record


def write_run_json(out_dir, record: dict) -> None:
    store._atomic_bytes(Path(out_dir) / RUN_JSON, (json.dumps(record, indent=2, default=str) + "\n").encode())


def compatibility_problems(prev: dict | None, record: dict, has_units: bool) -> list[str]:
    if prev is None:
        return ["it holds result files but no run.json"] if has_units else []
    out = []
    if prev.get("grid_hash") != record["grid_hash"]:
        out.append(f"its grid {prev.get('grid_name')!r} (hash {prev.get('grid_hash')}) differs from this run's grid "
                   f"{record['grid_name']!r} (hash {record['grid_hash']})")
    if prev.get("git_commit") != record["git_commit"] or prev.get("versions", {}).get("flowprior-bench") != \
            record["versions"]["flowprior-bench"]:
        out.append(f"it was made by code commit {str(prev.get('git_commit'))[:12]}, this is "
                   f"{record['git_commit'][:12]}")
    th = lambda r: (r.get("tuned") or {}).get("hash")  # noqa: E731
    if th(prev) != th(record):
        out.append(f"its tuned parameters ({th(prev) or 'none'}) differ from this run's ({th(record) or 'none'})")
    return out


# ----------------------------------------------------------------------------------------------------- run
# Row statuses that are not failures: "skipped" = the solver declared it does not apply to the task (Solver.skip).
NOT_FAILURES = ("ok", "skipped")


@dataclass
class RunSummary:
    out_dir: str
    units_planned: int = 0
    units_run: int = 0
    units_skipped: int = 0
    rows_written: int = 0
    failures: dict = field(default_factory=dict)   # status -> rows (over every planned cell, old and new)
    failures_earlier: int = 0
    wall_s: float = 0.0

    @property
    def n_failures(self) -> int:
        return sum(self.failures.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failures else 0

    def line(self) -> str:
        fail = f"{self.n_failures} failures"
        if self.failures:
            fail += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) + ")"
        if self.failures_earlier:
            fail += f", {self.failures_earlier} of them from earlier runs (--retry-failed reruns them)"
        return (f"{self.rows_written} rows written, {self.units_run} units run, {self.units_skipped} skipped, {fail}, "
                f"{self.wall_s:.1f} s wall; results in {self.out_dir}")


def run_grid(grid: Grid, out_dir, *, device: str = "cpu", executor=None, tuned=None, prior_dir: str | None = None,
             resume_anyway: bool = False, retry_failed: bool = False, progress: bool = True, dry_run: bool = False,
             imports=(), argv=None, log=None) -> RunSummary:
    """Plan, check, execute and summarise a grid run into ``out_dir``. ``tuned`` is a
    :class:`bench.tuning.Tuned` (or None). Raises UserError before any work for every input problem."""
    from bench.executors import LocalExecutor

    log = log or (lambda m: print(m, file=sys.stderr))
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    for mod in imports:
        importlib.import_module(mod)
    preflight(grid, prior_dir)
    check_writable(out_dir)
    commit, dirty = git_commit()
    vers = versions()
    started = now_iso()
    provenance = {"git_commit": commit, "torch_version": vers["torch"], "numpy_version": vers["numpy"],
                  "started_at": started, "grid_name": grid.name, "grid_hash": grid.hash}
    units = plan_units(grid, device=str(device), tuned=tuned.params if tuned else None, prior_dir=prior_dir,
                       provenance=provenance, imports=imports)
    executor = executor or LocalExecutor()
    record = {
        "format": 1, "grid_name": grid.name, "grid_hash": grid.hash, "grid_source": grid.source,
        "grid": grid.resolved_unfiltered(), "git_commit": commit, "git_dirty": dirty, "versions": vers,
        "tuned": tuned.record() if tuned else None,
    }
    refuse_foreign_dir(out_dir)
    lock = None if dry_run else RunLock(out_dir)
    try:
        return _run_locked(grid, out_dir, units, record, started, executor, device=device,
                           resume_anyway=resume_anyway, retry_failed=retry_failed, progress=progress,
                           dry_run=dry_run, argv=argv, log=log, t_start=t_start)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(grid, out_dir, units, record, started, executor, *, device, resume_anyway,
                retry_failed, progress, dry_run, argv, log, t_start) -> RunSummary:
    """The part of :func:`run_grid` that reads and writes ``out_dir`` (under its :class:`RunLock` unless dry)."""
    commit, dirty = record["git_commit"], record["git_dirty"]
    prev = read_run_json(out_dir) if out_dir.exists() else None
    problems = compatibility_problems(prev, record, bool(store.unit_ids(out_dir)))
    scan = scan_dir(out_dir)
    stale = stale_rows(scan, planned_keys(units))
    if len(stale):
        ex = stale.iloc[0]
        problems.append(f"{len(stale)} of its finished rows are for cells of this run but were computed with other "
                        f"solver parameters or another prior checkpoint (e.g. {ex['solver']} on {ex['task']} / "
                        f"{ex['prior']}): the code or a checkpoint changed since")
    if problems and not resume_anyway:
        raise UserError(f"refusing to mix results: {str(out_dir)!r} " + "; ".join(problems)
                        + " — use another --out, or --resume-anyway to add to it knowingly")
    summary = RunSummary(out_dir=str(out_dir), units_planned=len(units))
    if dry_run:
        to_run, skipped = reduce_to_missing(units, scan.done)
        rows = sum(len(u["image_ids"]) * len(u["lams"]) for u in to_run)
        passes, est = estimate_wall(to_run, getattr(executor, "workers", 1))
        log(f"grid {grid.name!r} (hash {grid.hash}): {len(units)} units, {len(to_run)} to run ({rows} rows, "
            f"{passes:,} image-passes of the prior), {len(skipped)} already done; executor {executor.describe()}, "
            f"device {device}; estimated wall time {est / 60:.1f} min (from a short calibration on this machine)")
        summary.units_skipped = len(skipped)
        return summary

    if problems:
        log(f"warning: --resume-anyway: {str(out_dir)!r} " + "; ".join(problems))
    this_run = {"started_at": started, "device": str(device), "executor": executor.describe(),
                "filters": grid.filters, "argv": list(argv or []),
                "git_commit": commit, "git_dirty": dirty, "grid_hash": grid.hash,
                "planned_cells": sorted(c for u in units for c in cell_ids(u))}
    if problems:
        this_run["resumed_anyway_despite"] = problems
    record["created_at"] = (prev or {}).get("created_at", started)
    record["runs"] = (prev or {}).get("runs", []) + [this_run]
    write_run_json(out_dir, record)

    clean_dir(out_dir, scan, warn=lambda m: log(f"warning: {m}"))
    rows = scan.rows  # readable units only; the corrupt ones were just removed
    if retry_failed:
        failed = sorted(set(rows.loc[~rows["status"].isin(NOT_FAILURES), "unit_id"]))
        for uid in failed:
            remove_unit(out_dir, uid)
        rows = rows[~rows["unit_id"].isin(failed)]
    done = dict(zip(rows["cell_id"], rows["status"]))
    to_run, skipped = reduce_to_missing(units, done)
    to_run.sort(key=lambda u: -len(u["image_ids"]) * len(u["lams"]))  # big units first: shorter tail with workers
    summary.units_skipped = len(skipped)
    planned_cells = {c for u in units for c in cell_ids(u)}
    run_cells = {c for u in to_run for c in cell_ids(u)}
    earlier = {}
    for c in planned_cells - run_cells:
        s = done.get(c, "ok")
        if s not in NOT_FAILURES:
            earlier[s] = earlier.get(s, 0) + 1
    summary.failures = dict(earlier)
    summary.failures_earlier = sum(earlier.values())

    bar = None
    if progress and to_run:
        from tqdm import tqdm

        bar = tqdm(total=len(to_run), unit="unit", desc=f"{grid.name}", file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5)
    try:
        for spec, result in executor.map(execute_unit, to_run, out_dir):
            if isinstance(result, BaseException):
                rows = error_rows(spec, "executor: " + _one_line(result))
                store.write_unit(out_dir, spec["unit_id"], rows)
                result = summarize(spec["unit_id"], rows, 0.0)
            summary.units_run += 1
            summary.rows_written += result["rows"]
            for s, n in result["status"].items():
                if s not in NOT_FAILURES:
                    summary.failures[s] = summary.failures.get(s, 0) + n
            if bar is not None:
                bar.update(1)
                if summary.n_failures:
                    bar.set_postfix(failures=summary.n_failures, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    summary.wall_s = time.perf_counter() - t_start
    this_run.update(finished_at=now_iso(), wall_s=round(summary.wall_s, 3), units_run=summary.units_run,
                    units_skipped=summary.units_skipped, rows_written=summary.rows_written,
                    failures=summary.failures)
    write_run_json(out_dir, record)
    return summary
