"""Tables, ranking, paired comparisons and the generated summary of a run directory (pure functions).

Layout of the tables follows AIPO Tables 1–3 (MAP loss) and 5–6 (PSNR): one table per task spec, rows
prior × split × λ, columns solvers, cells "mean ± se". Conventions (stated in the leaderboard too):

- A *table cell* is (task, prior, split, λ, solver). Its samples are the (image, seed) pairs with
  ``status == "ok"``; mean ± se uses se = std(ddof=1)/√n. With n = 1 the "± se" part is omitted.
  Rows with another status do not enter the mean; the cell shows "(k failed)".
- Best is the lowest mean for metrics with ``HIGHER_IS_BETTER[metric] == False`` (MAP loss), the highest
  otherwise (PSNR, SSIM); ties are all bold.
- A *ranking cell* is (task, prior, split, λ, seed): solvers are ranked by their mean over images. A solver with a
  failed row (or no ok row) in a ranking cell gets the worst rank of that cell (failure ranks last). A table cell
  with failures is not eligible for bold (its mean covers fewer images).
- Paired comparison: per (task, prior, split, λ, seed, image) difference solver − baseline, both rows ok.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.errors import UserError
from bench.metrics import HIGHER_IS_BETTER
from bench.store import read_run, read_traces

TABLE_CELL = ["task", "prior", "split", "lam", "solver"]
RANK_CELL = ["task", "prior", "split", "lam", "seed"]
PAIR_KEY = ["task", "prior", "split", "lam", "seed", "image_id"]
ROW_KEY = ["task", "prior", "split", "lam", "solver", "seed", "image_id"]
DECIMALS = {"map_loss": 2, "psnr": 2, "ssim": 3, "data_fit": 3, "log_prior": 2}
BASELINE = "aipo"
TRIVIAL = "observed"   # the do-nothing reconstruction (clip(y), clip(A⁺y), mean-filled holes)
_SPLIT_ORDER = ["val", "id", "test", "ood"]


# ---------------------------------------------------------------------------------------------------- loading
def load_run(run_dir) -> tuple[pd.DataFrame, dict]:
    """Rows of a run directory and its run.json (``{}`` when absent). Missing/empty directory -> UserError."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"run directory {str(d)!r} does not exist")
    rows = read_run(d, skip_unreadable=True)   # unreadable files are named by bench.integrity
    if rows.empty:
        raise UserError(f"run directory {str(d)!r} has no result rows (expected {d / 'rows'}/*.parquet)")
    missing = [c for c in ROW_KEY + ["map_loss", "psnr", "ssim", "status"] if c not in rows.columns]
    if missing:
        raise UserError(f"result rows of {str(d)!r} lack columns {missing}")
    rows = disambiguate_tasks(rows)
    meta = {}
    if (d / "run.json").is_file():
        try:
            meta = json.loads((d / "run.json").read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{d / 'run.json'} is not valid JSON: {e}") from None
    return rows, meta


def _fmt_param(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _append_params(df: pd.DataFrame, label: str, cols: list, prefix: str) -> pd.DataFrame:
    """Where one ``label`` value covers several combinations of ``cols``, append the varying ones to it."""
    if label not in df.columns:
        return df
    for value, g in df.groupby(label, sort=False):
        varying = [c for c in cols if c in g.columns and g[c].astype(str).nunique() > 1]
        if not varying:
            continue
        extra = g[varying].apply(lambda r: ",".join(f"{c[len(prefix):]}={_fmt_param(r[c])}" for c in varying), axis=1)
        t = str(value)
        df.loc[g.index, label] = (t[:-1] + "," + extra + "]") if t.endswith("]") else (t + "[" + extra + "]")
    return df


def disambiguate_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """Make every table cell one cell of the grid: if one ``task`` value covers several task parameter
    combinations (``p_task_*``), budgets or MLE lengths, they are appended to it (``cs[m=0.1628]``,
    ``denoise[budget=80]``); if one ``solver`` value covers several parameter sets (``p_solver_*``, e.g. tuned
    and untuned), they are appended to the solver. So rows of different cells are never averaged together."""
    df = df.copy()
    df = _append_params(df, "task", [c for c in df.columns if c.startswith("p_task_")], "p_task_")
    df["task_spec"] = df["task"]   # the task alone: what defines an optimisation instance (bench.profiles)
    df = _append_params(df, "task", ["budget", "mle_steps"], "")
    return _append_params(df, "solver", [c for c in df.columns if c.startswith("p_solver_")], "p_solver_")


def load_traces(run_dir) -> pd.DataFrame:
    try:
        return read_traces(run_dir)
    except Exception:
        return pd.DataFrame()


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
    first = ([BASELINE] if BASELINE not in grid else []) + grid
    return _order(solvers, first)


def split_order(splits) -> list:
    return _order(splits, _SPLIT_ORDER)


# ---------------------------------------------------------------------------------------------------- statistics
def is_ok(df: pd.DataFrame) -> pd.Series:
    return df["status"].astype(str) == "ok"


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
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{DECIMALS.get(metric, 3)}f}"


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
    r = vals.round(DECIMALS.get(metric, 3))
    best = r.max() if HIGHER_IS_BETTER.get(metric, False) else r.min()
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


def _paired_p(sub: pd.DataFrame, metric: str, a: str, b: str) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``a`` is better than ``b`` (lower, or higher where the metric is
    higher-is-better) over the (image, seed) pairs ok for both (1 if < 2 pairs or all differences are 0)."""
    from scipy.stats import wilcoxon

    ok = sub[is_ok(sub)]
    key = ["image_id", "seed"]
    x = ok[ok["solver"] == a].set_index(key)[metric].astype(float)
    y = ok[ok["solver"] == b].set_index(key)[metric].astype(float)
    d = (x - y).dropna()
    d = d[np.isfinite(d)]
    if len(d) < 2 or not (d != 0).any():
        return 1.0
    better = "greater" if HIGHER_IS_BETTER.get(metric, False) else "less"
    return float(wilcoxon(d.to_numpy(), alternative=better).pvalue)


def cell_verdicts(sub: pd.DataFrame, metric: str, solvers: list) -> dict:
    """Per (prior, split, λ) of one task's rows: {"best", "runner_up", "p", "win"}; ``win`` after Holm's correction
    across the table's cells. Solvers with failed rows in a cell are not eligible (their mean covers fewer images)."""
    st = cell_stats(sub, metric, ["prior", "split", "lam", "solver"])
    mean = st["mean"].where(st["failed"] == 0).dropna()
    hib = HIGHER_IS_BETTER.get(metric, False)
    out, pv = {}, {}
    for key, g in mean.groupby(level=["prior", "split", "lam"], sort=False):
        g = g.droplevel(["prior", "split", "lam"])
        g = g[[s for s in g.index if s in solvers]].sort_values(ascending=not hib)
        if len(g) < 2:
            continue
        best, second = g.index[0], g.index[1]
        cell = sub[(sub["prior"] == key[0]) & (sub["split"] == key[1]) & (sub["lam"] == key[2])]
        pv[key] = _paired_p(cell, metric, best, second)
        out[key] = {"best": best, "runner_up": second, "p": pv[key]}
    for key, rejected in holm(pv).items():
        out[key]["win"] = rejected
    return out


def metric_table(df: pd.DataFrame, task: str, metric: str, solvers: list) -> tuple[list[str], list[list[str]]]:
    """Headers and string rows of one AIPO-style table (task fixed, rows prior × split × λ, columns solvers).

    Bold: the best solver when its paired difference against the runner-up is significant (one-sided Wilcoxon
    signed-rank in the best's favour, Holm-corrected over the table's cells at ``ALPHA``), else every solver of the tie (the best and the runner-up,
    and any whose displayed mean equals the best's). The last column states the verdict."""
    sub = df[df["task"] == task]
    st = cell_stats(sub, metric)
    verdicts = cell_verdicts(sub, metric, solvers)
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
                line.append("" if v is None else (f"{v['best']} (p = {v['p']:.2g})" if v["win"]
                                                  else f"tie (p = {v['p']:.2g})"))
                rows.append(line)
    return headers, rows


def significant_wins(df: pd.DataFrame, metric: str, solvers: list) -> tuple[pd.Series, int]:
    """Per solver, the table cells it wins significantly (see :func:`metric_table`); and the number of cells."""
    wins, n = pd.Series(0, index=pd.Index(solvers)), 0
    for task in task_order(df["task"].unique()):
        for v in cell_verdicts(df[df["task"] == task], metric, solvers).values():
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
    asc = not HIGHER_IS_BETTER.get(metric, False)
    ranks = st.rank(axis=1, method="min", ascending=asc)
    return ranks.fillna(float(len(solvers)))


def ranking(df: pd.DataFrame, solvers: list) -> pd.DataFrame:
    """Per solver: mean rank and wins by MAP loss and by PSNR over all ranking cells."""
    out = pd.DataFrame(index=pd.Index(solvers, name="solver"))
    for metric in ("map_loss", "psnr"):
        r = rank_cells(df, metric, solvers)
        short = "MAP loss" if metric == "map_loss" else "PSNR"
        out[f"mean rank ({short})"] = r.mean()
        out[f"wins ({short})"] = (r == 1).sum().astype(int)
    out.attrs["cells"] = len(rank_cells(df, "map_loss", solvers))
    return out


def paired(df: pd.DataFrame, solver: str, baseline: str = BASELINE, metric: str = "map_loss") -> dict:
    """Per-sample differences solver − baseline on the same (task, prior, split, λ, seed, image), both ok.

    ``better`` counts samples where the solver beats the baseline (lower MAP loss / higher PSNR)."""
    ok = df[is_ok(df)]
    a = ok[ok["solver"] == solver].set_index(PAIR_KEY)[metric].astype(float)
    b = ok[ok["solver"] == baseline].set_index(PAIR_KEY)[metric].astype(float)
    a, b = a[~a.index.duplicated()], b[~b.index.duplicated()]
    d = (a - b).dropna()
    d = d[np.isfinite(d)]
    n = len(d)
    hib = HIGHER_IS_BETTER.get(metric, False)
    better = int(((d > 0) if hib else (d < 0)).sum())
    worse = int(((d < 0) if hib else (d > 0)).sum())
    return {"n": n, "mean": float(d.mean()) if n else math.nan,
            "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
            "median": float(d.median()) if n else math.nan, "better": better, "worse": worse}


def paired_table(df: pd.DataFrame, solvers: list, baseline: str = BASELINE):
    headers = ["solver", "n", "Δ MAP loss (mean ± se)", "median Δ MAP loss", "lower / higher MAP loss",
               "Δ PSNR dB (mean ± se)", "higher / lower PSNR"]
    rows = []
    for s in solvers:
        if s == baseline:
            continue
        m, p = paired(df, s, baseline, "map_loss"), paired(df, s, baseline, "psnr")
        rows.append([s, str(m["n"]), fmt_cell("map_loss", m["mean"], m["se"], m["n"], 0),
                     fmt_num("map_loss", m["median"]), f"{m['better']} / {m['worse']}",
                     fmt_cell("psnr", p["mean"], p["se"], p["n"], 0), f"{p['better']} / {p['worse']}"])
    return headers, rows


# ---------------------------------------------------------------------------------------------------- header
def _first(df: pd.DataFrame, col: str):
    if col in df.columns:
        v = df[col].dropna()
        if len(v):
            return v.iloc[0]
    return None


def _fmt_seconds(s) -> str:
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s:.0f} s ({s / 60:.1f} min)"


