"""Leaderboard statistics and tables of result rows (pure functions): ordering, cell statistics, formatting,
the best of a row, significance verdicts (Wilcoxon signed-rank, Holm), rankings and paired comparisons.

Layout of the tables follows AIPO Tables 1–3 (MAP loss) and 5–6 (PSNR): one table per task spec, rows
prior × split × λ, columns solvers, cells "mean ± se". Conventions (stated in the leaderboard too):

- A *table cell* is (task, prior, split, λ, solver) (:data:`bench.core.schema.TABLE_CELL`). Its samples are the
  (image, seed) pairs with status ``ok``; mean ± se uses se = std(ddof=1)/√n. With n = 1 the "± se" part is omitted.
  Rows with another status do not enter the mean; the cell shows "(k failed)".
- Best is the lowest mean for metrics declared lower-is-better in :data:`bench.core.metrics.METRICS` (the MAP loss),
  the highest otherwise (PSNR, SSIM), compared at the displayed decimals; ties are all bold. A best wins alone only
  when significant and above the table's noise floor (:mod:`bench.report.noise_floor`).
- A *ranking cell* is (task, prior, split, λ, seed): solvers are ranked by their mean over images. A solver with a
  failed row (or no ok row) in a ranking cell gets the worst rank of that cell (failure ranks last). A table cell
  with failures is not eligible for bold (its mean covers fewer images).
- Paired comparison: per (task, prior, split, λ, seed, image) difference solver − baseline, both rows ok; the
  baseline is the solver that declares the :data:`bench.core.schema.BASELINE` role unless the caller names another.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.core.metrics import METRICS, decimals, higher_is_better, loss_metric, short_name
from bench.core.schema import BASELINE, PAIR_KEY, RANK_CELL, STATUS, TABLE_CELL, WINNER_CELL, Status
from bench.report.noise_floor import Floor, pair_floor, shows_win, task_floor
from bench.report.roles import role_solver

_SPLIT_ORDER = ["val", "id", "test", "ood"]


# ---------------------------------------------------------------------------------------------------- ordering
def task_base(spec: str) -> str:
    return str(spec).split("[", 1)[0]


def _order(values, preferred=()) -> list:
    vals = list(pd.unique(pd.Series(list(values))))
    pref = list(preferred)
    return sorted(vals, key=lambda v: (pref.index(v) if v in pref else len(pref), str(v)))


def task_order(tasks) -> list:
    """Tasks by their class's declared ``order``, then by name; tasks not registered go last."""
    from bench.tasks import TASKS

    def key(t):
        base = task_base(t)
        return (0, TASKS.get(base).order, str(t)) if base in TASKS else (1, 0, str(t))

    return sorted(pd.unique(pd.Series(list(tasks))), key=key)


def solver_order(solvers, meta: dict | None = None) -> list:
    meta = meta or {}
    grid = list(meta.get("solvers") or [])
    for block in (meta.get("grid") or {}).get("blocks") or []:
        grid += [s for s in block.get("solvers", []) if s not in grid]
    grid = [s if isinstance(s, str) else str(s) for s in grid]
    baseline = role_solver(BASELINE)
    first = ([baseline] if baseline is not None and baseline not in grid else []) + grid
    return _order(solvers, first)


def split_order(splits) -> list:
    return _order(splits, _SPLIT_ORDER)


# ---------------------------------------------------------------------------------------------------- statistics
def is_ok(df: pd.DataFrame) -> pd.Series:
    """Which rows ended ok."""
    return df[STATUS].astype(str) == Status.OK


def cell_stats(df: pd.DataFrame, metric: str, by=TABLE_CELL) -> pd.DataFrame:
    """mean, se, n (ok samples with a finite value), rows and failed per group ``by``."""
    by = list(by)
    ok = df[is_ok(df)]
    vals = ok[by + [metric]].copy()
    vals[metric] = pd.to_numeric(vals[metric], errors="coerce")
    vals = vals[np.isfinite(vals[metric].to_numpy(dtype=float))]
    g = vals.groupby(by, sort=False)[metric]
    st = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    st["se"] = st["std"] / np.sqrt(st["n"])
    total = df.groupby(by, sort=False).size().rename("rows")
    failed = df[~is_ok(df)].groupby(by, sort=False).size().rename("failed")
    out = total.to_frame().join(st, how="left").join(failed, how="left")
    out["failed"] = out["failed"].fillna(0).astype(int)
    out["n"] = out["n"].fillna(0).astype(int)
    return out


