"""The leaderboard's headline: one ranking table per task group, computed from the rows (pure functions).

A *task group* is the cells of one task (``denoise``, ``cs``, ``inpaint``; every parameter value, budget and MLE
length of it) in which the same set of solvers ran — so the cs sweep, where only a few solvers ran, is its own
group. Per group and solver:

- **mean rank** of MAP loss over the group's ranking cells (task × prior × split × λ × seed, as
  :func:`bench.report.tables.rank_cells`: ties share the best rank, a failed row ranks last), with its standard
  deviation over those cells;
- **significant wins / losses** against every other solver of the group: per table cell (task × prior × split ×
  λ) and pair of solvers without failed rows there, a two-sided Wilcoxon signed-rank test of the paired
  per-(image, seed) MAP-loss differences; Holm-corrected over every (cell, pair) test of the group at
  :data:`bench.report.tables.ALPHA`; a rejected test whose mean difference exceeds the MAP-loss noise floor of the cell's
  table (:mod:`bench.report.noise_floor`) is a win for the solver with the lower mean;
- **median gap to the best**: the median over the group's table cells of (cell mean − best mean of the cell) /
  |best mean|, in %;
- **mean PSNR**, and **Δ PSNR vs doing nothing**: the mean paired PSNR difference against the solver with the
  :data:`bench.core.schema.TRIVIAL` role (absent where it did not run in the group).

The MAP loss and PSNR are the metrics of roles :data:`bench.core.metrics.LOSS` and :data:`bench.core.metrics.QUALITY`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.metrics import decimals, loss_metric, quality_metric, short_name, unit_of
from bench.core.schema import TABLE_CELL, TRIVIAL, WINNER_CELL
from bench.report.noise_floor import shows_win, task_floor
from bench.report.roles import role_solver
from bench.report.tables import ALPHA, holm, is_ok, paired, rank_cells, solver_order, task_base, task_order


def _fmt_values(vals) -> str:
    vals = sorted(vals, key=lambda v: (not isinstance(v, (int, float)), v))
    text = [f"{v:g}" if isinstance(v, float) else str(v) for v in vals]
    if len(text) > 4:
        text = [text[0], "…", text[-1]]
    return text[0] if len(text) == 1 else "{" + ", ".join(text) + "}"


def task_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(label, rows)] of the task groups (module docstring), in task order. The label names the task and the
    parameters, budgets and MLE lengths its cells cover (``cs[m ∈ {0.1628, 0.3255}] · budget ∈ {100, 300}``)."""
    sets = df.groupby("task")["solver"].agg(lambda s: tuple(sorted(set(s))))
    pcols = sorted(c for c in df.columns if c.startswith("p_task_"))
    out = []
    bases = list(dict.fromkeys(task_base(t) for t in task_order(df["task"].unique())))
    for base in bases:
        tasks = [t for t in task_order(df["task"].unique()) if task_base(t) == base]
        by_set: dict = {}
        for t in tasks:
            by_set.setdefault(sets[t], []).append(t)
        whole = df[df["task"].isin(tasks)]
        for solvers, members in sorted(by_set.items(), key=lambda kv: -len(kv[0])):
            g = df[df["task"].isin(members)]
            params = []
            for c in pcols:   # the parameters that vary within the group or tell it from the task's other groups
                vals = g[c].dropna().unique()
                if len(vals) and (len(vals) > 1 or whole[c].dropna().nunique() > 1):
                    params.append(f"{c[len('p_task_'):]}" + (f"={_fmt_values(vals)}" if len(vals) == 1
                                                              else f" ∈ {_fmt_values(vals)}"))
            label = base + (f"[{', '.join(params)}]" if params else "")
            for c in ("budget", "mle_steps"):
                if c in g.columns and g[c].nunique() > 1:
                    label += f" · {c} ∈ {_fmt_values(g[c].dropna().unique().tolist())}"
            out.append((label, g))
    return out