def run_info(df: pd.DataFrame, meta: dict) -> dict:
    """Header facts from run.json (runner format: grid_name, grid{budget, mle_steps, blocks}, versions, tuned,
    runs[{device, wall_s}]; flat keys name/budget/... are accepted too), falling back to the rows' columns."""
    grid = meta.get("grid") or {}
    runs = meta.get("runs") or []

    def pick(*vals):
        for v in vals:
            if v is not None and not (isinstance(v, float) and math.isnan(v)) and v != "":
                return v
        return None

    walls = [r.get("wall_s") for r in runs if isinstance(r, dict) and r.get("wall_s") is not None]
    return {
        "name": pick(meta.get("name"), meta.get("grid_name"), grid.get("name"), _first(df, "grid_name"), "run"),
        "budget": pick(meta.get("budget"), grid.get("budget"), _first(df, "budget"), "?"),
        "mle_steps": pick(meta.get("mle_steps"), grid.get("mle_steps"), _first(df, "mle_steps"), "?"),
        "tuned": meta["tuned"] if "tuned" in meta else _first(df, "tuned"),
        "run_wall_s": pick(meta.get("wall_time_s"), sum(walls) if walls else None),
        "n_invocations": len(walls),
        "git_commit": pick(meta.get("git_commit"), _first(df, "git_commit")),
        "git_dirty": meta.get("git_dirty"),
        "device": pick(meta.get("device"), runs[-1].get("device") if runs and isinstance(runs[-1], dict) else None,
                       _first(df, "device")),
        "torch_version": pick(meta.get("torch_version"), (meta.get("versions") or {}).get("torch"),
                              _first(df, "torch_version")),
    }


