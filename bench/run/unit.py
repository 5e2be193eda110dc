"""Executing a batch of work units: build each unit's problem, run its solver under the budget, score, write its files.

- A batch (:class:`~bench.plan.batches.UnitBatch`) is one or more units with the same prior, solver and budget; each
  member solves on its own thread (its own solver process by default) and their prior passes are evaluated
  together, a round at a time, by one model (:class:`~bench.run.passes.PassBatcher`). Everything else below is per
  unit.
- The Problem is built once for the unit's images (``task.make``, randomness keyed by task, image id and seed index)
  and expanded to rows (image × λ, image-major) with ``Problem.take``; the solver solves the whole batch once, with
  a :class:`~bench.run.budget.BudgetedPrior` of ``budget`` passes per row. Solvers with ``lam_independent = True``
  are solved once per image and their rows replicated across λ (their traces are kept for the first λ only).
- By default the solve runs in a solver process (:mod:`bench.run.isolate`): it gets y, the operator's state, the task,
  λ, the budget and the seed, with opaque row keys instead of image ids; its prior is a proxy of this process's
  counted oracle. No plugin code runs here: the harness reads only the solver class's declared attributes.
  ``spec.run.isolate = False`` (``run --no-isolation``) solves in this process instead: for debugging and profiling
  only, since a plugin can then reach everything here.
- The harness (:mod:`bench.run.scoring`) scores ``x_hat`` with :func:`bench.core.metrics.score` and its own model,
  and builds the anytime trace from the points the solver marked on its prior (``trace_point``): losses this
  process computed at the evaluated iterates, or iterates it scores with uncharged passes; pass counts are the
  oracle's. ``info_*`` columns are what the solver reported about itself (e.g. AIPO's ``lam_reached``).
- Failures are isolated (:class:`bench.core.schema.Status`): an exception gives rows with status ``error`` and a one-line
  ``error``; asking for a pass past the budget gives ``overspend`` (even if the solver caught the error); a row
  whose ``x_hat`` is not finite gives ``nan``; an ``x_hat`` that is not a real floating-point tensor (complex,
  integer, bool) is an error, never cast. A solver process that runs past the unit's wall-time limit gives
  ``timeout``, past its memory limit ``oom``, and one that dies (a signal, an exit code, ``KeyboardInterrupt``)
  ``crashed``.
- ``wall_time_s`` is the batch's wall time (problems, solves, scoring; cached loading excluded) divided by its rows,
  read with :func:`bench.core.device.clock` (after the device's queued work); ``pass_batch`` the rows its passes were
  batched with. The batch computes under :func:`bench.core.device.numerics_mode` (TF32, ``--deterministic``); its
  rows record those flags, the device's facts and the batch's peak GPU memory
  (:data:`bench.core.schema.DEVICE_COLUMNS`). The rows' columns and dtypes are :mod:`bench.core.schema`'s
  (:func:`bench.core.schema.rows_frame`).
"""
from __future__ import annotations

import importlib
import math
import threading
import time

import numpy as np
import pandas as pd
import torch

from bench.core import numerics, objective
from bench.core.device import clock, device_facts, numerics_mode, peak_memory_mb, reset_peak_memory, tf32_allowed
from bench.core.errors import BudgetExceeded, one_line, one_line_text
from bench.core.metrics import METRICS
from bench.core.schema import ERROR, INFO, SOLVER_PARAM, STATUS, TASK_PARAM, Status, rows_frame
from bench.plan.loading import fresh_model, get_images
from bench.run.channel import DONE, SKIP
from bench.run.oracle import Outcome, landlock_available, solve_isolated
from bench.run.passes import PassBatcher
from bench.run.scoring import harness_trace, per_row, recon_arrays, score_rows, traces_frame
from bench.store import parts as store

def _rows_frame(spec, *, status, error, metrics: dict, nfe_used, iterations, wall_s: float,
                info: dict | None = None) -> pd.DataFrame:
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
        "torch_threads": torch.get_num_threads(), "pass_batch": 0, "cpu_isa": numerics.describe(),
        "started_at": prov.get("started_at", ""), "grid_name": prov.get("grid_name", ""),
        "grid_hash": prov.get("grid_hash", ""), "tuned": bool(spec.tuned), "mle_steps": spec.mle_steps,
        "protocol": spec.protocol, "tf32": tf32_allowed(run.device, run.tf32),
        "deterministic": bool(run.deterministic), **device_facts(run.device), "gpu_peak_mem_mb": float("nan"),
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