def pairwise_tests(g: pd.DataFrame, solvers: list, metric: str, floors: dict | None = None) -> pd.DataFrame:
    """One row per (table cell, solver a, solver b), a < b in ``solvers`` order: n pairs, mean difference a − b,
    two-sided Wilcoxon p and ``win`` (the lower-mean solver's name where Holm rejects and |mean difference| exceeds
    ``floors[task]``, the table's noise floor (:func:`bench.report.noise_floor.shows_win`), else "")."""
    from scipy.stats import wilcoxon

    ok = g[is_ok(g)]
    failed = set(map(tuple, g.loc[~is_ok(g), TABLE_CELL].drop_duplicates().itertuples(index=False)))
    recs = []
    for key, c in ok.groupby(WINNER_CELL, sort=False):
        wide = c.pivot_table(index=["image_id", "seed"], columns="solver", values=metric, aggfunc="mean")
        here = [s for s in solvers if s in wide.columns and key + (s,) not in failed]
        pairs = [(a, b) for i, a in enumerate(here) for b in here[i + 1:]]
        if not pairs:
            continue
        x = wide[here].to_numpy(float)
        keep = np.isfinite(x).all(axis=1)
        x = x[keep]
        idx = {s: i for i, s in enumerate(here)}
        d = np.stack([x[:, idx[a]] - x[:, idx[b]] for a, b in pairs], axis=1)
        p = np.ones(len(pairs))
        live = (d != 0).any(axis=0) & (len(d) >= 2)
        if live.any():
            with np.errstate(all="ignore"):
                p[live] = np.nan_to_num(wilcoxon(d[:, live], axis=0).pvalue, nan=1.0)
        for (a, b), pv, col in zip(pairs, p, d.T):
            recs.append({**dict(zip(WINNER_CELL, key)), "a": a, "b": b, "n": len(col),
                         "mean_diff": float(col.mean()) if len(col) else np.nan, "p": float(pv)})
    t = pd.DataFrame(recs, columns=WINNER_CELL + ["a", "b", "n", "mean_diff", "p"])
    rej = holm(dict(enumerate(t["p"]))) if len(t) else {}
    floors = floors or {}
    t["win"] = [("" if not shows_win(bool(rej.get(i)), abs(r.mean_diff), floors.get(r.task), (r.a, r.b)) else
                 (r.a if r.mean_diff < 0 else r.b)) for i, r in enumerate(t.itertuples())]
    return t


def wins_losses(tests: pd.DataFrame, solvers: list) -> pd.DataFrame:
    """Per solver: significant wins and losses over the (cell, pair) tests of :func:`pairwise_tests`."""
    out = pd.DataFrame(0, index=pd.Index(solvers, name="solver"), columns=["wins", "losses"])
    for r in tests[tests["win"] != ""].itertuples():
        loser = r.b if r.win == r.a else r.a
        out.loc[r.win, "wins"] += 1
        out.loc[loser, "losses"] += 1
    return out


def _median_gap(g: pd.DataFrame, solvers: list) -> pd.Series:
    loss = loss_metric()
    ok = g[is_ok(g)].copy()
    ok[loss] = pd.to_numeric(ok[loss], errors="coerce")
    means = ok.groupby(TABLE_CELL)[loss].mean().unstack("solver").reindex(columns=solvers)
    best = means.min(axis=1)
    rel = means.sub(best, axis=0).div(best.abs().where(best.abs() > 0), axis=0) * 100
    return rel.median()


