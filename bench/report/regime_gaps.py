"""Where continuation pays off, measured: each solver's paired gap to the best solver against the regime.

A *regime point* is one (dataset, prior, task, λ) of a run, on its in-distribution images. Its abscissa is the
ratio |log p_e(y − f(x̂))| / |log p_G(x̂)| of the MAP loss's two terms at the prior-based solvers' reconstructions
(:func:`bench.report.findings.regime`, mean over rows): small where the prior dominates the objective, large where the data
term does. A grid with a regime axis (the same images under several noise levels σ) spreads these points over a
range of ratios. At each point, per (image, seed), the best solver is the one with the lowest MAP loss (or the
highest PSNR) among the solvers that ran there; a solver's gap is the mean over (image, seed) of its distance to
that best, in nats (MAP loss) and dB (PSNR). Rows that failed count as missing, and a solver's gap is reported only
where it has every (image, seed) of the point. The metrics are the headline ones
(:meth:`bench.core.metrics.MetricTable.headline`, the MAP loss first); a metric ``m``'s gaps are the column ``m_gap``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.metrics import METRICS, higher_is_better, short_name, unit_of
from bench.core.schema import STATUS
from bench.report.findings import regime
from bench.report.tables import is_ok, markdown

POINT = ["dataset", "prior", "task", "lam"]


def gap_column(metric: str) -> str:
    """The column of ``metric``'s gaps to the best."""
    return f"{metric}_gap"


def _best(metric: str) -> str:
    return "highest" if higher_is_better(metric) else "lowest"


def regime_gaps(df: pd.DataFrame, split: str = "id") -> pd.DataFrame:
    """One row per (regime point, solver): ratio, each headline metric's gap (≥ 0: nats, dB), pairs. Empty when
    the rows lack what it needs."""
    metrics = METRICS.headline()
    need = set(POINT) | {"solver", "image_id", "seed", "split", STATUS, *metrics}
    if not need <= set(df.columns):
        return pd.DataFrame()
    ok = df[is_ok(df) & (df["split"].astype(str) == split)].copy()
    if ok.empty:
        return pd.DataFrame()
    reg = regime(ok)
    if reg.empty:
        return pd.DataFrame()
    ratio = reg.set_index(POINT)["data_to_prior"]
    out = []
    for point, g in ok.groupby(POINT, sort=True):
        if point not in ratio.index or not np.isfinite(ratio.loc[point]):
            continue
        gaps = {}
        for metric in metrics:
            per = g.pivot_table(index=["seed", "image_id"], columns="solver", values=metric, aggfunc="first")
            per = per.apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
            hib = higher_is_better(metric)
            ref = per.max(axis=1) if hib else per.min(axis=1)
            gap = per.rsub(ref, axis=0) if hib else per.sub(ref, axis=0)
            gaps[metric] = gap.mean(axis=0).where(per.notna().all(axis=0)), len(per)
        first = gaps[metrics[0]]
        for solver in first[0].index:
            out.append({**dict(zip(POINT, point)), "ratio": float(ratio.loc[point]), "solver": solver,
                        **{gap_column(m): gaps[m][0].get(solver, np.nan) for m in metrics}, "pairs": first[1]})
    return pd.DataFrame(out)


def has_axis(gaps: pd.DataFrame, min_points: int = 4) -> bool:
    """Whether some (dataset, prior) has at least ``min_points`` regime points: enough to read a curve."""
    if gaps.empty:
        return False
    return bool((gaps.groupby(["dataset", "prior"])["ratio"].nunique() >= min_points).any())


def summary_rows(gaps: pd.DataFrame) -> list[list[str]]:
    """Per regime point (by prior, then ratio): the best solver by mean MAP loss gap and by PSNR gap, and the gap of
    the runner-up, so a reader sees where the winner changes."""
    rows = []
    for (ds, prior), g in gaps.groupby(["dataset", "prior"], sort=True):
        for (task, lam), p in sorted(g.groupby(["task", "lam"]), key=lambda kv: kv[1]["ratio"].iloc[0]):
            cells = [str(prior), str(task), f"{lam:g}", f"{p['ratio'].iloc[0]:.2f}"]
            for col in map(gap_column, METRICS.headline()):
                s = p.set_index("solver")[col].dropna().sort_values()
                if s.empty:
                    cells += ["—", "—"]
                    continue
                cells.append(f"`{s.index[0]}` ({s.iloc[0]:.2f})")
                cells.append(f"`{s.index[1]}` +{s.iloc[1] - s.iloc[0]:.2f}" if len(s) > 1 else "—")
            rows.append(cells)
    return rows