def _solve(spec, solver_cls, solve_p, solve_lam, bp, device, timeout_s):
    """Solve in a fresh solver process (default) or in this process (``spec.run.isolate`` False)."""
    if not spec.run.isolate:
        return _solve_in_process(spec, solver_cls, solve_p, solve_lam, bp, device)
    keys = [f"row-key-{k}" for k in range(len(spec.image_ids))]   # opaque: the solver never learns the image ids
    row_keys = keys if solver_cls.lam_independent else [k for k in keys for _ in spec.lams]
    n = max(math.prod(bp.image_shape), math.prod(bp.latent_shape))
    job = {"threads": torch.get_num_threads(), "memory_mb": spec.run.memory_mb or DEFAULT_MEMORY_MB,
           "imports": list(spec.run.imports), "landlock": landlock_available(), "solver": [solver_cls.name,
           solver_cls.__module__, solver_cls.__qualname__, dict(spec.solver_overrides)], "task": spec.task, "y": solve_p.y, "state": dict(solve_p.state),
           "shape": list(solve_p.shape), "keys": row_keys, "seed": int(spec.seed), "lam": solve_lam,
           "budget": int(spec.budget), "mle_steps": int(spec.mle_steps), "uses_prior": bool(solver_cls.uses_prior),
           "latent_shape": list(bp.latent_shape), "image_shape": list(bp.image_shape)}
    return solve_isolated(bp=bp, job=job, keys_to_ids=dict(zip(keys, spec.image_ids)), device=device,
                          timeout_s=timeout_s, max_message=64 * solve_p.batch_size * n * 8 + (1 << 20))