def group_table(g: pd.DataFrame, meta: dict | None = None, run: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ranking table of one task group (module docstring), sorted by mean rank. ``run``: every row of the run
    (where the noise floors look up smaller budgets; default ``g``)."""
    loss, quality, nothing = loss_metric(), quality_metric(), role_solver(TRIVIAL)
    solvers = solver_order(g["solver"].unique(), meta)
    ranks = rank_cells(g, loss, solvers)
    run = g if run is None else run
    tests = pairwise_tests(g, solvers, loss, floors={t: task_floor(run, t, loss) for t in g["task"].unique()})
    wl = wins_losses(tests, solvers)
    ok = g[is_ok(g)]
    t = pd.DataFrame(index=pd.Index(solvers, name="solver"))
    t["mean_rank"] = ranks.mean()
    t["rank_sd"] = ranks.std(ddof=1) if len(ranks) > 1 else np.nan
    t["cells"] = len(ranks)
    t["wins"], t["losses"] = wl["wins"], wl["losses"]
    t["gap_pct"] = _median_gap(g, solvers)
    t[quality] = pd.to_numeric(ok[quality], errors="coerce").groupby(ok["solver"]).mean().reindex(solvers)
    if nothing in solvers:
        t[d_quality()] = [paired(g, s, nothing, quality)["mean"] if s != nothing else 0.0 for s in solvers]
    else:
        t[d_quality()] = np.nan
    t["tests"] = len(tests)
    t["failed"] = g[~is_ok(g)].groupby("solver").size().reindex(solvers).fillna(0).astype(int)
    return t.sort_values(["mean_rank", "gap_pct"])


def d_quality() -> str:
    """The column of a group table holding the paired quality difference against doing nothing."""
    return f"d_{quality_metric()}"


def quality_headers() -> tuple[str, str]:
    """The headline table's headers of the quality column and of its difference against doing nothing."""
    q = quality_metric()
    return f"{short_name(q)} {unit_of(q)}".strip(), f"Δ{short_name(q)} vs nothing"


def headline(df: pd.DataFrame, meta: dict | None = None) -> list[tuple[str, pd.DataFrame]]:
    """[(group label, :func:`group_table`)] for every task group of the run."""
    return [(label, group_table(g, meta, df)) for label, g in task_groups(df)]


def _num(x, fmt: str, dash: str = "—") -> str:
    return dash if x is None or not np.isfinite(x) else format(x, fmt)


def markdown_lines(groups: list[tuple[str, pd.DataFrame]], tables_link=None) -> list[str]:
    """The headline section: one compact table per task group."""
    from bench.report.tables import markdown

    loss, quality, nothing = loss_metric(), quality_metric(), role_solver(TRIVIAL)
    q, digits = short_name(quality), decimals(quality)
    out = ["## Who wins which task", "",
           "Per task group (the cells of a task in which the same solvers ran): solvers by **mean rank of "
           f"{short_name(loss)}** "
           "over the group's cells (task × prior × split × λ × seed; 1 = best; ± its sd over cells; a failed row "
           f"ranks last); **W / L**: significant wins / losses against every other solver (paired per-image "
           f"Wilcoxon per table cell, two-sided, Holm over all the group's cell × pair tests, α = {ALPHA}, and a "
           "mean difference above the table's noise floor); "
           f"**gap**: median over cells of (solver's mean − best mean) / |best mean|; **Δ{q} vs nothing**: mean "
           f"paired {q} difference against `{nothing}` (doing nothing)."
           + (f" Per-cell tables with verdicts: [{tables_link}]({tables_link})." if tables_link else ""), ""]
    for label, t in groups:
        tests = int(t["tests"].iloc[0]) if len(t) else 0
        out += [f"### {label}", ""]
        has_trivial = t[d_quality()].notna().any()
        head, delta = quality_headers()
        headers = ["#", "solver", "mean rank", "W / L", "gap", head] + ([delta] if has_trivial else [])
        rows = []
        for i, (s, r) in enumerate(t.iterrows(), start=1):
            name = f"**{s}**" if i == 1 else s
            if r["failed"]:
                name += f" ({int(r['failed'])} failed)"
            rank = _num(r["mean_rank"], ".2f") + (f" ± {r['rank_sd']:.2f}" if np.isfinite(r["rank_sd"]) else "")
            line = [str(i), name, rank, f"{int(r['wins'])} / {int(r['losses'])}", _num(r["gap_pct"], ".1f") + "%",
                    _num(r[quality], f".{digits}f")]
            if has_trivial:
                line.append("—" if s == nothing else _num(r[d_quality()], f"+.{digits}f"))
            rows.append(line)
        out += [markdown(headers, rows), "",
                f"{int(t['cells'].iloc[0])} ranking cells, {tests} paired tests.", ""]
    return out
