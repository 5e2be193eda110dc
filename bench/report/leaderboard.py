"""LEADERBOARD.md of a run directory: loading its rows, the run facts and findings (:mod:`bench.report.findings`), the
headline ranking per task group (:mod:`bench.report.headline`), the regime table, links to the per-cell tables
(:mod:`bench.report.table_files`), the anytime section (:mod:`bench.report.profiles`), the figures (:mod:`bench.report.figures`), and
LEADERBOARD.html (:mod:`bench.report.html_report`). Every number is computed from the Parquet rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.errors import UserError
from bench.core.metrics import METRICS, loss_metric
from bench.core.schema import BASELINE, ERROR, ROW_KEY, STATUS, TASK_SPEC, Status, coerce
from bench.report.noise_floor import task_floor
from bench.report.roles import role_solver
from bench.report.table_files import TABLES
from bench.report.tables import ALPHA, markdown, metric_table, solver_order, task_order
from bench.store.parts import read_run, read_traces
from bench.store.run_info import run_info

SKIPPED_NOTE = "skipped_rows"   # the key of meta (run.json as read) under which drop_skipped lists what it dropped


# ---------------------------------------------------------------------------------------------------- loading
def load_run(run_dir) -> tuple[pd.DataFrame, dict]:
    """Rows of a run directory and its run.json (``{}`` when absent). Missing/empty directory, or rows without the
    columns the report reads (the row key, the headline metrics, the status) -> UserError."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError(f"run directory {str(d)!r} does not exist")
    rows = read_run(d, skip_unreadable=True)   # unreadable files are named by bench.store.integrity
    if rows.empty:
        raise UserError(f"run directory {str(d)!r} has no result rows (expected {d / 'rows'}/*.parquet)")
    missing = [c for c in ROW_KEY + METRICS.headline() + [STATUS] if c not in rows.columns]
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


