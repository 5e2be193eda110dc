"""Executing one work unit: build its problem, run its solver under the budget, score, write its files.

- The Problem is built once for the unit's images (``task.make``, randomness keyed by task, image id and seed index)
  and expanded to rows (image × λ, image-major) with ``Problem.take``; ``solver.solve`` runs once on the whole batch
  with a :class:`~bench.budget.BudgetedPrior` of ``budget`` passes per row. Solvers with ``lam_independent = True``
  are solved once per image and their rows replicated across λ (their traces are kept for the first λ only).
- The solver gets ``Problem.for_solver()`` (no clean images, copies of everything) and a fresh model; the harness
  scores ``x_hat`` with :func:`bench.metrics.score` and *another* fresh model (never the budgeted one).
- Failures are isolated: an exception gives rows with ``status = "error"`` and a one-line ``error``;
  :class:`~bench.errors.BudgetExceeded` gives ``"overspend"``; a row whose ``x_hat`` is not finite gives ``"nan"``;
  an ``x_hat`` that is not a real floating-point tensor (complex, integer, bool) is an error, never cast.
- ``wall_time_s`` is the unit's wall time (problem, solve, scoring; cached loading excluded) divided by its rows,
  read with :func:`bench.device.clock` (after the device's queued work). The unit computes under
  :func:`bench.device.numerics_mode` (TF32, ``--deterministic``); its rows record those flags, the device's facts
  and the unit's peak GPU memory (:data:`bench.store.DEVICE_COLUMNS`).
"""
from __future__ import annotations

import importlib
import time

import numpy as np
import pandas as pd
import torch

from bench import numerics, store
from bench.device import clock, device_facts, numerics_mode, peak_memory_mb, reset_peak_memory, tf32_allowed
from bench.errors import BudgetExceeded, one_line, one_line_text
from bench.loading import fresh_model, get_images
from bench.metrics import METRICS

SCORE_CHUNK = 128


def _build_solver(spec):
    from bench.registry import parse_spec
    from bench.solvers.base import SOLVERS

    return SOLVERS.get(parse_spec(spec.solver)[0])(**spec.solver_overrides)


def device_columns(spec, peak_mem_mb: float = float("nan")) -> dict:
    """The values of :data:`bench.store.DEVICE_COLUMNS` for a unit's rows."""
    vals = {"tf32": tf32_allowed(spec.device, spec.tf32), "deterministic": bool(spec.deterministic),
            **device_facts(spec.device), "gpu_peak_mem_mb": float(peak_mem_mb)}
    assert list(vals) == store.DEVICE_COLUMNS, "bench.store.DEVICE_COLUMNS and device_columns() disagree"
    return vals


def _rows_frame(spec, *, status, error, metrics: dict, nfe_used, iterations, wall_s: float,
                info: dict | None = None, peak_mem_mb: float = float("nan")) -> pd.DataFrame:
    ids = [i for i in spec.image_ids for _ in spec.lams]
    lams = [float(lam) for _ in spec.image_ids for lam in spec.lams]
    n = len(ids)
    prov = spec.provenance
    cols = {
        "cell_id": spec.cell_ids(), "unit_id": [spec.unit_id] * n, "task": [spec.task] * n,
        "prior": [spec.prior_name] * n, "prior_sha256": [spec.prior_sha256] * n,
        "dataset": [spec.dataset] * n, "split": [spec.split] * n, "image_id": ids, "lam": lams,
        "solver": [spec.solver] * n, "seed": [spec.seed] * n, "image_size": [spec.image_size] * n,
    }
    for k in METRICS:
        cols[k] = np.asarray(metrics.get(k, np.full(n, np.nan)), dtype=np.float64)
    cols.update({
        "nfe_used": np.asarray(nfe_used, dtype=np.int64), "budget": [spec.budget] * n,
        "iterations": np.asarray(iterations, dtype=np.int64), "wall_time_s": [wall_s / max(n, 1)] * n,
        "status": list(status), "error": list(error),
        "git_commit": [prov.get("git_commit", "unknown")] * n,
        "torch_version": [prov.get("torch_version", torch.__version__)] * n,
        "numpy_version": [prov.get("numpy_version", np.__version__)] * n,
        "device": [spec.device] * n, "torch_threads": [torch.get_num_threads()] * n,
        "cpu_isa": [numerics.describe()] * n, "started_at": [prov.get("started_at", "")] * n,
        "grid_name": [prov.get("grid_name", "")] * n, "grid_hash": [prov.get("grid_hash", "")] * n,
        "tuned": [bool(spec.tuned)] * n, "mle_steps": [spec.mle_steps] * n, "protocol": [spec.protocol] * n,
    })
    cols.update({k: [v] * n for k, v in device_columns(spec, peak_mem_mb).items()})
    for k, v in sorted(spec.task_params.items()):
        cols[f"p_task_{k}"] = [v] * n
    for k, v in sorted(spec.solver_params.items()):
        # an unresolved (None) parameter is NaN, not null, so part files of one run share a schema
        cols[f"p_solver_{k}"] = [float("nan") if v is None else v] * n
    for k, v in sorted((info or {}).items()):
        cols[f"info_{k}"] = v
    return pd.DataFrame(cols)


def error_rows(spec, message: str, status: str = "error") -> pd.DataFrame:
    """Rows for a unit that failed (or was skipped) before producing anything."""
    n = len(spec.image_ids) * len(spec.lams)
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