def fmt_num(metric: str, x: float) -> str:
    """``x`` at the metric's decimals; a missing or non-finite value as NaN."""
    return f"{x if x is not None and np.isfinite(x) else math.nan:.{decimals(metric)}f}"


def fmt_cell(metric: str, mean, se, n, failed) -> str:
    if n == 0 or mean is None or not np.isfinite(mean):
        text = "—"
    elif n == 1 or not np.isfinite(se):
        text = fmt_num(metric, mean)
    else:
        text = f"{fmt_num(metric, mean)} ± {fmt_num(metric, se)}"
    return text


def best_mask(means: pd.Series, metric: str) -> pd.Series:
    """True where the mean equals the best of ``means`` (after rounding to the displayed digits)."""
    vals = means.astype(float)
    if not np.isfinite(vals).any():
        return pd.Series(False, index=means.index)
    r = vals.round(decimals(metric))
    best = r.max() if higher_is_better(metric) else r.min()
    return r == best


ALPHA = 0.05   # family-wise level of the verdicts, Holm-corrected across the cells of one table


def holm(pvalues: dict, alpha: float = ALPHA) -> dict:
    """{key: rejected?} by Holm's step-down procedure over the p-values of one family."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    out, m, still = {}, len(order), True
    for i, k in enumerate(order):
        still = still and pvalues[k] <= alpha / (m - i)
        out[k] = still
    return out


def _paired_diffs(sub: pd.DataFrame, metric: str, a: str, b: str) -> np.ndarray:
    """Differences a − b over the (image, seed) pairs ok and finite for both."""
    ok = sub[is_ok(sub)]
    key = ["image_id", "seed"]
    x = ok[ok["solver"] == a].set_index(key)[metric].astype(float)
    y = ok[ok["solver"] == b].set_index(key)[metric].astype(float)
    d = (x - y).dropna()
    return d[np.isfinite(d)].to_numpy()


def _paired_p(d: np.ndarray, metric: str) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``a`` is better than ``b`` (lower, or higher where the metric is
    higher-is-better) from the paired differences a − b (1 if < 2 pairs or all differences are 0)."""
    from scipy.stats import wilcoxon

    if len(d) < 2 or not (d != 0).any():
        return 1.0
    better = "greater" if higher_is_better(metric) else "less"
    return float(wilcoxon(d, alternative=better).pvalue)


def cell_verdicts(sub: pd.DataFrame, metric: str, solvers: list, floor: Floor | None = None) -> dict:
    """Per (prior, split, λ) of one task's rows: {"best", "runner_up", "p", "gain", "significant", "win"}.
    ``significant``: after Holm's correction across the table's cells; ``gain``: the best's paired mean difference
    to the runner-up in its favour; ``win``: :func:`bench.report.noise_floor.shows_win` (significant and ``gain`` above
    the floor of the two solvers compared, ``floor``: that value). Solvers with failed rows in a cell are not eligible (their mean covers
    fewer images)."""
    row = WINNER_CELL[1:]   # a table row within one task
    st = cell_stats(sub, metric, row + ["solver"])
    mean = st["mean"].where(st["failed"] == 0).dropna()
    hib = higher_is_better(metric)
    out, pv = {}, {}
    for key, g in mean.groupby(level=row, sort=False):
        g = g.droplevel(row)
        g = g[[s for s in g.index if s in solvers]].sort_values(ascending=not hib)
        if len(g) < 2:
            continue
        best, second = g.index[0], g.index[1]
        cell = sub[(sub["prior"] == key[0]) & (sub["split"] == key[1]) & (sub["lam"] == key[2])]
        d = _paired_diffs(cell, metric, best, second)
        pv[key] = _paired_p(d, metric)
        gain = float(d.mean()) * (1 if hib else -1) if len(d) else math.nan
        out[key] = {"best": best, "runner_up": second, "p": pv[key], "gain": gain}
    for key, rejected in holm(pv).items():
        out[key]["significant"] = bool(rejected)
        pair = (out[key]["best"], out[key]["runner_up"])
        out[key]["win"] = shows_win(rejected, out[key]["gain"], floor, pair)
        out[key]["floor"] = pair_floor(floor, pair)
    return out