def drop_skipped(rows: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The rows without those a solver skipped (it declared the task does not apply: not a result, not a failure);
    ``meta[SKIPPED_NOTE]`` lists them for the leaderboard header."""
    skipped = rows[STATUS].astype(str) == Status.SKIPPED
    meta[SKIPPED_NOTE] = sorted({f"{solver} on {task}: {why}" for solver, task, why
                                 in rows.loc[skipped, ["solver", "task", ERROR]].itertuples(index=False)})
    if skipped.all():
        raise UserError("every result row was skipped by its solver; nothing to report")
    return rows[~skipped].reset_index(drop=True)


def _fmt_param(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _append_params(df: pd.DataFrame, label: str, cols: list, prefix: str) -> pd.DataFrame:
    """Where one ``label`` value covers several combinations of ``cols``, append the varying ones to it."""
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
    df[TASK_SPEC] = df["task"]   # the task alone: what defines an optimisation instance (bench.report.profiles)
    df = _append_params(df, "task", ["budget", "mle_steps"], "")
    return _append_params(df, "solver", [c for c in df.columns if c.startswith("p_solver_")], "p_solver_")


def load_traces(run_dir) -> pd.DataFrame:
    try:
        return read_traces(run_dir)
    except Exception:
        return pd.DataFrame()


def conventions(df: pd.DataFrame, solvers: list) -> str:
    """How to read the per-cell tables (stated once, in the details section)."""
    notes = ("Cells: mean ± se over the (image, seed) samples with status `ok` (se = std(ddof=1)/√n; no ± when "
             "n = 1); rows with another status are left out and counted as \"(k failed)\". **Bold** and the verdict "
             "column: the best of a row (lowest MAP loss, highest PSNR/SSIM) wins only when its paired per-image "
             "difference against the runner-up is significant (one-sided Wilcoxon signed-rank, Holm-corrected over "
             f"the table's rows, α = {ALPHA}) and its paired mean difference exceeds the table's **noise floor**; "
             "otherwise the row is a tie and both are bold. Solvers with failed rows in a cell are not eligible. "
             "Noise floor of a table (stated under its title): per solver, the median over its (image, λ, seed) "
             "pairs of |value at the table's budget − value at the run's next smaller budget| of the same instance; "
             "without a smaller budget, the median |difference between two seeds| of the same (image, λ); the "
             "table's floor is the largest solver's. With one budget and one seed no floor is measurable.")
    prior_free = [s for s in solvers if not uses_prior(df, s)]
    if prior_free:
        notes += (f" {', '.join(prior_free)} use no prior: their MAP loss is scored by the harness with the row's "
                  "prior, like every other solver's.")
    return notes


def uses_prior(df: pd.DataFrame, solver: str) -> bool:
    """Whether ``solver`` spent prior passes in this run (prior-free solvers report nfe_used = 0 on every row)."""
    nfe = pd.to_numeric(df.loc[df["solver"] == solver, "nfe_used"], errors="coerce")
    return bool((nfe > 0).any())


# ---------------------------------------------------------------------------------------------------- document
def build_markdown(df: pd.DataFrame, meta: dict, figures: dict | None = None, problems=(), anytime=(),
                   groups=None, tables: dict | None = None, regime: pd.DataFrame | None = None,
                   html: str | None = None, baseline: str | None = None) -> str:
    """The whole LEADERBOARD.md text: title, run facts, findings, the headline ranking per task group
    (:mod:`bench.report.headline`), the regime table, links to the per-cell tables (``tables``: what
    :func:`bench.report.table_files.write_tables` returned), the anytime section and the figures.
    ``problems``: what :func:`bench.store.integrity.run_problems` found; ``anytime``: lines of :func:`anytime_section`;
    ``baseline``: the solver of the paired comparison (:func:`resolve_baseline`)."""
    from bench.report.findings import findings_text, regime_lines, run_fact_lines, start_lines, start_spread
    from bench.report.headline import headline, markdown_lines
    from bench.report.regime_gaps import regime_gap_lines, regime_gaps

    solvers = solver_order(df["solver"].unique(), meta)
    info = run_info(df, meta)
    groups = headline(df, meta) if groups is None else groups
    out = [f"# Leaderboard: `{info['name']}`", "", *run_fact_lines(df, meta, info, problems), ""]
    if problems:
        out += ["**Warning: this run directory is incomplete or inconsistent; the tables cover only what it "
                "holds:**", "", *[f"- {p}" for p in problems], ""]
    if meta.get(SKIPPED_NOTE):
        out += ["Skipped (the solver declares the task does not apply; not results, not failures): "
                + "; ".join(meta[SKIPPED_NOTE]), ""]
    out += [f"**Findings.** {findings_text(groups, df)}", ""]
    out += markdown_lines(groups, tables["index"] if tables else None)
    if regime is not None:
        out += regime_lines(regime, tables.get("regime") if tables else None)
    fig = [rel for _, rel in (figures or {}).get("regime", [])]
    out += regime_gap_lines(regime_gaps(df), fig[0] if fig else None,
                            f"{TABLES}/regime_gaps.md" if tables and tables.get("regime_gaps") else None)
    out += start_lines(start_spread(df))
    out += ["## Details", ""]
    if html:
        out += [f"Interactive page (filters, sortable tables, per-image values and reconstructions, curves): "
                f"[{html}]({html}).", ""]
    out += [conventions(df, solvers), ""]
    if tables:
        for metric, items in tables["blocks"].items():
            title = METRICS[metric].table if metric in METRICS else metric
            out.append(f"- {title}: " + ", ".join(f"[{t}]({rel})" + (f" (floor {fl.text()})" if fl.measurable else "")
                                                  for t, rel, fl in items))
        paired = f" and paired comparison against `{baseline}`" if baseline in solvers else ""
        out += [f"- ranking over every cell{paired}: "
                f"[{TABLES}/ranking.md]({TABLES}/ranking.md); all tables with CSV: "
                f"[{tables['index']}]({tables['index']})", ""]
    else:
        for metric in (m for m in METRICS.values() if m.table and m.name in df.columns):
            out += [f"### {metric.table}", ""]
            for task in task_order(df["task"].unique()):
                out += [f"#### {task}", "", task_floor(df, task, metric.name).caption(), "",
                        markdown(*metric_table(df, task, metric.name, solvers)), ""]
    out += list(anytime)
    if figures:
        out += ["## Figures", ""]
        for key, title in (("anytime", "Anytime curves"), ("profiles", "Data profiles and target ECDFs"),
                           ("budget", "Rankings against the budget"), ("recon", "Reconstructions"),
                           ("cs_sweep", "PSNR vs m (measurement sweep)"),
                           ("regime", "Gap to the best against the regime")):
            items = figures.get(key) or []
            if not items:
                continue
            out += [f"### {title}", ""]
            if len(items) > 3:   # many per-task files: one line of links, not a wall of images
                out += [items[0][0].split(":")[0] + ": " + ", ".join(f"[{Path(rel).stem}]({rel})"
                                                                     for _, rel in items), ""]
                continue
            for caption, rel in items:
                out += [f"![{title}: {Path(rel).stem}]({rel})", "", caption, ""]
    return "\n".join(out).rstrip() + "\n"


REFERENCE_TABLE = "reference.parquet"   # written by `bench reference` into a run directory (best-known optima)


def anytime_section(df: pd.DataFrame, prof: dict, fref_source: str, link: str | None = None) -> list[str]:
    """Markdown of the anytime section: how f_ref is defined, and the mean anytime score (area under each solver's
    target ECDF) per solver; the per-task scores are in ``link`` when given, else in a table here."""
    from bench.report.profiles import TAUS, anytime_scores

    if not prof:
        return []
    sc = anytime_scores(prof)
    order = sc.sort_values("mean", ascending=False).index
    left = sorted({s for d in prof.values() for s in d["left_out"]})
    out = ["## Anytime performance", "",
           f"Best-known optimum f_ref per instance (task, prior, split, image, λ, seed): {fref_source}. Every row's "
           f"gap = {loss_metric()} − f_ref is in `profiles/gaps.parquet` beside this file, f_ref in `profiles/f_ref.parquet`. "
           f"Data profiles at τ = {', '.join(f'{t:g}' for t in TAUS)} and target ECDFs are in the figures below; "
           "the anytime score is the area under a solver's target ECDF over log10(passes) from 1 to the largest "
           "budget, normalised to [0, 1] (higher is better: targets reached earlier and more often)."
           + (f" Prior-free solvers ({', '.join(left)}) spend no passes and are left out." if left else ""), ""]
    if link:
        out += ["Mean over tasks: " + ", ".join(f"{a} {sc.loc[a, 'mean']:.3f}" for a in order
                                                 if np.isfinite(sc.loc[a, "mean"]))
                + f". Per task: [{link}]({link}).", ""]
    else:
        rows = [[a] + [f"{sc.loc[a, c]:.3f}" if np.isfinite(sc.loc[a, c]) else "—" for c in sc.columns]
                for a in order]
        out += [markdown(["solver"] + list(sc.columns), rows), ""]
    return out


def resolve_baseline(solvers: list, name: str | None = None) -> str | None:
    """The solver the paired comparison is against: ``name`` when given (a UserError unless it is one of the run's
    ``solvers``), else the registered solver that declares the :data:`bench.core.schema.BASELINE` role."""
    if name is None:
        return role_solver(BASELINE)
    if name not in solvers:
        raise UserError(f"baseline {name!r} is not a solver of this run; its solvers: {', '.join(solvers)}")
    return name


def write_report(run_dir, out: str | Path | None = None, make_figures: bool = True, also=(),
                 make_html: bool = True, baseline: str | None = None) -> Path:
    """Write LEADERBOARD.md (default ``run_dir/LEADERBOARD.md``), its per-cell tables in ``<out dir>/tables``,
    LEADERBOARD.html beside it (:mod:`bench.report.html_report`), its PNG figures in ``<out dir>/figures`` and the
    best-known optima and gaps in ``<out dir>/profiles``. ``also``: more run directories whose rows and traces
    count towards f_ref (the same instances run elsewhere); ``baseline``: the solver of the paired comparison
    (:func:`resolve_baseline`)."""
    from bench.report.findings import regime
    from bench.report.headline import headline
    from bench.report.noise_floor import with_late_values
    from bench.report.profiles import anytime_scores, f_ref, profiles, start_values, with_gaps
    from bench.report.table_files import write_tables
    from bench.store.integrity import run_problems
    from bench.store.parts import write_parquet

    run_dir = Path(run_dir)
    df, meta = load_run(run_dir)
    df = drop_skipped(df, meta)
    solvers = solver_order(df["solver"].unique(), meta)
    baseline = resolve_baseline(solvers, baseline)
    out = Path(out) if out else run_dir / "LEADERBOARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    traces = load_traces(run_dir)
    df = with_late_values(df, traces)     # the noise floor's fallback (bench.report.noise_floor)
    pool_rows, pool_traces = [df], [traces]
    for d in also:
        pool_rows.append(drop_skipped(load_run(d)[0], {}))
        pool_traces.append(load_traces(d))
    ref_path = run_dir / REFERENCE_TABLE
    reference = coerce(pd.read_parquet(ref_path)) if ref_path.is_file() else None
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
    groups = headline(df, meta)
    reg = regime(df)
    scores = anytime_scores(prof) if prof else None
    tables = write_tables(out.parent, df, solvers, groups, reg, scores, baseline)
    figures = None
    if make_figures:
        from bench.report.figures import make_all

        figures = make_all(run_dir, df, meta, out.parent / "figures", rel_to=out.parent, prof=prof, traces=traces)
    problems = run_problems(run_dir)
    html = None
    if make_html:
        from bench.report.html_report import write_html

        html = write_html(out.with_suffix(".html"), run_dir, df, meta, title=run_info(df, meta)["name"],
                          groups=groups, prof=prof, traces=traces, problems=problems, regime=reg).name
    link = "tables/anytime_scores.md" if scores is not None and len(scores) else None
    out.write_text(build_markdown(df, meta, figures, problems, anytime_section(df, prof, source, link),
                                  groups=groups, tables=tables, regime=reg, html=html, baseline=baseline))
    return out
