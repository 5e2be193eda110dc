"""Executing one work unit: build its problem, run its solver under the budget, score, write its files.

- The Problem is built once for the unit's images (``task.make``, randomness keyed by task, image id and seed index)
  and expanded to rows (image × λ, image-major) with ``Problem.take``; the solver solves the whole batch once, with
  a :class:`~bench.run.budget.BudgetedPrior` of ``budget`` passes per row. Solvers with ``lam_independent = True``
  are solved once per image and their rows replicated across λ (their traces are kept for the first λ only).
- By default the solve runs in a solver process (:mod:`bench.run.isolate`): it gets y, the operator's state, the task,
  λ, the budget and the seed, with opaque row keys instead of image ids; its prior is a proxy of this process's
  counted oracle. No plugin code runs here: the harness reads only the solver class's declared attributes.
  ``spec.run.isolate = False`` (``run --no-isolation``) solves in this process instead: for debugging and profiling
  only, since a plugin can then reach everything here.
- The harness scores ``x_hat`` with :func:`bench.core.metrics.score` and its own model, and builds the anytime trace
  from the points the solver marked on its prior (``trace_point``): losses this process computed at the evaluated
  iterates, or iterates it scores with uncharged passes; pass counts are the oracle's. ``info_*`` columns are what
  the solver reported about itself (e.g. AIPO's ``lam_reached``).
- Failures are isolated (:class:`bench.core.schema.Status`): an exception gives rows with status ``error`` and a one-line
  ``error``; asking for a pass past the budget gives ``overspend`` (even if the solver caught the error); a row
  whose ``x_hat`` is not finite gives ``nan``; an ``x_hat`` that is not a real floating-point tensor (complex,
  integer, bool) is an error, never cast. A solver process that runs past the unit's wall-time limit gives
  ``timeout``, past its memory limit ``oom``, and one that dies (a signal, an exit code, ``KeyboardInterrupt``)
  ``crashed``.
- ``wall_time_s`` is the unit's wall time (problem, solve, scoring; cached loading excluded) divided by its rows,
  read with :func:`bench.core.device.clock` (after the device's queued work). The unit computes under
  :func:`bench.core.device.numerics_mode` (TF32, ``--deterministic``); its rows record those flags, the device's facts
  and the unit's peak GPU memory (:data:`bench.core.schema.DEVICE_COLUMNS`). The rows' columns and dtypes are
  :mod:`bench.core.schema`'s (:func:`bench.core.schema.rows_frame`).
"""
from __future__ import annotations

import importlib
import math
import time

import numpy as np
import pandas as pd
import torch

from bench.core import numerics, objective
from bench.core.device import clock, device_facts, numerics_mode, peak_memory_mb, reset_peak_memory, tf32_allowed
from bench.core.errors import BudgetExceeded, one_line, one_line_text
from bench.core.metrics import METRICS
from bench.core.schema import (ERROR, INFO, RECON_CELL, RECON_MASK, RECON_OBSERVED, RECON_X_HAT, RECON_X_TRUE,
                               SOLVER_PARAM, STATUS, TASK_PARAM, Status, rows_frame, trace_columns)
from bench.plan.loading import fresh_model, get_images
from bench.run.channel import DONE, SKIP
from bench.run.oracle import Outcome, landlock_available, solve_isolated
from bench.store import parts as store

SCORE_CHUNK = 128


def _rows_frame(spec, *, status, error, metrics: dict, nfe_used, iterations, wall_s: float,
                info: dict | None = None, peak_mem_mb: float = float("nan")) -> pd.DataFrame:
    """The unit's rows (image-major, λ fastest): :func:`bench.core.schema.rows_frame` of the values of this unit."""
    ids = [i for i in spec.image_ids for _ in spec.lams]
    lams = [lam for _ in spec.image_ids for lam in spec.lams]
    n = len(ids)
    run, prov = spec.run, spec.run.provenance
    one = {
        "unit_id": spec.unit_id, "task": spec.task, "prior": spec.prior_name, "prior_sha256": spec.prior_sha256,
        "dataset": spec.dataset, "split": spec.split, "solver": spec.solver, "seed": spec.seed,
        "image_size": spec.image_size, "budget": spec.budget, "wall_time_s": wall_s / max(n, 1),
        "git_commit": prov.get("git_commit", "unknown"), "torch_version": prov.get("torch_version", torch.__version__),
        "numpy_version": prov.get("numpy_version", np.__version__), "device": run.device,
        "torch_threads": torch.get_num_threads(), "cpu_isa": numerics.describe(),
        "started_at": prov.get("started_at", ""), "grid_name": prov.get("grid_name", ""),
        "grid_hash": prov.get("grid_hash", ""), "tuned": bool(spec.tuned), "mle_steps": spec.mle_steps,
        "protocol": spec.protocol, "tf32": tf32_allowed(run.device, run.tf32),
        "deterministic": bool(run.deterministic), **device_facts(run.device), "gpu_peak_mem_mb": float(peak_mem_mb),
    }
    values = {k: [v] * n for k, v in one.items()}
    values.update({"cell_id": spec.cell_ids(), "image_id": ids, "lam": lams, "nfe_used": nfe_used,
                   "iterations": iterations, STATUS: [Status(s).value for s in status], ERROR: list(error)})
    values.update({k: metrics.get(k, np.full(n, np.nan)) for k in METRICS})
    extra = {f"{TASK_PARAM}{k}": [v] * n for k, v in sorted(spec.task_params.items())}
    # an unresolved (None) parameter is NaN, not null, so part files of one run share a schema
    extra.update({f"{SOLVER_PARAM}{k}": [float("nan") if v is None else v] * n
                  for k, v in sorted(spec.solver_params.items())})
    extra.update({f"{INFO}{k}": v for k, v in sorted((info or {}).items())})
    return rows_frame(values, extra)


