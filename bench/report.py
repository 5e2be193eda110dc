"""LEADERBOARD.md of a run directory: loading its rows, the header, the generated summary, the metric tables,
ranking and paired comparison (:mod:`bench.tables`), the anytime section (:mod:`bench.profiles`) and the figures
(:mod:`bench.figures`). Every number is computed from the Parquet rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import UserError
from bench.metrics import METRICS
from bench.store import SKIPPED, read_run, read_traces
from bench.tables import (ALPHA, BASELINE, ROW_KEY, cell_stats, fmt_num, is_ok, markdown, metric_table, paired,
                          paired_table, rank_cells, ranking, significant_wins, solver_order, task_base, task_order)

TRIVIAL = "observed"   # the do-nothing reconstruction (each task's naive estimate)


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


def drop_skipped(rows: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The rows without those a solver skipped (it declared the task does not apply: not a result, not a failure);
    ``meta["skipped"]`` lists them for the leaderboard header."""
    skipped = rows["status"].astype(str) == SKIPPED
    meta["skipped"] = sorted({f"{r.solver} on {r.task}: {r.error}" for r in rows[skipped].itertuples()})
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
    df["task_spec"] = df["task"]   # the task alone: what defines an optimisation instance (bench.profiles)
    df = _append_params(df, "task", ["budget", "mle_steps"], "")
    return _append_params(df, "solver", [c for c in df.columns if c.startswith("p_solver_")], "p_solver_")


def load_traces(run_dir) -> pd.DataFrame:
    try:
        return read_traces(run_dir)
    except Exception:
        return pd.DataFrame()


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
    wt = pd.to_numeric(df["wall_time_s"], errors="coerce").sum()
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
        *(["- skipped (the solver declares the task does not apply; not results, not failures): "
           + "; ".join(meta["skipped"])] if meta.get("skipped") else []),
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
    from bench.tasks import TASKS

    bases = list(dict.fromkeys(task_base(t) for t in task_order(df["task"].unique())))
    what = ", ".join(f"{TASKS.get(b).naive_text} for {b}" for b in bases if b in TASKS)
    return f"Against doing nothing (`{trivial}`: {what}; paired per image): " + "; ".join(bits) + "."


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
    for metric in (m for m in METRICS.values() if m.table and m.name in df.columns):
        out += [f"## {metric.table}", ""]
        for task in tasks:
            out += [f"### {task}", ""]
            h, r = metric_table(df, task, metric.name, solvers)
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
                           ("cs_sweep", "PSNR vs m (measurement sweep)")):
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
    df = drop_skipped(df, meta)
    out = Path(out) if out else run_dir / "LEADERBOARD.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    traces = load_traces(run_dir)
    pool_rows, pool_traces = [df], [traces]
    for d in also:
        pool_rows.append(drop_skipped(load_run(d)[0], {}))
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

        figures = make_all(run_dir, df, meta, out.parent / "figures", rel_to=out.parent, prof=prof, traces=traces)
    out.write_text(build_markdown(df, meta, figures, run_problems(run_dir), anytime_section(df, prof, source)))
    return out