def header_lines(df: pd.DataFrame, meta: dict) -> list[str]:
    info = run_info(df, meta)
    tuned = info["tuned"]
    if tuned in (None, "", False, "none", "None") or (isinstance(tuned, float) and math.isnan(tuned)):
        tuned_text = ("no — protocol: equal optimiser settings (declared solver defaults: every x-space solver "
                      "takes Adam steps of α = 0.05, AIPO Table 4)")
    elif isinstance(tuned, dict):
        tuned_text = (f"yes — protocol: each solver tuned on validation images, with `{tuned.get('file', '?')}` "
                      f"(hash {tuned.get('hash', '?')}): "
                      + json.dumps(tuned.get("params", {}), sort_keys=True))
    elif tuned is True:
        tuned_text = "yes (tuned parameters in the rows' p_solver_* columns)"
    else:
        tuned_text = f"yes, with {tuned}"
    status = df["status"].astype(str).value_counts()
    fails = ", ".join(f"{k}: {v}" for k, v in status.items() if k != "ok") or "none"
    wt = pd.to_numeric(df["wall_time_s"], errors="coerce").sum() if "wall_time_s" in df else math.nan
    wall = f"- wall time: {_fmt_seconds(wt)} summed over rows (wall_time_s)"
    if info["run_wall_s"] is not None:
        k = info["n_invocations"]
        wall += f"; run wall time {_fmt_seconds(info['run_wall_s'])} (run.json" + (
            f", {k} invocations)" if k > 1 else ")")
    commit = info["git_commit"] or "?"
    commit = str(commit)[:12] + (" (dirty)" if info["git_dirty"] else "")
    budget = info["budget"]
    return [
        f"- grid: `{info['name']}`; budget: {json.dumps(budget) if isinstance(budget, dict) else budget} prior "
        f"passes per image; MLE stage: {info['mle_steps']} steps",
        f"- tuned: {tuned_text}",
        f"- rows: {len(df)} ({int(status.get('ok', 0))} ok); failures by status: {fails}",
        wall,
        f"- provenance: git commit `{commit}`, device `{info['device'] or '?'}`, torch `{info['torch_version'] or '?'}`",
        *lam_reached_lines(df),
    ]