def error_rows(spec, message: str, status: Status = Status.ERROR) -> pd.DataFrame:
    """Rows for a unit that failed (or was skipped) before producing anything."""
    n = len(spec.image_ids) * len(spec.lams)
    return _rows_frame(spec, status=[status] * n, error=[message] * n, metrics={}, nfe_used=[0] * n,
                       iterations=[0] * n, wall_s=0.0)


def _score(problem, prior, x_hat, lam) -> dict:
    from bench.core.metrics import score

    parts = []
    for i in range(0, x_hat.shape[0], SCORE_CHUNK):
        rows = list(range(i, min(i + SCORE_CHUNK, x_hat.shape[0])))
        parts.append(score(problem.take(rows), prior, x_hat[i:i + len(rows)], lam[i:i + len(rows)]))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _score_trace(trace, full, model, lam_full, expand):
    """A trace recorded as iterates (``Trace.x``), scored like x̂ for every row of ``full`` at the row's own λ:
    returns (the trace with ``nfe``/``loss`` per row of ``full``, the identity row map)."""
    from bench.solvers.base import Trace

    idx = torch.as_tensor(expand)
    dev = full.y.device
    out = Trace()
    for nfe, x in zip(trace.nfe, trace.x):
        xs = x.to(dev, full.y.dtype)[idx.to(dev)].clamp(0, 1)
        loss = torch.cat([objective.problem_map_loss(full.take(list(range(i, min(i + SCORE_CHUNK, len(idx))))),
                                                     model, xs[i:i + SCORE_CHUNK], lam_full[i:i + SCORE_CHUNK])
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
    """Long table (:func:`bench.core.schema.trace_columns`: cell id, unit id, passes, MAP loss) from a solver Trace;
    ``expand_rows[k]`` = solve row of row k."""
    columns = trace_columns()
    empty = pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in columns})
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
        cell, unit, passes, value = (c.name for c in columns)
        return pd.DataFrame({
            cell: np.repeat(np.asarray([cids[k] for k in keep])[None, :], T, 0).reshape(-1),
            unit: spec.unit_id,
            passes: nfe[:, cols].reshape(-1).astype(np.int64),
            value: loss[:, cols].reshape(-1),
        })
    except Exception:  # noqa: BLE001 -- a malformed trace never costs the rows
        return empty


DEFAULT_MEMORY_MB = 4096   # a solver process's memory beyond the template's, unless the grid says


def default_timeout_s(budget: int, rows: int) -> float:
    """A unit's wall-time limit unless its grid declares ``unit_timeout_s``: 10 minutes plus 0.1 s per
    image-pass of its budget (the shipped grids spend 1–50 ms per image-pass)."""
    return 600.0 + 0.1 * int(budget) * int(rows)


def _solver_class(spec):
    from bench.core.registry import parse_spec
    from bench.solvers.base import SOLVERS

    return SOLVERS.get(parse_spec(spec.solver)[0])


