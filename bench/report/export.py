"""Exports for the tools people already use (pure functions): the per-cell tables as CSV and the anytime traces in
IOHanalyzer's CSV format.

IOHanalyzer CSV (one line per evaluation record; upload it as "custom CSV" and map the columns): ``evaluations``
= prior passes spent, ``value`` = MAP loss − f_ref (the gap to the best-known optimum, minimised; 0 = reached),
``function`` = task·prior·λ, ``algorithm`` = solver (``@budget`` when the run has several budgets), ``run`` =
image·seed (with the split), ``dimension`` = pixels of the image. Only the records that improve the run's best value
so far are written (IOHprofiler's improvement-only convention), the final harness-scored result included; a
failed row writes none.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

IOH_COLUMNS = ["evaluations", "value", "function", "algorithm", "run", "dimension"]


def ioh_traces(rows: pd.DataFrame, traces: pd.DataFrame, fref: pd.Series) -> pd.DataFrame:
    """The IOHanalyzer table (module docstring) of a run's ok rows, traces and best-known optima."""
    from bench.core.metrics import loss_metric
    from bench.core.schema import INSTANCE, TASK_SPEC
    from bench.report.profiles import ALGO, algo_label, points

    p = points(rows, traces)
    p = p.join(fref, on=INSTANCE)
    p = p[np.isfinite(p["f_ref"].to_numpy(float))]
    p["value"] = (p[loss_metric()] - p["f_ref"]).clip(lower=0.0)
    p = p.sort_values(INSTANCE + ALGO + ["nfe"], kind="stable")
    best = p.groupby(INSTANCE + ALGO, sort=False)["value"].cummin()
    prev = best.groupby([p[c] for c in INSTANCE + ALGO], sort=False).shift(1)
    p = p[prev.isna() | (p["value"] < prev)]
    budgets = sorted(p["budget"].unique())
    size = pd.to_numeric(p["image_size"], errors="coerce").fillna(0).astype(int)
    return pd.DataFrame({
        "evaluations": p["nfe"].astype(int).to_numpy(),
        "value": p["value"].to_numpy(float),
        "function": (p[TASK_SPEC].astype(str) + "·" + p["prior"].astype(str) + "·λ=" + p["lam"].map("{:g}".format)).to_numpy(),
        "algorithm": [algo_label(s, b, budgets) for s, b in zip(p["solver"], p["budget"])],
        "run": (p["split"].astype(str) + ":" + p["image_id"].astype(str) + "·seed=" + p["seed"].astype(str)).to_numpy(),
        "dimension": (size * size).to_numpy(),
    })


def check_ioh(table: pd.DataFrame) -> list[str]:
    """What is wrong with an IOHanalyzer table (empty when it fits the format): the columns and their types, finite
    non-negative values, positive evaluation counts, and per (function, algorithm, run) evaluations increasing and
    values strictly decreasing (improvement-only)."""
    problems = []
    if list(table.columns) != IOH_COLUMNS:
        return [f"columns {list(table.columns)} != {IOH_COLUMNS}"]
    if not np.issubdtype(table["evaluations"].dtype, np.integer) or (table["evaluations"] < 0).any():
        problems.append("evaluations must be non-negative integers")
    if not np.isfinite(table["value"].to_numpy(float)).all() or (table["value"] < 0).any():
        problems.append("values must be finite and >= 0")
    for col in ("function", "algorithm", "run"):
        if table[col].astype(str).str.contains(",").any():
            problems.append(f"{col} contains the CSV separator")
    for key, g in table.groupby(["function", "algorithm", "run"], sort=False):
        if not (np.diff(g["evaluations"].to_numpy()) >= 0).all() or not (np.diff(g["value"].to_numpy()) < 0).all():
            problems.append(f"{key}: evaluations must increase and values decrease")
            break
    return problems
