"""PNG figures of a run directory (matplotlib, Agg backend): anytime curves and data profiles (one file per task,
at most :data:`MAX_CURVES` curves per panel), rankings against the budget; the reconstruction grids and PSNR vs m are in :mod:`bench.report.figures_recon`. :func:`make_all` draws them all.

- Anytime curves (per task): for every trace (a cell's MAP loss after t passes, averaged over the images the
  trace covers) the gap L_t − L*, where L* is the lowest MAP loss any solver reached on the same problem
  (task, prior, split, λ, seed, images) — traces and final harness scores both count. Each curve is carried
  forward after its last record up to the task's largest pass count (a stopped solver keeps its last iterate); a
  solver's mean is plotted from the first pass count at which every one of its problems has a record, so each
  point averages the same set of problems; log scale, floored at ``GAP_FLOOR``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.core.metrics import loss_metric, quality_metric, short_name, unit_of  # noqa: E402
from bench.core.schema import RANK_CELL  # noqa: E402
from bench.report.figures_recon import plot_cs_sweep, plot_recon  # noqa: E402
from bench.report.regime_gaps import plot_regime_gaps, regime_gaps  # noqa: E402
from bench.report.tables import is_ok, rank_cells, solver_order, split_order, task_order  # noqa: E402
from bench.store.parts import read_traces  # noqa: E402

GAP_FLOOR = 1e-3


def _scope_title(what: str, rows: pd.DataFrame) -> str:
    """A figure title naming what it aggregates over: priors, splits and λ of the run."""
    lams = ", ".join(f"{v:g}" for v in sorted(rows["lam"].unique()))
    return (f"{what} — priors {', '.join(sorted(map(str, rows['prior'].unique())))}; splits "
            f"{', '.join(split_order(rows['split'].unique()))}; λ ∈ {{{lams}}}")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


# ---------------------------------------------------------------------------------------------------- anytime
def anytime_curves(rows: pd.DataFrame, traces: pd.DataFrame) -> dict:
    """{task: DataFrame(index nfe, columns solver) of the mean gap L_t − L*}, see module docstring."""
    loss = loss_metric()
    if traces.empty or not {"cell_id", "nfe", loss} <= set(traces.columns) or "cell_id" not in rows:
        return {}
    per_image = "image_id" in traces.columns
    tkey = ["cell_id", "image_id"] if per_image else ["cell_id"]
    first = rows.drop_duplicates("cell_id").set_index("cell_id")
    info = first[RANK_CELL + ["solver"]].copy()
    if per_image or (rows.groupby("cell_id").size() == 1).all():
        info["images"] = first["image_id"].astype(str)
    else:
        info["images"] = rows.groupby("cell_id")["image_id"].agg(lambda s: "|".join(sorted(map(str, s.unique()))))
    tr = traces[tkey + ["nfe", loss]].copy()
    tr[loss] = pd.to_numeric(tr[loss], errors="coerce")
    tr = tr[np.isfinite(tr[loss].to_numpy(float)) & tr["cell_id"].isin(info.index)]
    if tr.empty:
        return {}
    if per_image:
        tr["image_id"] = tr["image_id"].astype(str)
    cur = tr.groupby(tkey + ["nfe"], sort=False)[loss].mean().reset_index()
    keys = cur[tkey].drop_duplicates().reset_index(drop=True)
    keys["kid"] = np.arange(len(keys))
    keys = keys.join(info.drop(columns="images") if per_image else info, on="cell_id")
    if per_image:
        keys["images"] = keys["image_id"]
    cur = cur.merge(keys[tkey + ["kid"]], on=tkey)
    keys = keys.join(cur.groupby("kid")[loss].min().rename("tmin"), on="kid")
    group = RANK_CELL + ["images"]
    # L*: min over every trace point of the problem and every final ok score of the problem
    best = keys.groupby(group, dropna=False)["tmin"].min()
    ok = rows[is_ok(rows)].copy()
    ok[loss] = pd.to_numeric(ok[loss], errors="coerce")
    if per_image:
        ok["images"] = ok["image_id"].astype(str)
        fin = ok.groupby(group)[loss].min()
    else:
        ok = ok.join(info["images"], on="cell_id")
        fin = ok.groupby(group + ["cell_id"])[loss].mean().groupby(level=list(range(len(group)))).min()
    best = pd.concat([best, fin.reindex(best.index)], axis=1).min(axis=1).rename("best")
    keys = keys.join(best, on=group)
    cur = cur.merge(keys[["kid", "task", "solver", "best"]], on="kid")
    cur["gap"] = cur[loss] - cur["best"]
    out = {}
    for task, gt in cur.groupby("task", sort=False):
        frames = {}
        grid = np.sort(gt["nfe"].unique())
        for solver, g in gt.groupby("solver", sort=False):
            wide = g.pivot_table(index="nfe", columns="kid", values="gap", aggfunc="mean")
            wide = wide.reindex(np.union1d(wide.index.to_numpy(), grid[-1:])).ffill()  # own points + task end
            full = wide.dropna()  # from the first pass count at which every problem has a record
            use = full if len(full) else wide
            frames[solver] = use.mean(axis=1)
            frames[(solver, "se")] = use.std(axis=1, ddof=1) / np.sqrt(use.count(axis=1))
        c = pd.DataFrame({k: v for k, v in frames.items() if not isinstance(k, tuple)}).sort_index()
        c.attrs["se"] = pd.DataFrame({k[0]: v for k, v in frames.items() if isinstance(k, tuple)}).sort_index()
        out[task] = c
    return out


MAX_CURVES = 8   # per panel: more would need a legend no one can read


def _chunks(names: list, k: int = MAX_CURVES) -> list[list]:
    return [names[i:i + k] for i in range(0, len(names), k)] or [[]]


def plot_anytime_task(curves: dict, task: str, rows, path: Path, meta=None) -> str | None:
    """The anytime curves of one task, in panels of at most :data:`MAX_CURVES` solvers."""
    c = curves[task]
    se = c.attrs.get("se", pd.DataFrame())
    solvers_all = solver_order(rows["solver"].unique(), meta)
    colors = {s: f"C{i % 10}" for i, s in enumerate(solvers_all)}
    groups = _chunks(solver_order(c.columns, meta))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.6), squeeze=False)
    for ax, names in zip(axes[0], groups):
        for s in names:
            y = c[s].dropna().clip(lower=GAP_FLOOR)
            if len(y) == 1:
                ax.plot(y.index, y.values, "o", color=colors[s], label=s)
                continue
            ax.plot(y.index, y.values, "-", color=colors[s], label=s, lw=1.4)
            if s in se.columns:
                e = se[s].reindex(y.index).fillna(0).to_numpy()
                ax.fill_between(y.index, np.clip(y.values - e, GAP_FLOOR, None), y.values + e, color=colors[s],
                                alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prior passes per image")
        ax.set_ylabel("mean MAP loss − best reached")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    sub = rows[rows["task"] == task]
    fig.suptitle(_scope_title(f"{task}: anytime gap to the best-known optimum", sub), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return (f"Anytime curves, {task}: mean over problems (prior, split, λ, seed, image) of the gap L(x_t) − f_ref, "
            "f_ref = lowest MAP loss any solver reached on that problem, shaded ± se; log axes, floored at "
            f"{GAP_FLOOR:g}; a stopped solver's curve is carried forward at its last value.")


# ---------------------------------------------------------------------------------------------------- profiles
def plot_profiles_task(d: dict, task: str, path: Path, title: str = "") -> str | None:
    """Data profiles (rows: τ) and the target ECDF (last row) of one task; one column per budget (the algorithms
    ``solver@budget``), so a panel holds at most one curve per solver (split further past :data:`MAX_CURVES`)."""
    from bench.report.profiles import N_TARGETS, TAUS

    algos = list(d["ecdf"].columns)
    budgets = sorted({a.rsplit("@", 1)[1] for a in algos if "@" in a}, key=float) or [None]
    cols = []
    for b in budgets:
        names = [a for a in algos if b is None or a.endswith(f"@{b}")]
        cols += [(b, part) for part in _chunks(names)]
    solvers = sorted({a.rsplit("@", 1)[0] for a in algos})
    colors = {s: f"C{i % 10}" for i, s in enumerate(solvers)}
    fig, axes = plt.subplots(len(TAUS) + 1, len(cols), figsize=(3.8 * len(cols), 2.5 * (len(TAUS) + 1)),
                             squeeze=False, sharey=True)
    for j, (b, names) in enumerate(cols):
        panels = [(d["data"][tau], f"solved at τ = {tau:g}") for tau in TAUS]
        panels.append((d["ecdf"], f"target ECDF ({N_TARGETS} targets)"))
        for i, (frame, what) in enumerate(panels):
            ax = axes[i][j]
            for a in names:
                s = a.rsplit("@", 1)[0] if b is not None else a
                ax.step(d["grid"], frame[a].to_numpy(), where="post", color=colors[s], label=s, lw=1.3)
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(what + (f", budget {b}" if b is not None else ""), fontsize=9)
            ax.grid(alpha=0.3, which="both")
            if i == len(panels) - 1:
                ax.set_xlabel("prior passes per image")
        axes[0][j].legend(fontsize=7, loc="upper left")
    for i in range(len(TAUS) + 1):
        axes[i][0].set_ylabel("fraction" if i < len(TAUS) else "fraction of (instance, target)")
    fig.suptitle(f"{task}: data profiles and target ECDFs" + (f" — {title}" if title else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    left = d["left_out"]
    return (f"Data profiles, {task} (Moré & Wild 2009; rows 1–3): fraction of instances (prior, split, image, λ, "
            "seed) solved after p passes, f(x0) − f_best(p) ≥ (1 − τ)(f(x0) − f_ref), f(x0) = MAP loss of doing "
            "nothing, f_ref = best-known optimum. Bottom row: ECDF of (instance, target) pairs reached (COCO)."
            + (f" Prior-free solvers (no passes) are left out: {', '.join(left)}." if left else ""))


def plot_budget_axis(rows: pd.DataFrame, path: Path, meta=None) -> str | None:
    """Mean rank by MAP loss and mean PSNR (the metrics of roles LOSS and QUALITY) per solver against the budget,
    when the run has several budgets."""
    if "budget" not in rows.columns or rows["budget"].nunique() < 2:
        return None
    loss, quality = loss_metric(), quality_metric()
    solvers = solver_order(rows["solver"].unique(), meta)
    budgets = sorted(rows["budget"].unique())
    rank, mean = {}, {}
    for b in budgets:
        sub = rows[rows["budget"] == b]
        rank[b] = rank_cells(sub, loss, solvers).mean()
        ok = sub[is_ok(sub)]
        mean[b] = ok.groupby("solver")[quality].mean()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, s in enumerate(solvers):
        axes[0].plot(budgets, [rank[b].get(s, np.nan) for b in budgets], "o-", color=f"C{i % 10}", label=s)
        axes[1].plot(budgets, [mean[b].get(s, np.nan) for b in budgets], "o-", color=f"C{i % 10}", label=s)
    labels = (f"mean rank by {short_name(loss)} (1 = best)", f"mean {short_name(quality)} ({unit_of(quality)})")
    for ax, lab in zip(axes, labels):
        ax.set_xscale("log")
        ax.set_xlabel("budget (prior passes per image)")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3, which="both")
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7)
    fig.suptitle(_scope_title("Rankings against the budget", rows), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Rankings against the budget: where lines cross, the budget decides the winner."


# ---------------------------------------------------------------------------------------------------- all
def make_all(run_dir, rows: pd.DataFrame, meta: dict, fig_dir: Path, rel_to: Path, prof: dict | None = None,
             traces: pd.DataFrame | None = None) -> dict:
    """Write every figure into ``fig_dir``; return {"anytime"|"profiles"|"budget"|"recon"|"cs_sweep"|"regime":
    [(caption, relative path)]}. ``rows``: as :func:`bench.report.leaderboard.load_run` returns them; ``traces``: the run's
    traces (``None``: read from ``run_dir``); ``prof``: :func:`bench.report.profiles.profiles` of the run (drawn when
    given).

    A figure that fails is skipped with a warning on stderr (the tables are still written)."""
    run_dir, fig_dir = Path(run_dir), Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = {"anytime": [], "profiles": [], "budget": [], "recon": [], "cs_sweep": [], "regime": []}

    def rel(p: Path) -> str:
        try:
            return p.resolve().relative_to(Path(rel_to).resolve()).as_posix()
        except ValueError:
            return p.resolve().as_posix()

    def attempt(key, fn, path):
        try:
            cap = fn(path)
        except Exception as e:  # a broken figure must not cost the tables
            sys.stderr.write(f"warning: figure {path.name} skipped: {type(e).__name__}: {e}\n")
            return
        if cap:
            out[key].append((cap, rel(path)))

    if traces is None:
        try:
            traces = read_traces(run_dir)
        except Exception:  # noqa: BLE001 -- unreadable traces files are named by bench.store.integrity
            traces = pd.DataFrame()
    try:
        curves = anytime_curves(rows, traces)
    except Exception as e:  # noqa: BLE001 -- a broken figure must not cost the tables
        sys.stderr.write(f"warning: anytime curves skipped: {type(e).__name__}: {e}\n")
        curves = {}
    for task in task_order(curves):
        attempt("anytime", lambda p, t=task: plot_anytime_task(curves, t, rows, p, meta),
                fig_dir / f"anytime_{_safe(task)}.png")
    for task in task_order(prof or {}):
        attempt("profiles", lambda p, t=task: plot_profiles_task(prof[t], t, p), fig_dir / f"profiles_{_safe(task)}.png")
    attempt("budget", lambda p: plot_budget_axis(rows, p, meta), fig_dir / "budget_axis.png")
    for task in task_order(rows["task"].unique()):
        attempt("recon", lambda p, t=task: plot_recon(run_dir, rows, t, p, meta),
                fig_dir / f"recon_{_safe(task)}.png")
    attempt("cs_sweep", lambda p: plot_cs_sweep(run_dir, rows, p, meta), fig_dir / "psnr_vs_m.png")
    attempt("regime", lambda p: plot_regime_gaps(regime_gaps(rows), p)
            and "each solver's paired gap to the best against the data / prior ratio", fig_dir / "regime_gaps.png")
    return out