def _solve_in_process(spec, solver_cls, solve_p, solve_lam, bp, device):
    """The unsafe debugging path (``run --no-isolation``): the solver runs in this process."""
    from bench.solvers.base import SolveContext

    solver = solver_cls(**spec.solver_overrides)
    if reason := solver.skip(solve_p.for_solver()):
        return Outcome(SKIP, str(reason))
    ctx = SolveContext(budget=int(spec.budget), mle_steps=spec.mle_steps, seed=spec.seed, device=device)
    try:
        # the solver gets copies without the clean images; the harness scores with its own full, lam_full
        res = solver.solve(solve_p.for_solver(), bp if solver_cls.uses_prior else None, solve_lam.clone(), ctx)
        return Outcome(DONE, "", res.x_hat, res.info if isinstance(res.info, dict) else {})
    except BudgetExceeded as e:
        return Outcome(Status.OVERSPEND, one_line(e))
    except SystemExit as e:
        return Outcome(Status.ERROR, f"solver called exit({e.code!r})")
    except Exception as e:  # noqa: BLE001 -- failure isolation: the run goes on
        return Outcome(Status.ERROR, one_line(e))


def _solve(spec, solver_cls, solve_p, solve_lam, bp, device, row_img):
    """Solve in a fresh solver process (default) or in this process (``spec.run.isolate`` False)."""
    if not spec.run.isolate:
        return _solve_in_process(spec, solver_cls, solve_p, solve_lam, bp, device)
    B = len(spec.image_ids)
    keys = [f"row-key-{k}" for k in range(B)]          # opaque: the solver never learns the image ids
    row_keys = keys if solver_cls.lam_independent else [keys[i] for i in row_img]
    n = max(math.prod(bp.image_shape), math.prod(bp.latent_shape))
    job = {"threads": torch.get_num_threads(), "memory_mb": spec.run.memory_mb or DEFAULT_MEMORY_MB,
           "imports": list(spec.run.imports), "landlock": landlock_available(), "solver": [solver_cls.name,
           solver_cls.__module__, solver_cls.__qualname__, dict(spec.solver_overrides)], "task": spec.task, "y": solve_p.y, "state": dict(solve_p.state),
           "shape": list(solve_p.shape), "keys": row_keys, "seed": int(spec.seed), "lam": solve_lam,
           "budget": int(spec.budget), "mle_steps": int(spec.mle_steps), "uses_prior": bool(solver_cls.uses_prior),
           "latent_shape": list(bp.latent_shape), "image_shape": list(bp.image_shape)}
    timeout = spec.run.timeout_s or default_timeout_s(spec.budget, spec.rows)
    return solve_isolated(bp=bp, job=job, keys_to_ids=dict(zip(keys, spec.image_ids)), device=device,
                          timeout_s=timeout, max_message=64 * solve_p.batch_size * n * 8 + (1 << 20))


def _harness_trace(bp, full, scorer, lam_full, expand, trace_rows):
    """The anytime trace from the points the solver marked on its prior: losses the harness computed at them, or
    iterates it scores now (uncharged passes); the pass counts are the prior's. Returns (Trace, row map)."""
    from bench.solvers.base import Trace

    points = bp.trace_points()
    trace = Trace()
    if not points:
        return None, trace_rows
    if points[0][0] == "loss":
        for _, used, loss in points:
            trace.record(used, loss)
        return trace, trace_rows
    for _, used, x in points:
        trace.record(used, x=x)
    return _score_trace(trace, full, scorer, lam_full, expand)


