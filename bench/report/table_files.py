"""The leaderboard's detail tables as files: ``tables/`` beside LEADERBOARD.md holds one markdown and one CSV file
per block (metric × task: the AIPO-layout table with verdicts, its noise floor in the caption line and in the
CSV's ``noise_floor`` column), the headline groups, the regime table, the
ranking and paired comparison against the baseline solver, and the anytime scores; ``tables/index.md`` lists them.

The CSV files hold numbers (mean, se, n, failed per cell; verdicts as text) for spreadsheets and scripts; the
markdown files hold the same tables formatted as in the leaderboard.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.metrics import METRICS
from bench.report.noise_floor import task_floor
from bench.report.regime_gaps import regime_gaps, write_gap_table
from bench.report.tables import cell_stats, markdown, metric_table, paired_table, ranking, task_order, task_verdicts

TABLES = "tables"


def safe_name(text: str) -> str:
    """A file-name form of a label (letters, digits, ``-_.``; the rest ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


def block_csv(df: pd.DataFrame, task: str, metric: str, solvers: list) -> pd.DataFrame:
    """Long table of one block: prior, split, λ, solver, mean, se, n, failed, the row's verdict and p, the best's
    paired mean difference to the runner-up in its favour (``gain``), the table's noise floor with its source
    (``budget``, ``seed`` or ``none``) and the solver's own floor (:mod:`bench.report.noise_floor`)."""
    sub = df[df["task"] == task]
    st = cell_stats(sub, metric).reset_index()
    v, floor = task_verdicts(df, task, metric, solvers)
    row = [v.get((r.prior, r.split, r.lam)) for r in st.itertuples()]
    st["verdict"] = ["" if x is None else (x["best"] if x.get("win") else "tie") for x in row]
    st["p"] = [np.nan if x is None else x["p"] for x in row]
    st["gain"] = [np.nan if x is None else x["gain"] for x in row]
    st["noise_floor"] = floor.value if floor.measurable else np.nan
    st["floor_source"] = floor.source
    st["solver_floor"] = [floor.per_solver.get(str(s), (np.nan, 0))[0] for s in st["solver"]]
    st.insert(0, "metric", metric)
    return st[["metric", "task", "prior", "split", "lam", "solver", "mean", "se", "n", "failed", "verdict", "p",
               "gain", "noise_floor", "floor_source", "solver_floor"]]


def headline_csv(groups) -> pd.DataFrame:
    parts = []
    for label, t in groups:
        parts.append(t.reset_index().assign(group=label))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_tables(out_dir: Path, df: pd.DataFrame, solvers: list, groups, reg: pd.DataFrame,
                 anytime: pd.DataFrame | None = None, baseline: str | None = None) -> dict:
    """Write ``out_dir/tables/`` (the paired comparison against ``baseline`` where it ran); return
    {"blocks": {metric: [(task, md path, noise floor)]}, "regime": path|None, "index": path}, paths relative to
    ``out_dir``."""
    tdir = Path(out_dir) / TABLES
    tdir.mkdir(parents=True, exist_ok=True)
    for old in list(tdir.glob("*.md")) + list(tdir.glob("*.csv")):   # a rerun leaves no stale block behind
        old.unlink()
    blocks: dict = {}
    index = ["# Tables", "", "Every table of the leaderboard, as markdown and CSV (numbers, for scripts).", ""]
    for metric in (m for m in METRICS.values() if m.table and m.name in df.columns):
        blocks[metric.name] = []
        index += [f"## {metric.table}", ""]
        for task in task_order(df["task"].unique()):
            stem = f"{metric.name}__{safe_name(task)}"
            h, r = metric_table(df, task, metric.name, solvers)
            floor = task_floor(df, task, metric.name)
            (tdir / f"{stem}.md").write_text(f"# {metric.table}: {task}\n\n{floor.caption()}\n\n{markdown(h, r)}\n")
            block_csv(df, task, metric.name, solvers).to_csv(tdir / f"{stem}.csv", index=False)
            rel = f"{TABLES}/{stem}.md"
            blocks[metric.name].append((task, rel, floor))
            index.append(f"- [{task}]({stem}.md) ([csv]({stem}.csv)); noise floor: {floor.text()}")
        index.append("")
    hc = headline_csv(groups)
    if len(hc):
        hc.to_csv(tdir / "headline.csv", index=False)
    rk = ranking(df, solvers)
    rows = [[s] + [f"{v:.2f}" if "rank" in c else str(int(v)) for c, v in rk.loc[s].items()] for s in rk.index]
    text = ["# Ranking over every cell", "",
            f"Over {rk.attrs['cells']} cells (task × prior × split × λ × seed); ties share the best rank; a failed "
            "row ranks last.", "", markdown(["solver"] + list(rk.columns), rows), ""]
    if baseline in solvers:
        text += [f"## Paired comparison against `{baseline}`", "",
                 f"Differences solver − {baseline} per (task, prior, split, λ, seed, image), both rows ok.", "",
                 markdown(*paired_table(df, solvers, baseline)), ""]
    (tdir / "ranking.md").write_text("\n".join(text))
    rk.reset_index().to_csv(tdir / "ranking.csv", index=False)
    index += ["## Summaries", "", "- [ranking over every cell](ranking.md) ([csv](ranking.csv))",
              "- [headline groups](headline.csv)"]
    reg_rel = None
    if len(reg):
        reg.to_csv(tdir / "regime.csv", index=False)
        rr = [[*(str(x) for x in r[:-3]), f"{r[-3]:.3f}", f"{r[-2]:.4f}", str(int(r[-1]))]
              for r in reg.itertuples(index=False)]
        (tdir / "regime.md").write_text("# Regime: bits/dim of x̂ and |data| / |prior| per λ\n\n"
                                        + markdown(list(reg.columns), rr) + "\n")
        reg_rel = f"{TABLES}/regime.md"
        index.append("- [regime per λ](regime.md) ([csv](regime.csv))")
    gap_md = write_gap_table(regime_gaps(df), tdir)
    if gap_md:
        index.append(f"- [gap to the best solver against the regime]({gap_md}) (csv: regime_gaps.csv)")
    if anytime is not None and len(anytime):
        anytime.to_csv(tdir / "anytime_scores.csv")
        ar = [[a] + [f"{anytime.loc[a, c]:.3f}" if np.isfinite(anytime.loc[a, c]) else "—" for c in anytime.columns]
              for a in anytime.index]
        (tdir / "anytime_scores.md").write_text("# Anytime scores (area under the target ECDF)\n\n"
                                                + markdown(["solver"] + list(anytime.columns), ar) + "\n")
        index.append("- [anytime scores per task](anytime_scores.md) ([csv](anytime_scores.csv))")
    (tdir / "index.md").write_text("\n".join(index) + "\n")
    return {"blocks": blocks, "regime": reg_rel, "regime_gaps": gap_md, "index": f"{TABLES}/index.md"}
