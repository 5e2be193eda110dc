"""Anytime performance the way optimisation benchmarks report it (pure functions over rows and traces).

- **Instance**: one optimisation problem, (task, prior and its checkpoint sha256, dataset, image size, split, image,
  λ, seed); budgets are not part of it.
- **Best-known optimum** ``f_ref``: the lowest MAP loss any solver reached on the instance, over final results
  and every trace point, across all runs given (and a ``bench reference`` table when one is present). Every row
  gets ``gap`` = map_loss − f_ref and ``rel_gap`` = gap / (f(x0) − f_ref), the share of the possible decrease from
  doing nothing that is still left (the MAP loss itself can be near 0, so gap/|f_ref| would mean nothing).
- **Data profiles** (Moré & Wild 2009): an instance counts as solved at tolerance τ by a solver after p passes once
  f(x0) − f_best(p) ≥ (1 − τ)(f(x0) − f_L), f_L = f_ref. Solvers start from different points here, so f(x0) is one
  common start per instance: the MAP loss of doing nothing (the x̂ of the solver with the
  :data:`bench.core.schema.TRIVIAL` role), else the worst first trace value of any solver. Curves: fraction of
  instances solved vs passes, per task, for τ ∈ ``TAUS``.
- **Target ECDF** (COCO / IOHprofiler): targets f_ref + Δf, Δf log-spaced (``N_TARGETS``) over the observed range
  of positive gaps of the task; ECDF(p) = fraction of (instance, target) pairs a solver has reached after p passes.
  The **anytime score** is the area under the ECDF over log10(passes) from 1 to the largest budget, normalised to
  [0, 1] (1: every target reached at the first pass).
- f_best(p) of a (solver, budget, instance) is the running minimum of its trace, and its final harness-scored
  result from the pass it used on. Prior-free solvers (no passes) are left out of the curves (noted by the report).
  A (solver, budget, instance) whose row failed counts as never solved, so failures lower a solver's curves.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.metrics import loss_metric
from bench.core.schema import INSTANCE, TASK_SPEC, TRIVIAL, instance_task
from bench.report.roles import role_solver
from bench.report.tables import is_ok

ALGO = ["solver", "budget"]
TAUS = (1e-1, 1e-2, 1e-3)
N_TARGETS = 21
N_GRID = 60


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``rows`` with every INSTANCE column (the task alone: :func:`bench.core.schema.instance_task`)."""
    out = rows.copy()
    out[TASK_SPEC] = instance_task(out)
    return out


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    """The ok rows, keyed, with a numeric MAP loss."""
    loss = loss_metric()
    out = _keyed(rows[is_ok(rows)])
    out[loss] = pd.to_numeric(out[loss], errors="coerce")
    return out


def points(rows: pd.DataFrame, traces: pd.DataFrame) -> pd.DataFrame:
    """Long table INSTANCE + ALGO + (nfe, MAP loss): every trace point and every final result of ok rows."""
    loss = loss_metric()
    ok = _ok(rows)
    final = ok[INSTANCE + ALGO + ["nfe_used", loss]].rename(columns={"nfe_used": "nfe"})
    parts = [final]
    if traces is not None and not traces.empty and {"cell_id", "nfe", loss} <= set(traces.columns):
        tr = traces[["cell_id", "nfe", loss]].merge(ok[["cell_id"] + INSTANCE + ALGO], on="cell_id")
        parts.append(tr.drop(columns="cell_id"))
    p = pd.concat(parts, ignore_index=True)
    p[loss] = pd.to_numeric(p[loss], errors="coerce")
    p["nfe"] = pd.to_numeric(p["nfe"], errors="coerce").astype(int)
    return p[np.isfinite(p[loss].to_numpy(float))]


def f_ref(rows: pd.DataFrame, traces: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.Series:
    """The best-known optimum per instance (module docstring), a Series indexed by INSTANCE."""
    loss = loss_metric()
    best = points(rows, traces).groupby(INSTANCE)[loss].min()
    if reference is not None and len(reference):
        on = [c for c in INSTANCE if c in reference.columns]   # tables of older versions hold fewer instance columns
        ref = reference.groupby(on)[loss].min().rename("ref")
        cand = best.reset_index().join(ref, on=on).set_index(INSTANCE)
        best = cand[[loss, "ref"]].min(axis=1)
    return best.rename("f_ref")


def with_gaps(rows: pd.DataFrame, fref: pd.Series, f0: pd.Series | None = None) -> pd.DataFrame:
    """``rows`` with ``f_ref``, ``gap`` = MAP loss − f_ref and ``rel_gap`` = gap / (f0 − f_ref) (module
    docstring; NaN for failed rows and where f0 − f_ref is not positive)."""
    out = _keyed(rows).join(fref, on=INSTANCE)
    out["gap"] = (pd.to_numeric(out[loss_metric()], errors="coerce") - out["f_ref"]).where(is_ok(out))
    span = (out.join(f0, on=INSTANCE)["f0"] - out["f_ref"]) if f0 is not None else pd.Series(np.nan, out.index)
    out["rel_gap"] = out["gap"] / span.where(span > 0)
    return out


def start_values(rows: pd.DataFrame, traces: pd.DataFrame) -> pd.Series:
    """f(x0) per instance: the trivial solver's MAP loss, else the worst first trace value (module docstring)."""
    loss = loss_metric()
    ok = _ok(rows)
    triv = ok[ok["solver"] == role_solver(TRIVIAL)].groupby(INSTANCE)[loss].max()
    p = points(rows, traces)
    first = p.sort_values("nfe").groupby(INSTANCE + ALGO)[loss].first().groupby(level=INSTANCE).max()
    return triv.reindex(first.index.union(triv.index)).fillna(first).rename("f0")


def pass_grid(max_passes: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, max(int(max_passes), 1), N_GRID)).astype(int))