def lam_reached_lines(df: pd.DataFrame) -> list[str]:
    """How often AIPO Alg. 2's own λ schedule reached Λ before the budget rule's final jump (``info_lam_reached``)."""
    if "info_lam_reached" not in df.columns:
        return []
    out = []
    for solver, g in df[is_ok(df)].groupby("solver", sort=True):
        reached = pd.to_numeric(g["info_lam_reached"], errors="coerce")
        keep = reached.notna()
        if not keep.any():
            continue
        hit = (reached[keep] >= g.loc[keep, "lam"].astype(float) * (1 - 1e-6))
        frac = (reached[keep] / g.loc[keep, "lam"].astype(float)).median()
        out.append(f"- `{solver}` reached Λ on its own (before the budget's final jump) in {int(hit.sum())} of "
                   f"{int(keep.sum())} ok rows ({hit.mean():.0%}); median λ reached / Λ = {frac:.2f}")
    return out


# ---------------------------------------------------------------------------------------------------- summary
def summary_text(df: pd.DataFrame, solvers: list, baseline: str = BASELINE) -> str:
    """A paragraph computed from the ranking cells and paired differences (no hand-written claims)."""
    parts = []
    n_cells = len(rank_cells(df, "map_loss", solvers))
    if n_cells == 0:
        return "No ok rows: nothing to summarise."
    for metric, word in (("map_loss", "the lowest mean MAP loss"), ("psnr", "the highest mean PSNR"),
                         ("ssim", "the highest mean SSIM")):
        wins = (rank_cells(df, metric, solvers) == 1).sum().sort_values(ascending=False)
        top = wins.index[0]
        others = ", ".join(f"{s} {int(w)}" for s, w in wins.items() if s != top and w > 0)
        parts.append(f"{top} has {word} in {int(wins.iloc[0])} of {n_cells} cells"
                     + (f" (others: {others})" if others else ""))
    text = "Over " + str(n_cells) + " cells (task × prior × split × λ × seed), " + "; ".join(parts) + "."
    for metric, word in (("map_loss", "MAP loss"), ("psnr", "PSNR")):
        wins, n_tab = significant_wins(df, metric, solvers)
        wins = wins[wins > 0].sort_values(ascending=False)
        text += (f" Significant {word} wins (Wilcoxon signed-rank against the runner-up, Holm-corrected per table, "
                 f"α = {ALPHA}) in {int(wins.sum())} of {n_tab} table cells"
                 + (": " + ", ".join(f"{s} {int(w)}" for s, w in wins.items()) if len(wins) else "")
                 + "; the rest are ties.")
    mr = rank_cells(df, "map_loss", solvers).mean().sort_values()
    text += (f" By mean MAP-loss rank the order is {', '.join(f'{s} ({r:.2f})' for s, r in mr.items())}.")
    if baseline in solvers:
        bits = []
        for s in solvers:
            if s == baseline:
                continue
            m = paired(df, s, baseline, "map_loss")
            p = paired(df, s, baseline, "psnr")
            if m["n"]:
                bits.append(f"{s}: median MAP-loss difference {m['median']:+.2f} (lower on {m['better']} of "
                            f"{m['n']} images), mean PSNR difference {p['mean']:+.2f} dB")
        if bits:
            text += (f" Paired against {baseline} (solver − {baseline}, same image, λ and seed): "
                     + "; ".join(bits) + ".")
    else:
        text += f" No `{baseline}` rows, so no paired comparison."
    return text


