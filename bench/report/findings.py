"""The leaderboard's short texts, generated from the numbers (pure functions): the run facts under the title, the
findings paragraph, and the *regime* table (where on the prior's density the reconstructions sit).

Regime, per (dataset, prior, task, λ), over the ok rows of the prior-based solvers (those that spent passes): the
mean −log p_G(x̂) in bits/dim (``bits_per_dim`` = −log_prior / (n ln 2), n = pixels) and the mean ratio
|data_nll| / |log_prior| of the two terms of the MAP loss at x̂ (how much the data term weighs against the prior
term before λ scales it). The three are the metrics of roles :data:`bench.core.metrics.BITS_PER_DIM`,
:data:`bench.core.metrics.DATA_TERM` and :data:`bench.core.metrics.PRIOR_TERM`; the table's bits/dim column is named after
the first.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.core.metrics import (BITS_PER_DIM, DATA_TERM, METRICS, PRIOR_TERM, decimals, loss_metric, quality_metric,
                                short_name, unit_of)
from bench.core.schema import STATUS, TRIVIAL, Status
from bench.report.headline import d_quality
from bench.report.roles import role_solver
from bench.report.tables import is_ok

# What AIPO's Tables 1-3 imply at the reconstructions: −log p_G(x̂) from the slope of the MAP loss in λ, the ratio
# from its two terms at λ = 1 (denoising: 2.7 with RealNVP, 10.2 with Glow).
PAPER_REGIME = "0.01–0.6 bits/dim, ratio 0.5–10 at λ = 1"


def _uses_prior(df: pd.DataFrame) -> set:
    nfe = pd.to_numeric(df["nfe_used"], errors="coerce")
    return set(df.loc[nfe > 0, "solver"].unique())


def protocols(df: pd.DataFrame, meta: dict) -> list[str]:
    """The run's protocol names (run.json ``protocol`` or ``grid.protocol``, else the rows' ``protocol`` column)."""
    vals = []
    for v in (meta.get("protocol"), (meta.get("grid") or {}).get("protocol")):
        if v:
            vals += list(v) if isinstance(v, (list, tuple)) else [v]
    if not vals and "protocol" in df.columns:
        vals = sorted(map(str, df["protocol"].dropna().unique()))
    return [str(v) if not isinstance(v, dict) else str(v.get("name", v)) for v in dict.fromkeys(map(str, vals))]


def schedule_fraction(df: pd.DataFrame) -> list[str]:
    """Per solver with ``info_lam_reached`` (AIPO's own λ schedule): the share of ok rows that reached Λ. The
    ``info_*`` columns are what a solver reports about itself, so the sentence says so."""
    if "info_lam_reached" not in df.columns:
        return []
    out = []
    for solver, g in df[is_ok(df)].groupby("solver", sort=True):
        reached = pd.to_numeric(g["info_lam_reached"], errors="coerce")
        keep = reached.notna()
        if keep.any():
            hit = reached[keep] >= g.loc[keep, "lam"] * (1 - 1e-6)
            out.append(f"`{solver}` finished its λ schedule in {hit.mean():.0%} of {int(keep.sum())} rows "
                       f"(solver-reported: `info_lam_reached`, not checked by the harness)")
    return out


def regime(df: pd.DataFrame) -> pd.DataFrame:
    """The regime table (module docstring): one row per (dataset, prior, task, λ); empty without the columns."""
    prior, data, bpd = (METRICS.role(r) for r in (PRIOR_TERM, DATA_TERM, BITS_PER_DIM))
    if None in (prior, data, bpd) or not {prior, data} <= set(df.columns):
        return pd.DataFrame()
    ok = df[is_ok(df) & df["solver"].isin(_uses_prior(df))].copy()
    if ok.empty:
        return pd.DataFrame()
    lp = pd.to_numeric(ok[prior], errors="coerce")
    if bpd in ok.columns:
        ok["bpd"] = pd.to_numeric(ok[bpd], errors="coerce")
    else:
        n = pd.to_numeric(ok["image_size"], errors="coerce") ** 2
        ok["bpd"] = -lp / (n * math.log(2))
    ok["ratio"] = pd.to_numeric(ok[data], errors="coerce").abs() / lp.abs().where(lp.abs() > 0)
    keys = [c for c in ("dataset", "prior") if c in ok.columns] + ["task", "lam"]
    g = ok.groupby(keys, sort=True)
    return pd.DataFrame({bpd: g["bpd"].mean(), "data_to_prior": g["ratio"].mean(), "rows": g.size()}).reset_index()


def start_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity to the start: per (dataset, prior, task, λ), over the solvers that declare a ``start`` (they
    differ only in where they start, at equal budget), the per-image spread max − min of the final MAP loss
    (mean and largest over images) and the start that ends lowest most often. Empty with fewer than two starts."""
    from bench.solvers.base import SOLVERS

    def start_of(spec):
        name = str(spec).split("[")[0]
        return getattr(SOLVERS.get(name), "start", None) if name in SOLVERS else None

    ok = df[is_ok(df)]
    starts = {s: start_of(s) for s in ok["solver"].unique()}
    ok = ok[ok["solver"].map(lambda s: starts[s] is not None)]
    if ok["solver"].nunique() < 2:
        return pd.DataFrame()
    keys = [c for c in ("dataset", "prior") if c in ok.columns] + ["task", "lam"]
    per = ok.pivot_table(index=keys + ["seed", "image_id"], columns="solver", values=loss_metric())
    per = per.dropna()
    spread = per.max(axis=1) - per.min(axis=1)
    best = per.idxmin(axis=1)
    out = []
    for key, sp in spread.groupby(level=keys, sort=True):
        b = best.loc[sp.index].value_counts()
        out.append({**dict(zip(keys, key)), "spread_mean": sp.mean(), "spread_max": sp.max(), "images": len(sp),
                    "best": f"{b.index[0]} ({b.iloc[0]}/{len(sp)})"})
    return pd.DataFrame(out)


def start_lines(st: pd.DataFrame) -> list[str]:
    """The start-sensitivity table of the leaderboard (largest λ of each task, the rest in tables/)."""
    from bench.report.tables import markdown

    if st.empty:
        return []
    keys = [c for c in ("dataset", "prior", "task") if c in st.columns]
    top = st.loc[st.groupby(keys)["lam"].idxmax()]
    rows = [[*(str(r[k]) for k in keys), f"{r['lam']:g}", f"{r['spread_mean']:.2f}", f"{r['spread_max']:.2f}",
             r["best"]] for _, r in top.iterrows()]
    return ["## Sensitivity to the start", "",
            "The fixed-Λ Adam solvers differ only in their start; per image, the spread (max − min) of their final "
            "MAP loss at equal budget, in nats, at the largest λ. A spread near zero means one basin (solver "
            "differences there are step noise); a large one means the start decides.", "",
            markdown([*keys, "λ", "mean spread", "largest spread", "lowest most often"], rows), ""]


def regime_lines(reg: pd.DataFrame, link: str | None = None) -> list[str]:
    """The compact regime table: per (dataset, prior, task) at the largest λ."""
    from bench.report.tables import markdown

    if reg.empty:
        return []
    keys = [c for c in ("dataset", "prior", "task") if c in reg.columns]
    bpd = METRICS.role(BITS_PER_DIM)
    top = reg.loc[reg.groupby(keys)["lam"].idxmax()]
    rows = [[*(str(r[k]) for k in keys), f"{r['lam']:g}", f"{r[bpd]:.2f}", f"{r['data_to_prior']:.3f}"]
            for _, r in top.iterrows() if np.isfinite(r[bpd])]
    if not rows:
        return []
    return ["## Regime", "",
            "Where the prior-based solvers' reconstructions sit, at the largest λ: mean −log p_G(x̂) in bits/dim, "
            "and the mean ratio |data log-likelihood| / |log p_G(x̂)| of the MAP loss's two terms at x̂. "
            f"The AIPO paper's regime, for comparison: {PAPER_REGIME}."
            + (f" Every λ: [{link}]({link})." if link else ""), "",
            markdown([*keys, "λ", "bits/dim", "data / prior ratio"],
                     rows), ""]


def run_fact_lines(df: pd.DataFrame, meta: dict, info: dict, problems=()) -> list[str]:
    """The few lines under the title: protocol, budget, size, failures, schedules, provenance, integrity."""
    status = df[STATUS].astype(str).value_counts()
    fails = ", ".join(f"{k} {v}" for k, v in status.items() if k != Status.OK)
    budget = info["budget"]
    prot = protocols(df, meta)
    facts = []
    if prot:
        facts.append(f"- protocol: {', '.join(f'`{p}`' for p in prot)}")
    facts.append(f"- grid `{info['name']}`: budget {budget} prior passes per image (MLE stage {info['mle_steps']} "
                 f"steps); {len(df):,} rows, {int(status.get(Status.OK, 0)):,} ok"
                 + (f", failed: {fails}" if fails else ", no failures"))
    tuned = info.get("tuned")
    if tuned not in (None, "", False, "none", "None") and not (isinstance(tuned, float) and math.isnan(tuned)):
        what = (f"`{tuned.get('file', '?')}` (hash {tuned.get('hash', '?')})" if isinstance(tuned, dict)
                else "parameters in the rows' p_solver_* columns" if tuned is True else str(tuned))
        facts.append(f"- tuned: each solver's step sizes tuned on validation images, {what}")
    sched = schedule_fraction(df)
    if sched:
        facts.append("- " + "; ".join(sched) + " (before the budget rule's final jump to Λ)")
    commit = str(info["git_commit"] or "?")[:12] + (" (dirty)" if info.get("git_dirty") else "")
    wall = f", {info['run_wall_s'] / 60:.1f} min wall" if info.get("run_wall_s") else ""
    facts.append(f"- provenance: commit `{commit}`, device `{info['device'] or '?'}`, torch "
                 f"`{info['torch_version'] or '?'}`{wall}")
    facts.append(f"- integrity: **{len(problems)} problem{'s' if len(problems) > 1 else ''}** (listed below)" if problems
                 else "- integrity: complete and consistent (every planned cell has a row; every file verified)")
    return facts


def findings_text(groups, df: pd.DataFrame) -> str:
    """One short paragraph from the headline tables (:func:`bench.report.headline.headline`): who ranks first per group,
    whether it wins significantly, and what doing nothing scores. A group with nothing to say gets no sentence;
    an absent do-nothing solver (:data:`bench.core.schema.TRIVIAL`) is said once."""
    sent, no_trivial = [], []
    prior_based = _uses_prior(df)
    nothing, quality = role_solver(TRIVIAL), quality_metric()
    digits = decimals(quality)
    for label, t in groups:
        if len(t) < 2:
            continue
        top, second = t.index[0], t.index[1]
        r0, r1 = t.loc[top], t.loc[second]
        s = (f"On {label}, {top} ranks first (mean rank {r0['mean_rank']:.2f} over {int(r0['cells'])} cells, "
             f"{second} next at {r1['mean_rank']:.2f})")
        if r0["wins"] or r0["losses"]:
            s += f" with {int(r0['wins'])} significant wins and {int(r0['losses'])} losses"
        else:
            s += ", without a significant win"
        sig = int(t["wins"].sum())
        s += f"; {sig} of {int(t['tests'].iloc[0])} paired tests are significant."
        sent.append(s)
        d = t[d_quality()].drop(nothing, errors="ignore")
        d = d[[i in prior_based for i in d.index]].dropna()
        if not t[d_quality()].notna().any():
            no_trivial.append(label)
        elif len(d):
            worse = sorted(d.index[d <= 0])
            sent.append(f"Against doing nothing, the prior-based solvers gain {d.min():+.{digits}f} to "
                        f"{d.max():+.{digits}f} {unit_of(quality)} {short_name(quality)}"
                        + (f" ({', '.join(worse)} do not gain)." if worse else "."))
    if no_trivial:
        sent.append(f"`{nothing}` (doing nothing) did not run on {'; '.join(no_trivial)}: no comparison there.")
    return " ".join(sent) if sent else "No group has two solvers: nothing to compare."
