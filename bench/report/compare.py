"""Two runs side by side (pure functions): paired differences per table cell and the verdicts that changed.

Rows are matched on (task, prior, split, λ, solver, seed, image) — the task with its parameters but without the
budget or MLE length. Of the identity columns that can differ between two runs (:data:`VARYING`: budget, MLE
length, protocol, commit, device, torch version, prior checkpoint, tuning), one that holds a single value in each
run is *what differs* between them (stated in the header, not matched on); one with several values in a run is
an axis of the runs and is matched on too. Per table cell: n pairs, mean ± se of B − A for the headline metrics
(:meth:`bench.core.metrics.MetricTable.headline`: MAP loss and PSNR).
Per (task, prior, split, λ) and metric: the verdict of each run (:func:`bench.report.tables.cell_verdicts`: the
significant winner above the run's noise floor, or a tie of the best two) and whether it changed: another significant winner, or a win
where there was a tie or the reverse (a tie between other solvers is no change).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.core.metrics import METRICS
from bench.core.schema import ROW_KEY, TABLE_CELL, WINNER_CELL, instance_task
from bench.report.noise_floor import table_floor
from bench.report.tables import cell_verdicts, is_ok, markdown, solver_order, task_order

VARYING = ["budget", "mle_steps", "protocol", "git_commit", "device", "torch_version", "prior_sha256", "tuned",
           "grid_name"]
PER_PRIOR = {"prior_sha256"}   # columns that are a function of the prior name


def _values(df: pd.DataFrame, col: str) -> list[str]:
    return sorted(map(str, df[col].dropna().unique())) if col in df.columns else []


def differences(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[tuple], list[str]]:
    """(what differs: [(column, values in A, values in B)], extra match columns)."""
    differ, axes = [], []
    for c in VARYING:
        if c in PER_PRIOR and c in a.columns and c in b.columns:   # a function of the prior: compare per prior
            ma = a.groupby("prior")[c].agg(lambda s: ",".join(sorted(map(str, s.unique()))))
            mb = b.groupby("prior")[c].agg(lambda s: ",".join(sorted(map(str, s.unique()))))
            for prior in sorted(set(ma.index) & set(mb.index)):
                if ma[prior] != mb[prior]:
                    differ.append((f"{c} of {prior}", [ma[prior][:12]], [mb[prior][:12]]))
            continue
        va, vb = _values(a, c), _values(b, c)
        if va == vb and len(va) <= 1:
            continue
        if len(va) == 1 and len(vb) == 1:
            differ.append((c, va, vb))
        elif set(va) & set(vb):
            axes.append(c)
        else:
            differ.append((c, va, vb))
    return differ, axes


def _base(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``task`` the task alone (:func:`bench.core.schema.instance_task`): runs are matched without budgets."""
    out = df.copy()
    out["task"] = instance_task(out)
    return out


def paired_cells(a: pd.DataFrame, b: pd.DataFrame, axes: list) -> pd.DataFrame:
    """Per table cell (and axis value): n pairs and mean ± se of B − A per metric, both rows ok."""
    key = ROW_KEY + axes
    cols = [m for m in METRICS.headline() if m in a.columns and m in b.columns]
    m = a[is_ok(a)][key + cols].merge(b[is_ok(b)][key + cols], on=key, suffixes=("_a", "_b"))
    recs = []
    for cell, g in m.groupby(TABLE_CELL + axes, sort=False):
        r = dict(zip(TABLE_CELL + axes, cell if isinstance(cell, tuple) else (cell,)))
        r["n"] = len(g)
        for c in cols:
            d = (g[f"{c}_b"].astype(float) - g[f"{c}_a"].astype(float)).to_numpy()
            d = d[np.isfinite(d)]
            r[f"d_{c}"] = float(d.mean()) if len(d) else math.nan
            r[f"se_{c}"] = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
        recs.append(r)
    return pd.DataFrame(recs)


def _verdicts(df: pd.DataFrame, metric: str, axes: list) -> dict:
    solvers = solver_order(df["solver"].unique())
    out = {}
    for k, g in df.groupby(["task"] + axes, sort=False):
        k = k if isinstance(k, tuple) else (k,)
        for cell, v in cell_verdicts(g, metric, solvers, table_floor(df, g, metric)).items():
            out[(k[0], *cell, *k[1:])] = ((v["best"], v["best"], v["best"]) if v.get("win") else
                                          ("tie", "tie (" + ", ".join(sorted((v["best"], v["runner_up"]))) + ")",
                                           v["best"]))
    return out


def verdict_changes(a: pd.DataFrame, b: pd.DataFrame, axes: list) -> pd.DataFrame:
    """Per (task, prior, split, λ, axes) and metric present in both runs: verdict in A, in B, changed?"""
    recs = []
    for metric in METRICS.headline():
        va, vb = _verdicts(a, metric, axes), _verdicts(b, metric, axes)
        for k in sorted(set(va) & set(vb), key=str):
            recs.append({**dict(zip(WINNER_CELL + axes, k)), "metric": metric,
                         "A": va[k][1], "B": vb[k][1], "best A": va[k][2], "best B": vb[k][2],
                         "changed": va[k][0] != vb[k][0], "best_changed": va[k][2] != vb[k][2]})
    return pd.DataFrame(recs)


