"""The data LEADERBOARD.html embeds (pure functions over the rows, traces and reconstructions): aggregates, not
the raw rows.

- ``rows``: one entry per table row (task, prior, split, λ) with its filter keys (dataset, task, prior, split, λ,
  budget, protocol) and per solver and metric mean, se, n and failed, plus the verdicts of
  :func:`bench.report.tables.task_verdicts` and per metric the table's noise floor (:mod:`bench.report.noise_floor`: value,
  source, caption);
- ``detail``: per table row and solver, the per-(image, seed) values of every table metric and the status;
- ``sprites``: per table row, one PNG (data URI) of the reconstructions of its first ``THUMB_IMAGES`` images at
  the lowest seed: columns clean, doing nothing (the x̂ of the solver of role :data:`bench.core.schema.TRIVIAL`, else
  the observation when it is an image), then every other solver;
- ``curves``: per task (as in the tables, budget included) the anytime curves of :func:`bench.report.figures.anytime_curves`
  and the data profiles / target ECDFs of :func:`bench.report.profiles.profiles` of that budget.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.metrics import METRICS
from bench.core.schema import (RECON_CELL, RECON_OBSERVED, RECON_X_HAT, RECON_X_TRUE, STATUS, TABLE_CELL, TRIVIAL,
                               WINNER_CELL, Status)
from bench.report.roles import role_solver
from bench.report.tables import cell_stats, solver_order, split_order, task_base, task_order, task_verdicts
from bench.store.parts import RECON

THUMB_IMAGES = 3


def _r(x, d=4):
    """A JSON-safe rounded float (None for nan/inf)."""
    x = float(x)
    return round(x, d) if math.isfinite(x) else None


def table_metrics(df: pd.DataFrame) -> list:
    return [m for m in METRICS.values() if m.table and m.name in df.columns]


def table_rows(df: pd.DataFrame, solvers: list) -> list[dict]:
    """The ``rows`` entries (module docstring), in the leaderboard's order."""
    metrics = table_metrics(df)
    stats = {m.name: cell_stats(df, m.name) for m in metrics}
    verdicts, floors = {}, {}
    for task in df["task"].unique():
        for m in metrics:
            v_task, floors[(task, m.name)] = task_verdicts(df, task, m.name, solvers)
            for key, v in v_task.items():
                verdicts[(task, *key, m.name)] = v
    first = df.drop_duplicates(WINNER_CELL).set_index(WINNER_CELL)
    out = []
    for task in task_order(df["task"].unique()):
        sub = df[df["task"] == task]
        for prior in sorted(sub["prior"].unique()):
            for split in split_order(sub.loc[sub["prior"] == prior, "split"]):
                for lam in sorted(sub.loc[(sub["prior"] == prior) & (sub["split"] == split), "lam"].unique()):
                    f = first.loc[(task, prior, split, lam)]
                    row = {"id": len(out), "task": task, "base": task_base(task), "prior": prior, "split": split,
                           "lam": lam, "dataset": str(f.get("dataset", "")),
                           "budget": int(f["budget"]) if "budget" in f and pd.notna(f["budget"]) else None,
                           "protocol": str(f["protocol"]) if "protocol" in f and pd.notna(f["protocol"]) else "",
                           "cells": {}, "verdict": {}, "floor": {}}
                    for m in metrics:
                        st = stats[m.name]
                        cells = {}
                        for s in solvers:
                            k = (task, prior, split, lam, s)
                            if k in st.index:
                                r = st.loc[k]
                                cells[s] = [_r(r["mean"]), _r(r["se"]), int(r["n"]), int(r["failed"])]
                        row["cells"][m.name] = cells
                        fl = floors[(task, m.name)]
                        row["floor"][m.name] = {"value": _r(fl.value) if fl.measurable else None,
                                                "source": fl.source, "caption": fl.caption()}
                        v = verdicts.get((task, prior, split, lam, m.name))
                        if v:
                            row["verdict"][m.name] = {"win": bool(v.get("win")), "best": v["best"],
                                                      "runner_up": v["runner_up"], "p": _r(v["p"], 6),
                                                      "significant": bool(v.get("significant")),
                                                      "gain": _r(v["gain"])}
                    out.append(row)
    return out


def details(df: pd.DataFrame, rows: list[dict]) -> dict:
    """Per table row id: {solver: [[image, seed, metric values..., status], ...]}."""
    names = [m.name for m in table_metrics(df)]
    ids = {(r["task"], r["prior"], r["split"], r["lam"]): r["id"] for r in rows}
    out: dict = {}
    cols = WINNER_CELL + ["solver", "image_id", "seed", STATUS] + names
    for key, g in df[cols].groupby(TABLE_CELL, sort=False):
        rid = ids.get(tuple(key[:4]))
        if rid is None:
            continue
        vals = [[str(r[5]), int(r[6])] + [_r(v, 3) for v in r[8:]] + [str(r[7])]
                for r in g.sort_values(["image_id", "seed"]).itertuples(index=False)]
        out.setdefault(str(rid), {})[key[4]] = vals
    return out