def task_verdicts(df: pd.DataFrame, task: str, metric: str, solvers: list) -> tuple[dict, Floor]:
    """:func:`cell_verdicts` of one table (``df["task"] == task``) under its noise floor, and the floor."""
    floor = task_floor(df, task, metric)
    return cell_verdicts(df[df["task"] == task], metric, solvers, floor), floor


def verdict_text(v: dict | None, floor: Floor | None = None) -> str:
    """The verdict column: the winner, a tie, or a significant best held back by the noise floor."""
    if v is None:
        return ""
    if v["win"]:
        return f"{v['best']} (p = {v['p']:.2g})"
    if v.get("significant") and v.get("floor") is not None and floor is not None:
        gain, value = fmt_num(floor.metric, v["gain"]), fmt_num(floor.metric, v["floor"])
        return f"tie (p = {v['p']:.2g}; Δ {gain} ≤ floor {value})"
    return f"tie (p = {v['p']:.2g})"


def metric_table(df: pd.DataFrame, task: str, metric: str, solvers: list) -> tuple[list[str], list[list[str]]]:
    """Headers and string rows of one AIPO-style table (task fixed, rows prior × split × λ, columns solvers).

    Bold: the best solver when its paired difference against the runner-up is significant (one-sided Wilcoxon
    signed-rank in the best's favour, Holm-corrected over the table's cells at ``ALPHA``) and its paired mean
    difference exceeds the table's noise floor (:mod:`bench.report.noise_floor`; ``df``: every row of the run, where the
    floor looks up smaller budgets), else every solver of the tie (the best and the runner-up, and any whose
    displayed mean equals the best's). The last column states the verdict."""
    sub = df[df["task"] == task]
    st = cell_stats(sub, metric)
    verdicts, floor = task_verdicts(df, task, metric, solvers)
    headers = ["prior", "split", "λ"] + list(solvers) + ["verdict"]
    rows = []
    for prior in sorted(sub["prior"].unique()):
        for split in split_order(sub.loc[sub["prior"] == prior, "split"]):
            lams = sorted(sub.loc[(sub["prior"] == prior) & (sub["split"] == split), "lam"].unique())
            for lam in lams:
                means = {}
                cells = {}
                for s in solvers:
                    key = (task, prior, split, lam, s)
                    if key in st.index:
                        r = st.loc[key]
                        # a cell with failures averages fewer images: not eligible for bold
                        means[s] = r["mean"] if int(r["failed"]) == 0 else np.nan
                        cells[s] = r
                bold = best_mask(pd.Series(means, dtype=float), metric) if means else pd.Series(dtype=bool)
                v = verdicts.get((prior, split, lam))
                if v is not None:
                    bold = bold & False if v["win"] else bold
                    bold[v["best"]] = True
                    if not v["win"]:
                        bold[v["runner_up"]] = True
                line = [str(prior), str(split), f"{lam:g}"]
                for s in solvers:
                    if s not in cells:
                        line.append("")
                        continue
                    r = cells[s]
                    text = fmt_cell(metric, r["mean"], r["se"], int(r["n"]), int(r["failed"]))
                    if bool(bold.get(s, False)) and text != "—":
                        text = f"**{text}**"
                    if int(r["failed"]):
                        text += f" ({int(r['failed'])} failed)"
                    line.append(text)
                line.append(verdict_text(v, floor))
                rows.append(line)
    return headers, rows