def uses_prior(df: pd.DataFrame, solver: str) -> bool:
    """Whether ``solver`` spent prior passes in this run (prior-free solvers report nfe_used = 0 on every row)."""
    nfe = pd.to_numeric(df.loc[df["solver"] == solver, "nfe_used"], errors="coerce")
    return bool((nfe > 0).any())


def trivial_text(df: pd.DataFrame, solvers: list, trivial: str = TRIVIAL) -> str:
    """Per task: which prior-based solvers beat doing nothing (``trivial``) on mean paired PSNR and MAP loss."""
    if trivial not in solvers:
        return f"No `{trivial}` rows: no comparison against doing nothing."
    prior_based = [s for s in solvers if s != trivial and uses_prior(df, s)]
    bits = []
    for task in task_order(df["task"].unique()):
        sub = df[df["task"] == task]
        psnr_win = [s for s in prior_based if paired(sub, s, trivial, "psnr")["mean"] > 0]
        loss_win = [s for s in prior_based if paired(sub, s, trivial, "map_loss")["mean"] < 0]
        base = cell_stats(sub[sub["solver"] == trivial], "psnr", ["solver"])["mean"]
        base_text = fmt_num("psnr", float(base.iloc[0])) if len(base) else "nan"
        bits.append(f"{task}: {len(psnr_win)} of {len(prior_based)} prior-based solvers have a higher mean PSNR "
                    f"than `{trivial}` ({base_text} dB)" + (f" ({', '.join(psnr_win)})" if psnr_win else "")
                    + f", {len(loss_win)} a lower mean MAP loss")
    return ("Against doing nothing (`" + trivial + "`: clip(y) for denoising, clip(A⁺y) for compressed sensing, "
            "observed pixels with mean-filled holes for inpainting; paired per image): " + "; ".join(bits) + ".")