def _png(tiles: np.ndarray) -> str:
    """A data URI of a PNG of ``tiles`` (H × W or H × W × 3 in [0, 1])."""
    from PIL import Image

    a = (np.clip(np.nan_to_num(tiles, nan=0.0), 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _hw(a) -> np.ndarray | None:
    a = np.asarray(a, dtype=float)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return a if a.ndim in (2, 3) else None


def sprites(run_dir: Path, df: pd.DataFrame, rows: list[dict], solvers: list) -> dict:
    """Per table row id: {"src": PNG data URI, "cols": column labels, "images": image ids, "tile": pixels}."""
    seed0 = df.groupby(WINNER_CELL)["seed"].transform("min")
    sub = df[df["seed"] == seed0]
    first_imgs = sub.groupby(WINNER_CELL)["image_id"].agg(lambda s: sorted(map(str, s.unique()))[:THUMB_IMAGES])
    want = sub[[str(i) in first_imgs.loc[tuple(k)]
                for i, k in zip(sub["image_id"], sub[WINNER_CELL].itertuples(index=False))]]
    by_cell = {}
    for r in want[["cell_id", "image_id", "unit_id"] + WINNER_CELL + ["solver", STATUS]].itertuples(index=False):
        by_cell.setdefault(r.unit_id, []).append(r)
    arrays: dict = {}   # (task, prior, split, lam, image) -> {clean, observed (recon keys), solver: x_hat}
    nothing_solver = role_solver(TRIVIAL)
    for uid, recs in by_cell.items():
        f = Path(run_dir) / RECON / f"{uid}.npz"
        if not f.is_file():
            continue
        with np.load(f, allow_pickle=False) as z:
            if RECON_CELL not in z.files or RECON_X_HAT not in z.files:
                continue
            cids = z[RECON_CELL].astype(str)
            img_ids = z["image_id"].astype(str) if "image_id" in z.files else None
            wanted = {(r.cell_id, str(r.image_id)): r for r in recs}
            seen: dict = {}
            for i, cid in enumerate(cids):
                if img_ids is not None:
                    key = (cid, img_ids[i])
                else:   # per-image cell ids: the k-th record of a cell is its k-th image
                    match = [k for k in wanted if k[0] == cid]
                    j = seen.get(cid, 0)
                    seen[cid] = j + 1
                    key = match[j] if j < len(match) else None
                r = wanted.get(key) if key else None
                if r is None:
                    continue
                slot = arrays.setdefault((r.task, r.prior, r.split, r.lam, str(r.image_id)), {})
                slot[r.solver] = z[RECON_X_HAT][i] if getattr(r, STATUS) == Status.OK else None
                for k in (RECON_X_TRUE, RECON_OBSERVED):
                    if k in z.files and len(z[k]) > i and k not in slot:
                        slot[k] = z[k][i]
    out = {}
    for row in rows:
        key = (row["task"], row["prior"], row["split"], row["lam"])
        imgs = [i for i in first_imgs.get(key, []) if key + (i,) in arrays]
        if not imgs:
            continue
        cols = ["clean", "doing nothing"] + [s for s in solvers if s != nothing_solver]
        tiles, size = [], None
        for img in imgs:
            slot = arrays[key + (img,)]
            nothing = slot.get(nothing_solver)
            if nothing is None:
                obs = _hw(slot[RECON_OBSERVED]) if RECON_OBSERVED in slot else None
                nothing = obs if obs is not None and np.any(obs) else None
            line = [_hw(slot[RECON_X_TRUE]) if RECON_X_TRUE in slot else None, _hw(nothing) if nothing is not None else None]
            line += [_hw(slot[s]) if slot.get(s) is not None else None for s in cols[2:]]
            size = size or next(a.shape for a in line if a is not None)
            tiles.append([a if a is not None and a.shape == size else np.full(size, np.nan) for a in line])
        grid = np.concatenate([np.concatenate(t, axis=1) for t in tiles], axis=0)
        out[str(row["id"])] = {"src": _png(grid), "cols": cols, "images": imgs, "tile": int(size[0]),
                               "missing": [[i, j] for i, line in enumerate(tiles) for j, a in enumerate(line)
                                           if not np.isfinite(a).any()]}
    return out


def curves(df: pd.DataFrame, traces: pd.DataFrame, prof: dict | None, meta: dict | None = None) -> dict:
    """Per task label: {"anytime": {"x", "series"}, "profiles": {panel title: {"x", "series"}}} (module docstring)."""
    from bench.report.figures import anytime_curves
    from bench.report.profiles import TAUS

    out: dict = {}
    try:
        any_c = anytime_curves(df, traces) if traces is not None and not traces.empty else {}
    except Exception:  # noqa: BLE001 -- curves are optional; the tables stand without them
        any_c = {}
    for task, c in any_c.items():
        c = c[solver_order(c.columns, meta)]
        out.setdefault(task, {})["anytime"] = {"x": [int(x) for x in c.index],
                                               "series": {s: [_r(v, 6) for v in c[s]] for s in c.columns}}
    budgets = sorted(df["budget"].dropna().unique()) if "budget" in df.columns else []
    labels = df.drop_duplicates("task")[["task", "task_spec"] + (["budget"] if budgets else [])]
    for r in labels.itertuples(index=False):
        d = (prof or {}).get(r.task_spec)
        if not d:
            continue
        suffix = f"@{int(r.budget)}" if len(budgets) > 1 else ""

        def pick(frame):
            cols = [c for c in frame.columns if not suffix or str(c).endswith(suffix)]
            return {str(c)[:len(str(c)) - len(suffix)] if suffix else str(c): [_r(v) for v in frame[c]] for c in cols}

        panels = {f"solved at τ = {tau:g}": {"x": [int(x) for x in d["grid"]], "series": pick(d["data"][tau])}
                  for tau in TAUS}
        panels["target ECDF"] = {"x": [int(x) for x in d["grid"]], "series": pick(d["ecdf"])}
        out.setdefault(r.task, {})["profiles"] = panels
    return out