def compare_runs(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Everything :func:`markdown_report` shows."""
    differ, axes = differences(a, b)
    a, b = _base(a), _base(b)
    cells = paired_cells(a, b, axes)
    ca = set(map(tuple, a[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    cb = set(map(tuple, b[TABLE_CELL].drop_duplicates().itertuples(index=False)))
    return {"differ": differ, "axes": axes, "cells": cells, "verdicts": verdict_changes(a, b, axes),
            "only_a": len(ca - cb), "only_b": len(cb - ca), "rows": (len(a), len(b))}


def _pm(x, se, d=2) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{x:+.{d}f}" + (f" ± {se:.{d}f}" if np.isfinite(se) else "")


def markdown_report(res: dict, name_a: str, name_b: str) -> str:
    """The comparison as markdown: what differs, changed verdicts, per-solver summary, every cell."""
    out = [f"# Comparison: `{name_b}` (B) against `{name_a}` (A)", ""]
    out += ([f"- {c}: A {', '.join(va) or '(none)'}; B {', '.join(vb) or '(none)'}" for c, va, vb in res["differ"]]
            or ["- no identity column differs between the runs"])
    if res["axes"]:
        out.append(f"- matched per value of: {', '.join(res['axes'])}")
    out += [f"- rows: A {res['rows'][0]:,}, B {res['rows'][1]:,}; table cells in one run only: A {res['only_a']}, "
            f"B {res['only_b']}", "",
            "Differences are B − A on the same (task, prior, split, λ, solver, seed, image), both rows ok; mean ± se "
            "over those pairs. Verdicts as in the leaderboard (significant winner after Holm above the noise floor, else "
            "a tie).", ""]
    v = res["verdicts"]
    sections = (("changed", "Changed verdicts", "a significant winner changed, appeared or disappeared"),
                ("best_changed", "Changed best mean within ties", "the lowest mean changed but neither run's "
                 "difference is significant: read as noise unless the verdicts above agree"))
    for flag, title, what in sections:
        ch = v[v[flag] & ~(v["changed"] if flag == "best_changed" else False)] if len(v) else v
        out += [f"## {title} ({len(ch)} of {len(v)})", "", what[0].upper() + what[1:] + ".", ""]
        cols = [c for c in v.columns if c not in ("changed", "best_changed")]
        out += ([markdown(cols, [[f"{x:g}" if isinstance(x, float) else str(x) for x in r]
                                 for r in ch[cols].itertuples(index=False)]), ""] if len(ch) else ["None.", ""])
    cells = res["cells"]
    if len(cells):
        out += ["## Per solver and task", "",
                "Mean over the cells of each task of the cells' mean differences (B − A).", ""]
        g = cells.groupby(["task", "solver"], sort=False)
        summ = pd.DataFrame({c: g[c].mean() for c in cells.columns if c.startswith("d_")}).reset_index()
        summ["cells"] = g.size().to_numpy()
        order = {t: i for i, t in enumerate(task_order(summ["task"].unique()))}
        summ = summ.sort_values(["task", "solver"], key=lambda s: s.map(order) if s.name == "task" else s)
        dcols = [c for c in summ.columns if c.startswith("d_")]
        out += [markdown(["task", "solver", "cells"] + [f"Δ {c[2:]}" for c in dcols],
                         [[r.task, r.solver, str(r.cells)] + [f"{getattr(r, c):+.3f}" for c in dcols]
                          for r in summ.itertuples(index=False)]), ""]
        out += ["## Every cell", ""]
        keys = TABLE_CELL + res["axes"]
        mets = [c[2:] for c in cells.columns if c.startswith("d_")]
        out += [markdown(keys + ["n"] + [f"Δ {m}" for m in mets],
                         [[f"{r[k]:g}" if k == "lam" else str(r[k]) for k in keys] + [str(r["n"])]
                          + [_pm(r[f"d_{m}"], r[f"se_{m}"]) for m in mets] for _, r in cells.iterrows()]), ""]
    return "\n".join(out)


def html_report(md_text: str, title: str) -> str:
    """A self-contained HTML version of the markdown (tables and lists; no script, no network)."""
    import html as h

    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set(":- ")]
            cells = [[h.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            body.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
                        + "</tbody></table>")
            table.clear()

    for line in md_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            body.append(f"<h{n}>{h.escape(line[n:].strip())}</h{n}>")
        elif line.startswith("- "):
            body.append(f"<li>{h.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{h.escape(line)}</p>")
    flush()
    style = ("body{font:14px system-ui,sans-serif;max-width:1400px;margin:auto;padding:0 16px}"
             "table{border-collapse:collapse;font-size:12.5px}td,th{border:1px solid #ddd;padding:2px 6px}"
             "th{background:#f3f3f3}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" "
            f"content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>{h.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