# ---------------------------------------------------------------------------------------------------- document
def build_markdown(df: pd.DataFrame, meta: dict, figures: dict | None = None, problems=(), anytime=()) -> str:
    """The whole LEADERBOARD.md text. ``figures``: {"anytime": [(caption, relpath)], "recon": [...],
    "cs_sweep": [...]}; ``problems``: what :func:`bench.integrity.run_problems` found (shown first); ``anytime``:
    the lines of :func:`anytime_section`."""
    solvers = solver_order(df["solver"].unique(), meta)
    tasks = task_order(df["task"].unique())
    name = run_info(df, meta)["name"]
    notes = ("Generated by `python -m bench report`; every number below is computed from the Parquet rows. "
             "Cells: mean ± se over the (image, seed) samples with status `ok` (each image under each seed is one "
             "sample; se = std(ddof=1)/√n; no ± when n = 1); rows with another status are left out and counted as "
             "\"(k failed)\". **Bold** and the verdict column: the best of a row (lowest MAP loss, highest "
             "PSNR/SSIM) wins only when its paired per-image difference against the runner-up is significant "
             f"(Wilcoxon signed-rank, Holm-corrected over the table's rows, α = {ALPHA}); otherwise the row is a tie "
             "and both are bold. Solvers with failed rows in a cell are not eligible.")
    prior_free = [s for s in solvers if not uses_prior(df, s)]
    if prior_free:
        notes += (f" {', '.join(prior_free)} use no prior: their MAP loss is scored by the harness with the row's "
                  "prior, like every other solver's.")
    warn = []
    if problems:
        warn = ["**Warning: this run directory is incomplete or inconsistent; the tables below cover only what it "
                "holds:**", "", *[f"- {p}" for p in problems], ""]
    out = [f"# Leaderboard: `{name}`", "", *warn, *header_lines(df, meta), "", notes, "", "## Summary", "",
           summary_text(df, solvers), "", trivial_text(df, solvers), ""]
    for metric, title in (("map_loss", "MAP loss (lower is better; AIPO Tables 1–3 layout)"),
                          ("psnr", "PSNR in dB (higher is better; AIPO Tables 5–6 layout)"),
                          ("ssim", "SSIM (higher is better)")):
        out += [f"## {title}", ""]
        for task in tasks:
            out += [f"### {task}", ""]
            h, r = metric_table(df, task, metric, solvers)
            out += [markdown(h, r), ""]
    out += list(anytime)
    rk = ranking(df, solvers)
    out += ["## Ranking", "",
            f"Over {rk.attrs['cells']} cells (task × prior × split × λ × seed); a solver is ranked by its mean "
            "over images; ties share the best rank; a solver with a failed row (or no ok row) in a cell ranks "
            "last.", ""]
    rows = [[s] + [f"{v:.2f}" if "rank" in c else str(int(v)) for c, v in rk.loc[s].items()] for s in rk.index]
    out += [markdown(["solver"] + list(rk.columns), rows), ""]
    out += [f"### Paired comparison against `{BASELINE}`", ""]
    if BASELINE in solvers:
        out += [f"Differences solver − {BASELINE} per (task, prior, split, λ, seed, image), both rows ok; "
                "mean ± se over those pairs; counts of pairs where the solver is better / worse.", ""]
        out += [markdown(*paired_table(df, solvers)), ""]
    else:
        out += [f"`{BASELINE}` is not in this run: paired comparison skipped.", ""]
    if figures:
        out += ["## Figures", ""]
        for key, title in (("anytime", "Anytime curves"), ("profiles", "Data profiles and target ECDFs"),
                           ("budget", "Rankings against the budget"), ("recon", "Reconstructions"),
                           ("cs_sweep", "PSNR vs m (compressed sensing sweep)")):
            items = figures.get(key) or []
            if not items:
                continue
            out += [f"### {title}", ""]
            for caption, rel in items:
                out += [f"![{title}: {Path(rel).stem}]({rel})", "", caption, ""]
    return "\n".join(out).rstrip() + "\n"


