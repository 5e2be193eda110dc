"""Regression check: compare a run against a reference run, table cell by table cell (pure functions).

A table cell is (task, prior, split, λ, solver), its samples the (image, seed) rows — the cells of the
leaderboard tables. The check fails when

- a cell of the reference is missing from the run, or an (image, seed) row of a cell exists on one side only
  (cells only the run has — a solver, task or λ added since the reference — are listed as new, not compared);
- a row's ``status`` changed (matched on task, prior, split, λ, solver, seed, image);
- a metric moved by more than its tolerance — judged on the *paired* per-image differences d_i = current −
  reference of the cell's ok rows: |mean d| ≤ k·se(d) + floor, where se(d) = std(d)/√n (a change that moves every
  image the same way is systematic; one that scatters them both ways is float noise) and the floor is a small
  relative (``%``) or absolute number under which nothing fails;
- the winner (lowest mean MAP loss, the metric of role :data:`bench.core.metrics.LOSS`; cells with failures are not
  eligible, as in the report) of a (task, prior, split, λ) row changed *significantly*: the new winner beats the
  reference's winner in the current run by more than ``WINNER_TOLERANCE`` on the paired differences (otherwise
  the two are tied within noise).

Tolerances (``--fail-map-loss`` etc., :mod:`bench.core.tolerance`): ``<k>se+<x>%``, ``<k>se+<x>``, ``<k>se``, ``<x>%``
or a plain number (absolute units: nats, dB); the metrics compared and their default tolerances are declared in
:data:`bench.core.metrics.METRICS` (``Metric.tolerance``). Solvers that declare
``chaotic = True`` (latent-lbfgs: L-BFGS without a line search amplifies last-bit differences between CPUs into
other local minima) are judged against k standard errors of the
*reference cell* (the image-to-image spread) instead of the paired se, so a chaotic solver's cell fails only when it
moves by much more than its images differ from each other, and the other solvers keep tight tolerances.

``exact_problems`` is the bit-for-bit self-check (the same run twice on one machine): every metric equal.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from bench.core.metrics import METRICS, loss_metric, short_name
from bench.core.schema import ROW_KEY, STATUS, TABLE_CELL, WINNER_CELL
from bench.core.tolerance import parse_tolerance
from bench.report.tables import cell_stats, is_ok

WINNER_TOLERANCE = "3se+0.01%"   # a winner change counts when the new winner is better by more than this
HEADERS = ["cell", "metric", "reference", "current", "delta", "tolerance"]


def exact_columns() -> tuple:
    """What the bit-for-bit self-check compares: every metric of :data:`bench.core.metrics.METRICS`, the passes and
    iterations spent and the status."""
    return (*METRICS, "nfe_used", "iterations", STATUS)


class Comparison(NamedTuple):
    problems: list      # rows for HEADERS; the check fails when there are any
    compared: int       # table cells present on both sides
    new: list           # labels of the cells present in the current run only (new, not compared)


def chaotic_solvers(names) -> set:
    """The solver specs among ``names`` whose class declares ``chaotic = True`` (unknown names: not chaotic)."""
    from bench.core.registry import parse_spec
    from bench.solvers.base import SOLVERS

    out = set()
    for s in names:
        try:
            if getattr(SOLVERS.get(parse_spec(str(s))[0]), "chaotic", False):
                out.add(s)
        except Exception:  # noqa: BLE001 -- a plugin solver not loaded here is judged like any other
            pass
    return out


def cell_label(key, names=TABLE_CELL) -> str:
    d = dict(zip(names, key))
    parts = [str(d[c]) if c != "lam" else f"λ={d[c]:g}" for c in names]
    return " / ".join(parts)


def _fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        x = math.nan
    return f"{x:.6g}"


def winners(df: pd.DataFrame) -> dict:
    """{(task, prior, split, λ): tuple of solvers with the lowest mean MAP loss (ties all listed)}."""
    st = cell_stats(df, loss_metric())
    mean = st["mean"].where(st["failed"] == 0)
    out = {}
    for key, g in mean.groupby(level=WINNER_CELL, sort=False):
        g = g.dropna()
        if len(g):
            best = g.min()
            out[key] = tuple(sorted(g.index.get_level_values("solver")[g == best]))
    return out


def _status_text(counts: pd.Series) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in counts.items())


def compare(current: pd.DataFrame, reference: pd.DataFrame, tolerances: dict) -> Comparison:
    """Problems (rows for :data:`HEADERS`), the number of table cells compared, and the cells new in ``current``.

    A cell of the current run that the reference lacks (a solver, task or λ added since) is new, not compared,
    and no problem; a reference cell the current run lacks is a problem (something disappeared). Winners are
    compared over the cells both runs have."""
    problems: list[list[str]] = []
    ref_cells = set(map(tuple, reference[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    cur_cells = set(map(tuple, current[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    for key in sorted(ref_cells - cur_cells, key=str):
        problems.append([cell_label(key), "cell", "present", "missing", "", ""])
    new = [cell_label(key) for key in sorted(cur_cells - ref_cells, key=str)]
    common = ref_cells & cur_cells
    if new:
        current = current[[k in common for k in zip(*[current[c] for c in TABLE_CELL])]]

    # rows: missing (image, seed) samples and status changes
    m = reference[ROW_KEY + [STATUS]].merge(current[ROW_KEY + [STATUS]], on=ROW_KEY, how="outer",
                                                  suffixes=("_ref", "_cur"), indicator=True)
    m = m[[k in common for k in zip(*[m[c] for c in TABLE_CELL])]]
    for key, g in m.groupby(TABLE_CELL, sort=True):
        only_ref, only_cur = int((g["_merge"] == "left_only").sum()), int((g["_merge"] == "right_only").sum())
        if only_ref or only_cur:
            problems.append([cell_label(key), "rows (image, seed)", f"{only_ref + int((g['_merge'] == 'both').sum())}",
                             f"{only_cur + int((g['_merge'] == 'both').sum())}",
                             f"{only_ref} missing, {only_cur} new", ""])
        both = g[g["_merge"] == "both"]
        changed = both[both[f"{STATUS}_ref"].astype(str) != both[f"{STATUS}_cur"].astype(str)]
        if len(changed):
            problems.append([cell_label(key), STATUS, _status_text(changed[f"{STATUS}_ref"].value_counts()),
                             _status_text(changed[f"{STATUS}_cur"].value_counts()), f"{len(changed)} rows", ""])

    # metrics: paired per-image differences over rows ok on both sides
    chaotic = chaotic_solvers({k[-1] for k in common})
    ok_r, ok_c = reference[is_ok(reference)], current[is_ok(current)]
    for metric, tol in tolerances.items():
        if metric not in reference.columns or metric not in current.columns:
            continue
        pair = ok_r[ROW_KEY + [metric]].merge(ok_c[ROW_KEY + [metric]], on=ROW_KEY, suffixes=("_ref", "_cur"))
        pair["d"] = pair[f"{metric}_cur"].astype(float) - pair[f"{metric}_ref"].astype(float)
        spread = cell_stats(reference, metric)["se"]
        for key, g in pair.groupby(TABLE_CELL, sort=True):
            if key not in common:
                continue
            d = g["d"].to_numpy(float)
            rm = float(g[f"{metric}_ref"].astype(float).mean())
            if not np.isfinite(d).all():
                problems.append([cell_label(key), metric, _fmt(rm), "non-finite", "", tol.text])
                continue
            mean = float(d.mean())
            if key[-1] in chaotic:
                se, how = float(spread.get(key, np.nan)), "reference cell se, chaotic solver"
            else:
                se, how = (float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0), "paired se"
            lim = tol.limit(rm, se)
            if abs(mean) > lim:
                problems.append([cell_label(key), metric, _fmt(rm), _fmt(rm + mean), _fmt(mean),
                                 f"{tol.text} (= {_fmt(lim)}, {how})"])

    # winners of (task, prior, split, λ): a change counts only when the new winner is significantly better
    wr, wc = winners(reference), winners(current)
    tol = parse_tolerance(WINNER_TOLERANCE)
    for key in sorted(set(wr) & set(wc), key=str):
        if wr[key] == wc[key]:
            continue
        sig = _significantly_better(ok_c, key, wc[key][0], wr[key][0], tol, chaotic)
        if sig:
            problems.append([cell_label(key, WINNER_CELL), f"winner ({short_name(loss_metric())})", ", ".join(wr[key]),
                             ", ".join(wc[key]), "changed", sig])
    return Comparison(problems, len(common), new)


def _significantly_better(df, key, new, old, tol, chaotic) -> str:
    """Text of the test if solver ``new`` beats ``old`` on MAP loss in ``df``'s cell ``key`` beyond ``tol`` on
    the paired differences (old − new, same images), else ``""``."""
    sub = df[(df[WINNER_CELL].astype(object) == pd.Series(key, index=WINNER_CELL)).all(axis=1)]
    k = [c for c in ROW_KEY if c != "solver"]
    a = sub[sub["solver"] == old].set_index(k)[loss_metric()].astype(float)
    b = sub[sub["solver"] == new].set_index(k)[loss_metric()].astype(float)
    d = (a - b).dropna()
    if d.empty:
        return ""
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    if new in chaotic or old in chaotic:
        se = max(se, float(b.std(ddof=1) / math.sqrt(len(b))) if len(b) > 1 else 0.0)
    lim = tol.limit(float(a.mean()), se)
    return f"by {_fmt(float(d.mean()))} > {_fmt(lim)} ({tol.text})" if float(d.mean()) > lim else ""


def exact_problems(current: pd.DataFrame, reference: pd.DataFrame) -> list[list[str]]:
    """The bit-for-bit self-check: the same rows (ROW_KEY) with identical values in every :func:`exact_columns`."""
    cols = [c for c in exact_columns() if c in current.columns and c in reference.columns]
    m = reference[ROW_KEY + cols].merge(current[ROW_KEY + cols], on=ROW_KEY, how="outer", suffixes=("_ref", "_cur"),
                                        indicator=True)
    out = []
    for key, g in m.groupby(TABLE_CELL, sort=True):
        if (g["_merge"] != "both").any():
            out.append([cell_label(key), "rows", "", "", f"{int((g['_merge'] != 'both').sum())} unmatched", "exact"])
            continue
        for c in cols:
            a, b = g[f"{c}_ref"], g[f"{c}_cur"]
            same = (a == b) | (a.isna() & b.isna())
            if not same.all():
                out.append([cell_label(key), c, _fmt(a[~same].iloc[0]), _fmt(b[~same].iloc[0]),
                            f"{int((~same).sum())} rows differ", "exact"])
    return out


def provenance_notes(cur, ref) -> list[str]:
    """Differences in how the two runs computed (CPU code path, threads, device, GPU, TF32, deterministic
    algorithms, the batches of units' sizes) that explain float-level moves. The device columns (:data:`bench.core.schema.DEVICE_COLUMNS`, recorded
    since the rows had them) are compared only when both runs record them."""
    notes = []
    newer = [c for c in ("gpu_name", "tf32", "deterministic", "pass_batch") if c in ref.columns and c in cur.columns]
    for col in ("cpu_isa", "torch_threads", "device", "torch_version", *newer):
        a = sorted(map(str, ref[col].dropna().unique())) if col in ref.columns else ["(not recorded)"]
        b = sorted(map(str, cur[col].dropna().unique())) if col in cur.columns else ["(not recorded)"]
        if a != b:
            notes.append(f"{col} differs: reference {', '.join(a)}; this run {', '.join(b)} (float results can "
                         "differ in the last bits, which chaotic solvers amplify; see README, Regression check)")
    return notes