def regime_gap_lines(gaps: pd.DataFrame, figure: str | None = None, table: str | None = None) -> list[str]:
    """The leaderboard section: the summary table, and links to the figure and the full table."""
    if not has_axis(gaps):
        return []
    metrics = METRICS.headline()
    head = ["prior", "task", "λ", "data / prior ratio"]
    for m in metrics:
        head += [f"{_best(m)} {short_name(m)} (mean gap)", "runner-up"]
    links = " ".join(x for x in (f"Figure: [{figure}]({figure})." if figure else "",
                                 f"Every solver's gaps: [{table}]({table})." if table else "") if x)
    return ["## Regime axis: which solver wins where", "",
            "Each in-distribution (prior, task, λ) point, ordered by the ratio |log p_e| / |log p_G| at the "
            "reconstructions (small: the prior dominates; large: the data term does). Per image and seed the best "
            f"solver is the one with the {_best(metrics[0])} {short_name(metrics[0])} ("
            + ", ".join(f"{_best(m)} {short_name(m)}" for m in metrics[1:]) + "); a solver's gap is its mean "
            f"distance to that best ({', '.join(unit_of(m) for m in metrics)}). " + links, "",
            markdown(head, summary_rows(gaps)), ""]


def write_gap_table(gaps: pd.DataFrame, tdir) -> str | None:
    """``tdir/regime_gaps.csv`` and ``.md`` (every solver's gaps); returns the markdown file name."""
    if gaps.empty:
        return None
    gaps.to_csv(tdir / "regime_gaps.csv", index=False)
    loss, *others = METRICS.headline()
    wide = gaps.pivot_table(index=["prior", "task", "lam", "ratio"], columns="solver", values=gap_column(loss))
    wide = wide.reset_index().sort_values(["prior", "ratio"])
    rows = [[str(r["prior"]), str(r["task"]), f"{r['lam']:g}", f"{r['ratio']:.2f}",
             *(f"{r[s]:.2f}" if np.isfinite(r[s]) else "—" for s in wide.columns[4:])] for _, r in wide.iterrows()]
    (tdir / "regime_gaps.md").write_text(
        f"# {short_name(loss)} gap to the best solver ({unit_of(loss)}) against the regime\n\n"
        f"Mean over in-distribution images and seeds of (solver's {short_name(loss)} − the lowest of any solver); the "
        + "".join(f"{short_name(m)} " for m in others) + "gaps are in regime_gaps.csv.\n\n"
        + markdown(["prior", "task", "λ", "ratio", *map(str, wide.columns[4:])], rows) + "\n")
    return "regime_gaps.md"


def plot_regime_gaps(gaps: pd.DataFrame, path) -> bool:
    """One row of panels per prior (one per headline metric's gap: MAP loss, PSNR) against the ratio, one colour per
    solver; log x, symlog y. Returns False (nothing written) without a regime axis."""
    if not has_axis(gaps):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = [p for p, g in gaps.groupby("prior", sort=True) if g["ratio"].nunique() >= 2]
    solvers = sorted(gaps["solver"].unique())
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(solvers), 2)))
    metrics = METRICS.headline()
    fig, axes = plt.subplots(len(priors), len(metrics), figsize=(5.5 * len(metrics), 3.2 * len(priors)),
                             squeeze=False)
    for i, prior in enumerate(priors):
        g = gaps[gaps["prior"] == prior].sort_values("ratio")
        for j, metric in enumerate(metrics):
            col, unit, ax = gap_column(metric), unit_of(metric), axes[i][j]
            for k, s in enumerate(solvers):
                gs = g[(g["solver"] == s) & g[col].notna()]
                if len(gs):   # points, not lines: neighbouring ratios may be different tasks
                    ax.plot(gs["ratio"], gs[col], "o", ms=4, alpha=0.8, color=colours[k], label=s)
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1.0 if j == 0 else 0.1)   # nats of the loss; dB
            ax.set_ylim(bottom=0)   # gaps are ≥ 0
            ax.set_xlabel("|log p_e| / |log p_G| at x̂")
            ax.set_ylabel(f"gap to best ({unit})")
            ax.set_title(f"{prior}: {short_name(metric)}", fontsize=9)
            ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}   # every solver, once
    fig.legend([handles[s] for s in solvers if s in handles], [s for s in solvers if s in handles], fontsize=7,
               loc="upper right", bbox_to_anchor=(1.0, 0.99))
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