def best_so_far(p: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    """(INSTANCE + ALGO) × grid matrix of the best MAP loss reached by each pass count (NaN before the first)."""
    out, loss = {}, loss_metric()
    for key, g in p.groupby(INSTANCE + ALGO, sort=False):
        g = g.sort_values("nfe")
        run_min = np.minimum.accumulate(g[loss].to_numpy(float))
        idx = np.searchsorted(g["nfe"].to_numpy(), grid, side="right") - 1
        out[key] = np.where(idx >= 0, run_min[np.clip(idx, 0, None)], np.nan)
    m = pd.DataFrame.from_dict(out, orient="index", columns=grid)
    m.index = pd.MultiIndex.from_tuples(m.index, names=INSTANCE + ALGO)
    return m


def algo_label(solver, budget, budgets) -> str:
    return f"{solver}@{int(budget)}" if len(budgets) > 1 else str(solver)


def profiles(rows: pd.DataFrame, traces: pd.DataFrame, fref: pd.Series | None = None) -> dict:
    """Per task: {"grid": passes, "data": {τ: DataFrame(grid × algo)}, "ecdf": DataFrame(grid × algo),
    "targets": Δf values, "left_out": prior-free solvers}."""
    fref = f_ref(rows, traces) if fref is None else fref
    f0 = start_values(rows, traces)
    p = points(rows, traces)
    used = p.groupby("solver")["nfe"].max()
    prior_free = sorted(s for s, n in used.items() if n == 0)
    p = p[~p["solver"].isin(prior_free)]
    every = _keyed(rows)   # every (instance, algorithm) that was run, failed ones included: they count as unsolved
    every = every[every["solver"].isin(p["solver"].unique())][INSTANCE + ALGO].drop_duplicates()
    budgets = sorted(p["budget"].unique())
    out = {}
    for task, pt in p.groupby(TASK_SPEC, sort=False):
        grid = pass_grid(int(pt["budget"].max()))
        bsf = best_so_far(pt, grid)
        full = pd.MultiIndex.from_frame(every[every[TASK_SPEC] == task])
        bsf = bsf.reindex(bsf.index.union(full))
        inst = bsf.index.droplevel(ALGO)
        fl = fref.reindex(inst).to_numpy(float)
        x0 = f0.reindex(inst).to_numpy(float)
        gaps = bsf.to_numpy(float) - fl[:, None]
        algos = [algo_label(s, b, budgets) for s, b in zip(bsf.index.get_level_values("solver"),
                                                               bsf.index.get_level_values("budget"))]
        data = {}
        for tau in TAUS:
            need = x0 - (1 - tau) * (x0 - fl)
            solved = (bsf.to_numpy(float) <= need[:, None]) & np.isfinite(bsf.to_numpy(float))
            data[tau] = pd.DataFrame(solved, columns=grid).groupby(algos).mean().T
        pos = gaps[np.isfinite(gaps) & (gaps > 0)]
        lo, hi = (max(pos.min(), 1e-3), max(pos.max(), 1e-3 * 10)) if len(pos) else (1e-3, 1.0)
        targets = np.geomspace(lo, hi, N_TARGETS)
        reached = np.stack([(gaps <= t) & np.isfinite(gaps) for t in targets], 0).mean(0)
        ecdf = pd.DataFrame(reached, columns=grid).groupby(algos).mean().T
        out[task] = {"grid": grid, "data": data, "ecdf": ecdf, "targets": targets, "left_out": prior_free}
    return out


def anytime_scores(prof: dict) -> pd.DataFrame:
    """Area under each algorithm's target ECDF over log10(passes), normalised to [0, 1]: rows algo, cols task."""
    cols = {}
    for task, d in prof.items():
        e, x = d["ecdf"], np.log10(d["grid"].astype(float))
        span = x[-1] - x[0]
        y = e.fillna(0.0).to_numpy()
        trap = ((y[1:] + y[:-1]) / 2 * np.diff(x)[:, None]).sum(0) if len(x) > 1 else y[0]
        cols[task] = pd.Series(trap / span if span > 0 else y[-1], index=e.columns)
    t = pd.DataFrame(cols)
    if len(t.columns):
        t["mean"] = t.mean(axis=1)
    return t
