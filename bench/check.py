"""Regression check: compare a run against a reference run, table cell by table cell (pure functions).

A table cell is (task, prior, split, λ, solver), its samples the (image, seed) rows — the cells of the
leaderboard tables. The check fails when

- a cell (or an image/seed row of a cell) exists on one side only;
- a row's ``status`` changed (matched on task, prior, split, λ, solver, seed, image);
- a metric's cell mean (ok rows) moved by more than its tolerance;
- the winner (lowest mean MAP loss; cells with failures are not eligible, as in the report) of a
  (task, prior, split, λ) row changed.

Tolerances (``--fail-map-loss`` etc.) are ``<k>se`` (k standard errors of the reference cell's mean),
``<x>%`` (percent of |reference mean|) or a plain number (absolute units: nats, dB). Every tolerance has a floor of
``REL_FLOOR`` × |reference mean| so that float noise never fails. Defaults (``DEFAULTS``) are meant for
deterministic CPU reruns of the same grid: MAP loss 0.01 % (a relative 1e-4; the se of a small grid is dominated
by image-to-image spread, so "3se" would hide a changed solver default), PSNR 0.05 dB, SSIM 0.002. For noisy
(GPU) reruns pass e.g. ``--fail-map-loss 3se --fail-psnr 0.2``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.report import ROW_KEY, TABLE_CELL, cell_stats, is_ok

DEFAULTS = {"map_loss": "0.01%", "psnr": "0.05", "ssim": "0.002"}
REL_FLOOR = 1e-6
WINNER_CELL = ["task", "prior", "split", "lam"]
HEADERS = ["cell", "metric", "reference", "current", "delta", "tolerance"]
_TOL = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(se|%)?\s*$")


@dataclass(frozen=True)
class Tolerance:
    kind: str     # "se", "rel" (percent) or "abs"
    value: float
    text: str

    def limit(self, ref_mean: float, ref_se: float) -> float:
        floor = REL_FLOOR * abs(ref_mean) + 1e-12
        if self.kind == "se":
            lim = self.value * ref_se if np.isfinite(ref_se) else 0.0
        elif self.kind == "rel":
            lim = self.value / 100.0 * abs(ref_mean)
        else:
            lim = self.value
        return max(lim, floor)


def parse_tolerance(text: str, flag: str = "tolerance") -> Tolerance:
    """``"3se"`` | ``"0.01%"`` | ``"0.2"`` -> :class:`Tolerance`; anything else is a UserError."""
    m = _TOL.match(str(text))
    if not m:
        raise UserError(f"{flag}: bad tolerance {text!r}; use <k>se (e.g. 3se), <x>% (e.g. 0.01%) or an absolute "
                        "number (e.g. 0.2)")
    kind = {"se": "se", "%": "rel", None: "abs"}[m.group(2)]
    return Tolerance(kind, float(m.group(1)), str(text).strip())


def cell_label(key, names=TABLE_CELL) -> str:
    d = dict(zip(names, key))
    parts = [str(d[c]) if c != "lam" else f"λ={float(d[c]):g}" for c in names]
    return " / ".join(parts)


def _fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "nan"
    return f"{x:.6g}"


def winners(df: pd.DataFrame) -> dict:
    """{(task, prior, split, λ): tuple of solvers with the lowest mean MAP loss (ties all listed)}."""
    st = cell_stats(df, "map_loss")
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


def compare(current: pd.DataFrame, reference: pd.DataFrame, tolerances: dict) -> tuple[list[list[str]], int]:
    """Problems (rows for :data:`HEADERS`) and the number of table cells compared."""
    problems: list[list[str]] = []
    for df in (current, reference):
        df["lam"] = df["lam"].astype(float)
    ref_cells = set(map(tuple, reference[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    cur_cells = set(map(tuple, current[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    for key in sorted(ref_cells - cur_cells, key=str):
        problems.append([cell_label(key), "cell", "present", "missing", "", ""])
    for key in sorted(cur_cells - ref_cells, key=str):
        problems.append([cell_label(key), "cell", "missing", "present", "", ""])
    common = ref_cells & cur_cells

    # rows: missing (image, seed) samples and status changes
    m = reference[ROW_KEY + ["status"]].merge(current[ROW_KEY + ["status"]], on=ROW_KEY, how="outer",
                                                  suffixes=("_ref", "_cur"), indicator=True)
    m = m[[k in common for k in zip(*[m[c] for c in TABLE_CELL])]]
    for key, g in m.groupby(TABLE_CELL, sort=True):
        only_ref, only_cur = int((g["_merge"] == "left_only").sum()), int((g["_merge"] == "right_only").sum())
        if only_ref or only_cur:
            problems.append([cell_label(key), "rows (image, seed)", f"{only_ref + int((g['_merge'] == 'both').sum())}",
                             f"{only_cur + int((g['_merge'] == 'both').sum())}",
                             f"{only_ref} missing, {only_cur} new", ""])
        both = g[g["_merge"] == "both"]
        changed = both[both["status_ref"].astype(str) != both["status_cur"].astype(str)]
        if len(changed):
            problems.append([cell_label(key), "status", _status_text(changed["status_ref"].value_counts()),
                             _status_text(changed["status_cur"].value_counts()), f"{len(changed)} rows", ""])

    # metrics: cell means over ok rows
    for metric, tol in tolerances.items():
        if metric not in reference.columns or metric not in current.columns:
            continue
        rs, cs = cell_stats(reference, metric), cell_stats(current, metric)
        for key in sorted(common, key=str):
            r, c = rs.loc[key], cs.loc[key]
            rm, cm = float(r["mean"]), float(c["mean"])
            if not np.isfinite(rm) and not np.isfinite(cm):
                continue
            lim = tol.limit(rm, float(r["se"])) if np.isfinite(rm) else math.nan
            delta = cm - rm
            if not (np.isfinite(delta) and abs(delta) <= lim):
                problems.append([cell_label(key), metric, _fmt(rm), _fmt(cm), _fmt(delta),
                                 f"{tol.text} (= {_fmt(lim)})"])

    # winners of (task, prior, split, λ)
    wr, wc = winners(reference), winners(current)
    for key in sorted(set(wr) & set(wc), key=str):
        if wr[key] != wc[key]:
            problems.append([cell_label(key, WINNER_CELL), "winner (MAP loss)", ", ".join(wr[key]),
                             ", ".join(wc[key]), "changed", ""])
    return problems, len(common)


def provenance_notes(cur, ref) -> list[str]:
    """Differences in how the two runs computed (CPU code path, threads, device) that explain float-level moves."""
    notes = []
    for col in ("cpu_isa", "torch_threads", "device", "torch_version"):
        a = sorted(map(str, ref[col].dropna().unique())) if col in ref.columns else ["(not recorded)"]
        b = sorted(map(str, cur[col].dropna().unique())) if col in cur.columns else ["(not recorded)"]
        if a != b:
            notes.append(f"{col} differs: reference {', '.join(a)}; this run {', '.join(b)} (float results can "
                         "differ in the last bits, which chaotic solvers amplify; see README, Regression check)")
    return notes


__all__ = ["DEFAULTS", "Tolerance", "parse_tolerance", "compare", "winners", "HEADERS", "is_ok", "provenance_notes"]