class _Unit:
    """One member of a batch between its planning and its rows: the problem expanded to rows (image-major, λ
    fastest), what its solver is given (``solve_p``, ``solve_lam``: one row per image for λ-independent solvers),
    the harness's own copies, and its counted prior."""

    def __init__(self, spec, passes, scorer, device):
        from bench.run.budget import BudgetedPrior
        from bench.tasks import make_task

        self.spec, self.scorer = spec, scorer
        iset = get_images(spec.dataset, spec.dataset_split, spec.image_size, spec.data_root)
        pos = {i: k for k, i in enumerate(iset.ids)}
        ids, lams = list(spec.image_ids), list(spec.lams)
        x = iset.images[[pos[i] for i in ids]].clone()
        self.solver_cls = _solver_class(spec)   # class attributes only: no plugin code runs here (unless in-process)
        B, L = len(ids), len(lams)
        self.N, self.dtype = B * L, x.dtype
        problem = make_task(spec.task).make(x.to(device), ids, spec.seed)
        row_img = [i for i in range(B) for _ in range(L)]
        self.full = problem.take(row_img)
        self.lam_full = torch.tensor([lam for _ in range(B) for lam in lams], dtype=x.dtype, device=device)
        if self.solver_cls.lam_independent:
            self.solve_p, self.expand = problem, row_img
            self.solve_lam = torch.full((B,), lams[0], dtype=x.dtype, device=device)
            self.trace_rows = [r if k % L == 0 else None for k, r in enumerate(row_img)]
        else:
            self.solve_p, self.solve_lam, self.expand = self.full, self.lam_full, list(range(self.N))
            self.trace_rows = self.expand
        # the harness's own copies: what the trace's losses and the scores are computed with
        own_p, own_lam = self.solve_p.for_solver(), self.solve_lam.clone()

        def loss_fn(xs, logp):
            return objective.map_loss(own_p.data_nll(xs), logp, own_lam.to(logp.dtype))

        if self.solver_cls.uses_prior:
            self.bp = BudgetedPrior(passes, int(spec.budget), self.solve_p.batch_size, loss_fn)
        else:   # prior-free: every pass is refused (the model is there for its shapes only)
            self.bp = BudgetedPrior(scorer, 0, self.solve_p.batch_size)

    @property
    def solve_rows(self) -> int:
        return self.solve_p.batch_size

    def solve(self, device, timeout_s):
        return _solve(self.spec, self.solver_cls, self.solve_p, self.solve_lam, self.bp, device, timeout_s)

    def finish(self, out, device):
        """(rows, traces, recon) of the solve's :class:`~bench.run.oracle.Outcome` (wall time filled in later)."""
        spec, N, bp, full = self.spec, self.N, self.bp, self.full
        if out.kind == SKIP:
            # the combination does not apply (declared by the solver): no solve, no prior pass
            return error_rows(spec, one_line_text(out.message), status=Status.SKIPPED), None, None
        budget = int(spec.budget)
        status, error = [Status.OK] * N, [""] * N
        x_hat, trace, info, trace_rows = None, None, {}, self.trace_rows
        used = bp.used.clone()
        try:
            if bp.refused or int(used.max()) > budget:
                raise BudgetExceeded((used > budget).nonzero().flatten().tolist() or list(range(len(used))),
                                     int(used.max()), budget)
            if out.kind != DONE:   # a failure: the outcome's kind is the rows' status
                raise _Failed(Status(out.kind), out.message)
            xs = out.x_hat
            if not isinstance(xs, torch.Tensor):
                raise TypeError(f"solver returned x_hat of type {getattr(xs, 'what', type(xs).__name__)}; expected "
                                f"a real floating-point tensor")
            xs = xs.detach()
            if not xs.is_floating_point():   # complex, integer or bool: an error, never silently cast to real
                raise TypeError(f"solver returned x_hat of dtype {xs.dtype}; expected a real floating-point tensor")
            if tuple(xs.shape) != (self.solve_rows, *self.solve_p.shape):
                raise ValueError(f"solver returned x_hat of shape {tuple(xs.shape)}, "
                                 f"expected {(self.solve_rows, *self.solve_p.shape)}")
            x_hat = xs.to(device=device, dtype=self.dtype)[torch.as_tensor(self.expand, device=device)]
            info = out.info if isinstance(out.info, dict) else {}
            try:
                trace, trace_rows = harness_trace(bp, full, self.scorer, self.lam_full, self.expand, trace_rows)
            except Exception:  # noqa: BLE001 -- a trace that cannot be scored never costs the rows
                trace = None
        except BudgetExceeded as e:
            status, error = [Status.OVERSPEND] * N, [one_line(e)] * N
        except _Failed as e:
            status, error = [e.status] * N, [one_line_text(e.message)] * N
        except Exception as e:  # noqa: BLE001 -- failure isolation: the run goes on
            status, error = [Status.ERROR] * N, [one_line(e)] * N

        nfe_used = used[torch.as_tensor(self.expand)].numpy()
        iterations = nfe_used.copy()
        info_cols = {}
        for k, v in info.items():
            arr = per_row(v, self.solve_rows)
            if arr is None:
                continue
            if k == "iterations":
                iterations = arr[self.expand].astype(np.int64)
            else:
                info_cols[k] = arr[self.expand]

        metrics = {k: np.full(N, np.nan) for k in METRICS}
        if x_hat is not None:
            finite = torch.isfinite(x_hat.flatten(1)).all(1).cpu()
            for k in torch.nonzero(~finite).flatten().tolist():
                status[k], error[k] = Status.NAN, "solver returned a non-finite x_hat (NaN or inf)"
            ok = [k for k in range(N) if status[k] == Status.OK]
            if ok:
                try:
                    sc = score_rows(full.take(ok), self.scorer, x_hat[torch.as_tensor(ok, device=device)],
                                self.lam_full[torch.as_tensor(ok, device=device)])
                    for k, v in sc.items():
                        metrics[k][ok] = v
                except Exception as e:  # noqa: BLE001
                    for k in ok:
                        status[k], error[k] = Status.ERROR, "scoring failed: " + one_line(e)
        cids = spec.cell_ids()
        rows = _rows_frame(spec, status=status, error=error, metrics=metrics, nfe_used=nfe_used,
                           iterations=iterations, wall_s=0.0, info=info_cols)
        traces = traces_frame(spec, trace, trace_rows, cids)
        try:
            recon = recon_arrays(full, x_hat, cids)
        except Exception:  # noqa: BLE001 -- a task's figure hooks failing never costs the rows
            recon = None
        return rows, traces, recon