REFERENCE_TABLE = "reference.parquet"   # written by `bench reference` into a run directory (best-known optima)


def anytime_section(df: pd.DataFrame, prof: dict, fref_source: str) -> list[str]:
    """Markdown of the anytime-score table (area under each solver's target ECDF) and how to read it."""
    from bench.profiles import TAUS, anytime_scores

    if not prof:
        return []
    sc = anytime_scores(prof)
    order = sc.sort_values("mean", ascending=False).index
    rows = [[a] + [f"{sc.loc[a, c]:.3f}" if np.isfinite(sc.loc[a, c]) else "—" for c in sc.columns] for a in order]
    left = sorted({s for d in prof.values() for s in d["left_out"]})
    out = ["## Anytime performance", "",
           f"Best-known optimum f_ref per instance (task, prior, split, image, λ, seed): {fref_source}. Every row's "
           "gap = map_loss − f_ref is in `profiles/gaps.parquet` beside this file, f_ref in `profiles/f_ref.parquet`. "
           f"Data profiles at τ = {', '.join(f'{t:g}' for t in TAUS)} and target ECDFs are in the figure below; "
           "the anytime score is the area under a solver's target ECDF over log10(passes) from 1 to the largest "
           "budget, normalised to [0, 1] (higher is better: targets reached earlier and more often)."
           + (f" Prior-free solvers ({', '.join(left)}) spend no passes and are left out." if left else ""), "",
           markdown(["solver"] + list(sc.columns), rows), ""]
    return out


def write_report(run_dir, out: str | Path | None = None, make_figures: bool = True, also=()) -> Path:
    """Write LEADERBOARD.md (default ``run_dir/LEADERBOARD.md``), its PNG figures in ``<out dir>/figures`` and the
    best-known optima and gaps in ``<out dir>/profiles``. ``also``: more run directories whose rows and traces
    count towards f_ref (the same instances run elsewhere)."""
    from bench.integrity import run_problems
    from bench.profiles import f_ref, profiles, start_values, with_gaps
    from bench.store import write_parquet

    run_dir = Path(run_dir)
    df, meta = load_run(run_dir)
    out = Path(out) if out else run_dir / "LEADERBOARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    traces = load_traces(run_dir)
    pool_rows, pool_traces = [df], [traces]
    for d in also:
        pool_rows.append(load_run(d)[0])
        pool_traces.append(load_traces(d))
    ref_path = run_dir / REFERENCE_TABLE
    reference = pd.read_parquet(ref_path) if ref_path.is_file() else None
    fref = f_ref(pd.concat(pool_rows, ignore_index=True), pd.concat(pool_traces, ignore_index=True), reference)
    source = ("the lowest MAP loss any solver reached on it, over final results and trace points"
              + (f" of this run and {len(also)} more" if also else " of this run")
              + (f", and the long multi-start solves of `{REFERENCE_TABLE}`" if reference is not None else ""))
    prof = profiles(df, traces, fref)
    pdir = out.parent / "profiles"
    pdir.mkdir(exist_ok=True)
    write_parquet(pdir / "f_ref.parquet", fref.reset_index())
    write_parquet(pdir / "gaps.parquet", with_gaps(df, fref, start_values(df, traces))[["cell_id", "f_ref", "gap",
                                                                                        "rel_gap"]])
    figures = None
    if make_figures:
        from bench.figures import make_all

        figures = make_all(run_dir, df, meta, out.parent / "figures", rel_to=out.parent, prof=prof)
    out.write_text(build_markdown(df, meta, figures, run_problems(run_dir), anytime_section(df, prof, source)))
    return out