def _run_unit(spec):
    from bench.run.budget import BudgetedPrior
    from bench.tasks import make_task

    device = torch.device(spec.run.device)
    iset = get_images(spec.dataset, spec.dataset_split, spec.image_size, spec.data_root)
    pos = {i: k for k, i in enumerate(iset.ids)}
    ids, lams = list(spec.image_ids), list(spec.lams)
    x = iset.images[[pos[i] for i in ids]].clone()
    task = make_task(spec.task)
    solver_cls = _solver_class(spec)   # its class attributes only: no plugin code runs here (unless in-process)
    B, L = len(ids), len(lams)
    N = B * L

    reset_peak_memory(device)
    t0 = clock(device)
    problem = task.make(x.to(device), ids, spec.seed)
    row_img = [i for i in range(B) for _ in range(L)]
    full = problem.take(row_img)
    lam_full = torch.tensor([lam for _ in range(B) for lam in lams], dtype=x.dtype, device=device)
    if solver_cls.lam_independent:
        solve_p, solve_lam, expand = problem, torch.full((B,), lams[0], dtype=x.dtype, device=device), row_img
        trace_rows = [r if k % L == 0 else None for k, r in enumerate(row_img)]
    else:
        solve_p, solve_lam, expand = full, lam_full, list(range(N))
        trace_rows = expand
    budget = int(spec.budget)
    # the harness's own copies: what the trace's losses and the scores are computed with
    own_p, own_lam = solve_p.for_solver(), solve_lam.clone()

    def loss_fn(xs, logp):
        return objective.map_loss(own_p.data_nll(xs), logp, own_lam.to(logp.dtype))

    scorer = fresh_model(spec.prior, device, spec.prior_sha256)
    if solver_cls.uses_prior:
        bp = BudgetedPrior(fresh_model(spec.prior, device, spec.prior_sha256), budget, solve_p.batch_size, loss_fn)
    else:   # prior-free: every pass is refused (the model is there for its shapes only)
        bp = BudgetedPrior(scorer, 0, solve_p.batch_size)
    out = _solve(spec, solver_cls, solve_p, solve_lam, bp, device, row_img)
    if out.kind == "skip":
        # the combination does not apply (declared by the solver): no solve, no prior pass
        return error_rows(spec, one_line_text(out.message), status=Status.SKIPPED), None, None

    status, error = [Status.OK] * N, [""] * N
    x_hat, trace, info = None, None, {}
    used = bp.used.clone()
    try:
        if bp.refused or int(used.max()) > budget:
            raise BudgetExceeded((used > budget).nonzero().flatten().tolist() or list(range(len(used))),
                                 int(used.max()), budget)
        if out.kind != DONE:   # a failure: the outcome's kind is the rows' status
            raise _Failed(Status(out.kind), out.message)
        xs = out.x_hat
        if not isinstance(xs, torch.Tensor):
            raise TypeError(f"solver returned x_hat of type {getattr(xs, 'what', type(xs).__name__)}; expected a "
                            f"real floating-point tensor")
        xs = xs.detach()
        if not xs.is_floating_point():   # complex, integer or bool: an error, never silently cast to real
            raise TypeError(f"solver returned x_hat of dtype {xs.dtype}; expected a real floating-point tensor")
        if tuple(xs.shape) != (solve_p.batch_size, *solve_p.shape):
            raise ValueError(f"solver returned x_hat of shape {tuple(xs.shape)}, "
                             f"expected {(solve_p.batch_size, *solve_p.shape)}")
        x_hat = xs.to(device=device, dtype=x.dtype)[torch.as_tensor(expand, device=device)]
        info = out.info if isinstance(out.info, dict) else {}
        try:
            trace, trace_rows = _harness_trace(bp, full, scorer, lam_full, expand, trace_rows)
        except Exception:  # noqa: BLE001 -- a trace that cannot be scored never costs the rows
            trace = None
    except BudgetExceeded as e:
        status, error = [Status.OVERSPEND] * N, [one_line(e)] * N
    except _Failed as e:
        status, error = [e.status] * N, [one_line_text(e.message)] * N
    except Exception as e:  # noqa: BLE001 -- failure isolation: the run goes on
        status, error = [Status.ERROR] * N, [one_line(e)] * N

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
            status[k], error[k] = Status.NAN, "solver returned a non-finite x_hat (NaN or inf)"
        ok = [k for k in range(N) if status[k] == Status.OK]
        if ok:
            try:
                sc = _score(full.take(ok), scorer, x_hat[torch.as_tensor(ok, device=device)],
                            lam_full[torch.as_tensor(ok, device=device)])
                for k, v in sc.items():
                    metrics[k][ok] = v
            except Exception as e:  # noqa: BLE001
                for k in ok:
                    status[k], error[k] = Status.ERROR, "scoring failed: " + one_line(e)
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


class _Failed(Exception):
    """A solve that ended in a failure status (:class:`bench.core.schema.Status`) with its message."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _recon(full, x_hat, cids) -> dict:
    """Arrays for figures: cell_id, x_hat, x_true, observed (the task's ``observed_image``), mask."""
    x_true = full.x_true.detach().cpu().float().numpy()
    xh = x_hat.detach().cpu().float().numpy() if x_hat is not None else np.full_like(x_true, np.nan)
    # what y shows as an image, and which of its pixels were observed: the task says
    observed = full.task.observed_image(full).detach().cpu().float().numpy()
    mask = full.task.observed_mask(full).detach().cpu().float().numpy()
    return {RECON_CELL: np.asarray(cids), RECON_X_HAT: xh.astype(np.float32), RECON_X_TRUE: x_true.astype(np.float32),
            RECON_OBSERVED: observed.astype(np.float32), RECON_MASK: mask.astype(np.float32)}


def execute_unit(spec, out_dir) -> dict:
    """Run one work unit and write its part files; returns a summary dict. Top-level and pure in its inputs (a
    spec of names and numbers, an output folder), so any executor can ship it to another process or machine."""
    t0 = time.perf_counter()
    for mod in spec.run.imports:
        importlib.import_module(mod)
    try:
        with numerics_mode(spec.run.device, tf32=spec.run.tf32, deterministic=spec.run.deterministic):
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