def _solve_all(members, passes, device, timeout_s) -> list:
    """Every member's Outcome: alone, or each on its own thread as a member of ``passes``' rounds."""
    if len(members) == 1:
        return [members[0].solve(device, timeout_s)]
    outs = [None] * len(members)

    def work(k):
        # a backward through a batched graph waits for its round: it must run on this thread, not on the autograd
        # engine's device thread that all members share (CUDA), which would then block the others' backward
        with passes.member(k), torch.autograd.set_multithreading_enabled(False):
            try:
                outs[k] = members[k].solve(device, timeout_s)
            except Exception as e:  # noqa: BLE001 -- the harness's side of one solve failed: its rows say so
                outs[k] = Outcome(Status.ERROR, one_line(e))

    passes.open(len(members))
    threads = [threading.Thread(target=work, args=(k,), daemon=True, name=f"unit-{k}") for k in range(len(members))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def _run_batch(specs) -> list:
    """(rows, traces, recon) of every unit of a batch (same prior, solver, budget and run settings), solved together
    with their prior passes batched (:class:`~bench.run.passes.PassBatcher`). A member that cannot be built gets
    error rows; the others go on."""
    spec0 = specs[0]
    device = torch.device(spec0.run.device)
    for s in specs:   # cached loading, outside the timed part
        get_images(s.dataset, s.dataset_split, s.image_size, s.data_root)
    reset_peak_memory(device)
    t0 = clock(device)
    scorer = fresh_model(spec0.prior, device, spec0.prior_sha256)
    passes = PassBatcher(fresh_model(spec0.prior, device, spec0.prior_sha256)
                         if _solver_class(spec0).uses_prior else scorer)
    results, members = {}, []
    for k, s in enumerate(specs):
        try:
            members.append((k, _Unit(s, passes, scorer, device)))
        except Exception as e:  # noqa: BLE001 -- this member becomes error rows
            results[k] = (error_rows(s, one_line(e)), None, None)
    solve_rows = sum(m.solve_rows for _, m in members)
    timeout_s = spec0.run.timeout_s or default_timeout_s(spec0.budget, solve_rows)
    outs = _solve_all([m for _, m in members], passes, device, timeout_s)
    for (k, m), out in zip(members, outs):
        results[k] = m.finish(out, device)
    wall, peak = clock(device) - t0, peak_memory_mb(device)
    n_rows = sum(len(results[k][0]) for k, _ in members)
    for k, _ in members:
        rows = results[k][0]
        rows["wall_time_s"] = wall / max(n_rows, 1)
        rows["gpu_peak_mem_mb"] = float(peak)
        rows["pass_batch"] = solve_rows
    return [results[k] for k in range(len(specs))]


class _Failed(Exception):
    """A solve that ended in a failure status (:class:`bench.core.schema.Status`) with its message."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def execute_batch(batch, out_dir) -> list[dict]:
    """Run a :class:`~bench.plan.batches.UnitBatch` and write the part files of the units it writes; returns their
    summaries. Top-level and pure in its inputs (specs of names and numbers, an output folder), so any executor can
    ship it to another process or machine."""
    t0 = time.perf_counter()
    specs = list(batch.units)
    run = specs[0].run
    for mod in run.imports:
        importlib.import_module(mod)
    try:
        with numerics_mode(run.device, tf32=run.tf32, deterministic=run.deterministic):
            results = _run_batch(specs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # noqa: BLE001 -- loading failed: the units become error rows
        results = [(error_rows(s, one_line(e)), None, None) for s in specs]
    written = [(s, r) for s, r in zip(specs, results) if s.unit_id in batch.write]
    share = (time.perf_counter() - t0) / max(1, sum(len(r[0]) for _, r in written))
    out = []
    for spec, (rows, traces, recon) in written:
        store.write_unit(out_dir, spec.unit_id, rows, traces, recon)
        out.append(summarize(spec.unit_id, rows, share * len(rows)))
    return out


def execute_unit(spec, out_dir) -> dict:
    """Run one work unit alone (a batch of one) and write its part files; returns its summary."""
    from bench.plan.batches import UnitBatch

    (summary,) = execute_batch(UnitBatch((spec,), frozenset([spec.unit_id])), out_dir)
    return summary


def summarize(uid: str, rows: pd.DataFrame, wall_s: float) -> dict:
    counts = rows["status"].value_counts().to_dict()
    return {"unit_id": uid, "rows": int(len(rows)), "status": {k: int(v) for k, v in counts.items()},
            "wall_s": float(wall_s)}