def _traces_frame(spec, trace, expand_rows, cids) -> pd.DataFrame:
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
            "unit_id": spec.unit_id,
            "nfe": nfe[:, cols].reshape(-1).astype(np.int64),
            "map_loss": loss[:, cols].reshape(-1),
        })
    except Exception:  # noqa: BLE001 -- a malformed trace never costs the rows
        return empty


def _run_unit(spec):
    from bench.budget import BudgetedPrior
    from bench.solvers.base import SolveContext
    from bench.tasks import make_task

    device = torch.device(spec.device)
    iset = get_images(spec.dataset, spec.dataset_split, spec.image_size, spec.data_root)
    pos = {i: k for k, i in enumerate(iset.ids)}
    ids, lams = list(spec.image_ids), [float(x) for x in spec.lams]
    x = iset.images[[pos[i] for i in ids]].clone()
    task = make_task(spec.task)
    solver = _build_solver(spec)
    B, L = len(ids), len(lams)
    N = B * L

    reset_peak_memory(device)
    t0 = clock(device)
    problem = task.make(x.to(device), ids, spec.seed)
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
        return error_rows(spec, one_line_text(reason), status=store.SKIPPED), None, None
    budget = int(spec.budget)
    bp = (BudgetedPrior(fresh_model(spec.prior, device, spec.prior_sha256), budget, solve_p.batch_size)
          if solver.uses_prior else None)
    ctx = SolveContext(budget=budget, mle_steps=spec.mle_steps, seed=spec.seed, device=device)

    status, error = ["ok"] * N, [""] * N
    x_hat, trace, info = None, None, {}
    try:
        # the solver gets copies without the clean images; the harness scores with its own full, lam_full
        res = solver.solve(solve_p.for_solver(), bp, solve_lam.clone(), ctx)
        used = bp.used if bp is not None else torch.zeros(solve_p.batch_size, dtype=torch.long)
        if int(used.max()) > budget:
            raise BudgetExceeded((used > budget).nonzero().flatten().tolist(), int(used.max()), budget)
        xs = res.x_hat.detach()
        if not xs.is_floating_point():   # complex, integer or bool: an error, never silently cast to real
            raise TypeError(f"solver returned x_hat of dtype {xs.dtype}; expected a real floating-point tensor")
        if tuple(xs.shape) != (solve_p.batch_size, *solve_p.shape):
            raise ValueError(f"solver returned x_hat of shape {tuple(xs.shape)}, "
                             f"expected {(solve_p.batch_size, *solve_p.shape)}")
        x_hat = xs.to(device=device, dtype=x.dtype)[torch.as_tensor(expand, device=device)]
        trace, info = res.trace, res.info or {}
        scorer = fresh_model(spec.prior, device, spec.prior_sha256)
        if trace is not None and trace.x:
            try:
                trace, trace_rows = _score_trace(trace, full, scorer, lam_full, expand)
            except Exception:  # noqa: BLE001 -- a trace that cannot be scored never costs the rows
                trace = None
    except BudgetExceeded as e:
        status, error = ["overspend"] * N, [one_line(e)] * N
    except (Exception, SystemExit) as e:  # noqa: BLE001 -- failure isolation: the run goes on
        status, error = ["error"] * N, [one_line(e) if not isinstance(e, SystemExit)
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
                    status[k], error[k] = "error", "scoring failed: " + one_line(e)
    wall = clock(device) - t0

    cids = spec.cell_ids()
    rows = _rows_frame(spec, status=status, error=error, metrics=metrics, nfe_used=nfe_used, iterations=iterations,
                       wall_s=wall, info=info_cols, peak_mem_mb=peak_memory_mb(device))
    traces = _traces_frame(spec, trace, trace_rows, cids)
    try:
        recon = _recon(full, x_hat, cids)
    except Exception:  # noqa: BLE001 -- a task's figure hooks failing never costs the rows
        recon = None
    return rows, traces, recon


def _recon(full, x_hat, cids) -> dict:
    """Arrays for figures: cell_id, x_hat, x_true, observed (the task's ``observed_image``), mask."""
    x_true = full.x_true.detach().cpu().float().numpy()
    xh = x_hat.detach().cpu().float().numpy() if x_hat is not None else np.full_like(x_true, np.nan)
    # what y shows as an image, and which of its pixels were observed: the task says
    observed = full.task.observed_image(full).detach().cpu().float().numpy()
    mask = full.task.observed_mask(full).detach().cpu().float().numpy()
    return {"cell_id": np.asarray(cids), "x_hat": xh.astype(np.float32), "x_true": x_true.astype(np.float32),
            "observed": observed.astype(np.float32), "mask": mask.astype(np.float32)}


def execute_unit(spec, out_dir) -> dict:
    """Run one work unit and write its part files; returns a summary dict. Top-level and pure in its inputs (a
    spec of names and numbers, an output folder), so any executor can ship it to another process or machine."""
    t0 = time.perf_counter()
    for mod in spec.imports:
        importlib.import_module(mod)
    try:
        with numerics_mode(spec.device, tf32=spec.tf32, deterministic=spec.deterministic):
            rows, traces, recon = _run_unit(spec)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 -- loading failed: the unit becomes error rows
        rows, traces, recon = error_rows(spec, one_line(e)), None, None
    store.write_unit(out_dir, spec.unit_id, rows, traces, recon)
    return summarize(spec.unit_id, rows, time.perf_counter() - t0)


def summarize(uid: str, rows: pd.DataFrame, wall_s: float) -> dict:
    counts = rows["status"].value_counts().to_dict()
    return {"unit_id": uid, "rows": int(len(rows)), "status": {k: int(v) for k, v in counts.items()},
            "wall_s": float(wall_s)}