def significant_wins(df: pd.DataFrame, metric: str, solvers: list) -> tuple[pd.Series, int]:
    """Per solver, the table cells it wins (see :func:`metric_table`: significant and above the noise floor); and
    the number of cells."""
    wins, n = pd.Series(0, index=pd.Index(solvers)), 0
    for task in task_order(df["task"].unique()):
        for v in task_verdicts(df, task, metric, solvers)[0].values():
            n += 1
            if v.get("win"):
                wins[v["best"]] += 1
    return wins, n


def markdown(headers, rows) -> str:
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True,
                    colalign=("left",) * len(headers))


# ---------------------------------------------------------------------------------------------------- ranking
def rank_cells(df: pd.DataFrame, metric: str, solvers: list) -> pd.DataFrame:
    """Rank of each solver in each ranking cell (task, prior, split, λ, seed) by its mean over images.

    Index: ranking cell; columns: solvers. Rank 1 = best; ties share the lower ("min") rank; a solver with no
    finite mean in a cell, or with any failed row there, gets the number of solvers (last place)."""
    cs = cell_stats(df, metric, RANK_CELL + ["solver"])
    st = cs["mean"].where(cs["failed"] == 0).unstack("solver")
    st = st.reindex(columns=solvers)
    asc = not higher_is_better(metric)
    ranks = st.rank(axis=1, method="min", ascending=asc)
    return ranks.fillna(float(len(solvers)))


def ranking(df: pd.DataFrame, solvers: list) -> pd.DataFrame:
    """Per solver: mean rank and wins by each headline metric (:meth:`bench.core.metrics.MetricTable.headline`) over all
    ranking cells."""
    out = pd.DataFrame(index=pd.Index(solvers, name="solver"))
    for metric in METRICS.headline():
        r = rank_cells(df, metric, solvers)
        out[f"mean rank ({short_name(metric)})"] = r.mean()
        out[f"wins ({short_name(metric)})"] = (r == 1).sum().astype(int)
    out.attrs["cells"] = len(rank_cells(df, loss_metric(), solvers))
    return out


def paired(df: pd.DataFrame, solver: str, baseline: str, metric: str) -> dict:
    """Per-sample differences solver − baseline on the same (task, prior, split, λ, seed, image), both ok.

    ``better`` counts samples where the solver beats the baseline (lower where the metric is lower-is-better)."""
    ok = df[is_ok(df)]
    a = ok[ok["solver"] == solver].set_index(PAIR_KEY)[metric].astype(float)
    b = ok[ok["solver"] == baseline].set_index(PAIR_KEY)[metric].astype(float)
    a, b = a[~a.index.duplicated()], b[~b.index.duplicated()]
    d = (a - b).dropna()
    d = d[np.isfinite(d)]
    n = len(d)
    hib = higher_is_better(metric)
    better = int(((d > 0) if hib else (d < 0)).sum())
    worse = int(((d < 0) if hib else (d > 0)).sum())
    return {"n": n, "mean": float(d.mean()) if n else math.nan,
            "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
            "median": float(d.median()) if n else math.nan, "better": better, "worse": worse}


def paired_table(df: pd.DataFrame, solvers: list, baseline: str):
    """Headers and rows of the paired comparison against ``baseline``: per solver and headline metric, the mean ± se
    and median of the differences and how many samples are better / worse."""
    metrics = METRICS.headline()
    headers = ["solver", "n"]
    for m in metrics:
        unit = f" {METRICS[m].unit}" if METRICS[m].unit else ""
        better = "higher / lower" if higher_is_better(m) else "lower / higher"
        name = short_name(m)
        headers += [f"Δ {name}{unit} (mean ± se)", f"median Δ {name}", f"{better} {name}"]
    rows = []
    for s in solvers:
        if s == baseline:
            continue
        stats = [paired(df, s, baseline, m) for m in metrics]
        line = [s, str(stats[0]["n"])]
        for m, p in zip(metrics, stats):
            line += [fmt_cell(m, p["mean"], p["se"], p["n"], 0), fmt_num(m, p["median"]),
                     f"{p['better']} / {p['worse']}"]
        rows.append(line)
    return headers, rows
