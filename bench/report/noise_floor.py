"""The noise floor of a leaderboard table, and the rule that no win is shown below it (pure functions).

Part of a solver's score is where its optimiser happened to stop, not the algorithm. The *noise floor* of a table
(one task label, budget included, × one metric; rows prior × split × λ) is the typical size of a difference that
is just that. It is measured on *standings*, not raw values: a solver's standing on an instance is its value minus
the median value of the table's solvers on the same instance (prior, split, λ, seed, image), so what every solver
shares (a harder image, a larger noise draw, progress that all solvers make between two budgets) cancels, and what
is left is how much the solver's place relative to the field moves. Per solver of the table, the first measurable of:

1. **budget** — the run has the same instances (task without its budget, MLE length, prior, split, λ, solver,
   seed, image) at a smaller budget: with ``B`` the table's budget and ``B_prev`` the largest smaller one, the
   median over the solver's instances, both rows ok and finite, of ``|standing(B) − standing(B_prev)|``;
2. **seed** — the table has ≥ 2 seeds: the median over the solver's (prior, split, λ, image) and every pair of
   seeds of ``|standing(seed a) − standing(seed b)|``;
3. **late** — the rows carry ``<metric>_late``, the value of the same run's trace at the last trace point at or
   before ``LATE`` × the budget (:func:`with_late_values`; MAP loss only, the traces hold no image): the median over
   the solver's instances of ``|standing at the end − standing at LATE × budget|`` — how much the field's order
   still moves in the last tenth of the budget;
4. **none** — none of these: no floor is measurable and the rule below reduces to significance alone.

Solvers that spend no prior passes (``nfe_used == 0`` on every row: lasso, ``observed``) do not count: they have
no optimiser to be noisy. Their results do not move with the budget at all, and between seeds they move only with
the problem (the seed draws the observation noise), which would make ``observed`` set a seed floor.

Why standings: measured on raw values, the budget floor was mostly the progress every solver still makes between
``B/2`` and ``B`` (100-540 nats on the default grid's traces), and the seed floor mostly the problem's own
variation (the seed index also draws the observation noise and the sensing matrix, :mod:`bench.core.seeding`); either
would have hidden every difference. Why budgets first: a budget pair is the *same* problem (only the stopping point
moves); a seed pair is another draw of it, the fallback. A standing that moves by more than the gap between two
solvers when the stopping point or the draw moves says the ranking of that row is not settled.

The table's floor, in its caption, is the **largest** per-solver floor (solvers without a pair do not count): a
difference above it is above every solver's noise. A row compares two solvers, its best and its runner-up, and
the rule uses *their* floors: the larger of the two (:func:`pair_floor`), so a solver that is erratic elsewhere in
the table (a diverging L-BFGS) does not hide a difference between two steady ones. The CSV files hold every
solver's own floor.

The rule (:func:`shows_win`): a row's best solver wins (alone bold) only when its paired difference against the
runner-up is significant (:func:`bench.report.tables.cell_verdicts`) **and** its paired mean difference in its favour
exceeds the pair's floor; otherwise the row is a tie.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.core.metrics import decimals, loss_metric, unit_of
from bench.core.schema import FLOOR_INSTANCE, STATUS, Status, instance_task

NONE_REASON = "one budget, one seed, no traces"
LATE = 0.9          # the late trace point, as a fraction of the budget


@dataclass(frozen=True)
class Floor:
    """The noise floor of one table and metric (module docstring). ``value`` is None when not measurable."""
    metric: str
    value: float | None
    source: str                          # "budget", "seed", "late" or "none"
    solver: str | None = None            # the solver whose floor is the table's
    pairs: int = 0                       # that solver's pairs
    solvers: int = 0                     # solvers with at least one pair
    budgets: tuple | None = None         # (B, B_prev) of a budget floor
    per_solver: dict = field(default_factory=dict)   # solver -> (floor, pairs)
    reason: str = NONE_REASON            # why there is no floor (source "none")

    @property
    def measurable(self) -> bool:
        return self.value is not None and math.isfinite(self.value)

    def text(self) -> str:
        """The floor with its unit (``"0.82 nats"``), or ``"none"``."""
        if not self.measurable:
            return "none"
        unit = unit_of(self.metric)
        return f"{self.value:.{decimals(self.metric)}f}" + (f" {unit}" if unit else "")

    def caption(self) -> str:
        """One line for the table's caption: the floor, how it was measured, and the rule."""
        if not self.measurable:
            return f"Noise floor: no floor measurable ({self.reason}); bold follows significance alone."
        if self.source == "budget":
            how = (f"median |standing at budget {_g(self.budgets[0])} − at {_g(self.budgets[1])}| over "
                   f"{self.pairs} (image, λ, seed) pairs")
        elif self.source == "seed":
            how = f"median |standing at seed a − at seed b| over {self.pairs} (image, λ) seed pairs"
        else:
            how = (f"median |standing at the end − at {LATE:.0%} of the budget| over {self.pairs} (image, λ, seed) "
                   "instances")
        return (f"Noise floor: {self.text()} ({self.solver}'s {how}; the largest of {self.solvers} solvers'). "
                "A best solver is bold alone only when it is significant and its paired mean difference to the "
                "runner-up exceeds the floor.")


def _g(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def pair_floor(floor: Floor | None, pair=()) -> float | None:
    """The floor a comparison of the solvers in ``pair`` must clear: the larger of their own floors (a solver that
    spends no prior passes has none, 0); the table's floor when no pair is given; None when not measurable."""
    if floor is None or not floor.measurable:
        return None
    if not pair:
        return floor.value
    return max((floor.per_solver[s][0] for s in pair if s in floor.per_solver), default=0.0)


def shows_win(significant: bool, gain: float, floor: Floor | None, pair=()) -> bool:
    """THE bold rule: a significant best wins only if its paired mean difference in its favour (``gain`` > 0 means
    better: lower MAP loss, higher PSNR) exceeds the noise floor of the two solvers compared (:func:`pair_floor`).
    Without a measurable floor: significance."""
    if not significant:
        return False
    value = pair_floor(floor, pair)
    if value is None:
        return True
    return bool(np.isfinite(gain) and gain > value)


def _ok_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ok rows with a finite value, ``_v`` = the row's standing (value − the instance's median over solvers)."""
    ok = df[df[STATUS].astype(str) == Status.OK].copy()
    ok["_v"] = pd.to_numeric(ok[metric], errors="coerce")
    ok = ok[np.isfinite(ok["_v"].to_numpy(dtype=float))]
    inst = [c for c in ("task", "budget", "prior", "split", "lam", "seed", "image_id") if c in ok.columns]
    ok["_v"] = ok["_v"] - ok.groupby([ok[c].astype(str) for c in inst])["_v"].transform("median")
    return ok


def _instance_task(df: pd.DataFrame) -> pd.Series:
    """The task without its budget (:func:`bench.core.schema.instance_task`), as text."""
    return instance_task(df).astype(str)


def _budget_diffs(run: pd.DataFrame, table: pd.DataFrame, metric: str):
    """|standing(B) − standing(B_prev)| per solver instance of ``table``, with (B, B_prev); None without a smaller
    budget."""
    if "budget" not in table.columns or "budget" not in run.columns:
        return None
    budgets = pd.to_numeric(table["budget"], errors="coerce").dropna()
    if budgets.empty:
        return None
    b = float(budgets.max())
    spec = set(_instance_task(table))
    same = run[_instance_task(run).isin(spec)]
    if "mle_steps" in table.columns and "mle_steps" in same.columns:
        same = same[same["mle_steps"].astype(str).isin(set(table["mle_steps"].astype(str)))]
    lower = pd.to_numeric(same["budget"], errors="coerce")
    lower = lower[lower < b]
    if lower.empty:
        return None
    b_prev = float(lower.max())
    key = ["_task"] + FLOOR_INSTANCE + (["mle_steps"] if "mle_steps" in table.columns and "mle_steps" in same.columns else [])
    at_b = _ok_values(table[pd.to_numeric(table["budget"], errors="coerce") == b], metric).assign(
        _task=lambda d: _instance_task(d))
    at_p = _ok_values(same[pd.to_numeric(same["budget"], errors="coerce") == b_prev], metric).assign(
        _task=lambda d: _instance_task(d))
    for d in (at_b, at_p):
        d["image_id"] = d["image_id"].astype(str)
    m = at_b[key + ["_v"]].merge(at_p[key + ["_v"]].drop_duplicates(key), on=key, suffixes=("", "_prev"))
    return (m["_v"] - m["_v_prev"]).abs().groupby(m["solver"]), (b, b_prev)


def _seed_diffs(table: pd.DataFrame, metric: str):
    """|standing(seed a) − standing(seed b)| per solver over (prior, split, λ, image) and seed pairs; None with < 2
    seeds."""
    if "seed" not in table.columns or table["seed"].nunique() < 2:
        return None
    ok = _ok_values(table, metric)
    key = ["prior", "split", "lam", "solver", "image_id"]
    m = ok[key + ["seed", "_v"]].merge(ok[key + ["seed", "_v"]], on=key, suffixes=("", "_b"))
    m = m[m["seed"] < m["seed_b"]]
    return (m["_v"] - m["_v_b"]).abs().groupby(m["solver"])


def _late_diffs(table: pd.DataFrame, metric: str):
    """|standing at the end − standing at LATE × budget| per solver instance; None without ``<metric>_late``."""
    col = f"{metric}_late"
    if col not in table.columns:
        return None
    end = _ok_values(table, metric)
    late = _ok_values(table.assign(**{metric: table[col]}), metric)
    key = [c for c in ("task", "budget") if c in table.columns] + FLOOR_INSTANCE
    for d in (end, late):
        d["image_id"] = d["image_id"].astype(str)
    m = end[key + ["_v"]].merge(late[key + ["_v"]], on=key, suffixes=("", "_late"))
    return (m["_v"] - m["_v_late"]).abs().groupby(m["solver"])


def with_late_values(rows: pd.DataFrame, traces: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """``rows`` with ``<metric>_late`` (default: the MAP loss, what traces hold): per row, its trace's value at the
    last trace point at or before LATE × the row's budget (NaN without such a point, e.g. solvers that record no
    trace)."""
    metric = metric or loss_metric()
    out = rows.copy()
    out[f"{metric}_late"] = np.nan
    if traces is None or traces.empty or not {"cell_id", "nfe", metric} <= set(traces.columns) \
            or not {"cell_id", "budget"} <= set(rows.columns):
        return out
    limit = pd.to_numeric(rows.set_index("cell_id")["budget"], errors="coerce") * LATE
    t = traces[["cell_id", "nfe", metric]].copy()
    t["limit"] = t["cell_id"].map(limit[~limit.index.duplicated()])
    t = t[pd.to_numeric(t["nfe"], errors="coerce") <= t["limit"]]
    last = t.sort_values("nfe").groupby("cell_id")[metric].last()
    out[f"{metric}_late"] = out["cell_id"].map(last).astype(float)
    return out


def table_floor(run: pd.DataFrame, table: pd.DataFrame, metric: str) -> Floor:
    """The noise floor of the table whose rows are ``table`` (module docstring); ``run``: every row of the run,
    where the same instances at a smaller budget are looked up."""
    if "nfe_used" in table.columns:   # solvers that optimise: prior passes on some row
        nfe = pd.to_numeric(table["nfe_used"], errors="coerce").fillna(0)
        table = table[table["solver"].isin(set(table.loc[nfe > 0, "solver"]))]
        if table.empty:
            return Floor(metric, None, "none", reason="no solver spends prior passes")
    budget = _budget_diffs(run, table, metric)
    source, groups, budgets = "none", None, None
    if budget is not None and budget[0].ngroups:
        source, (groups, budgets) = "budget", budget
    else:
        seeds = _seed_diffs(table, metric)
        late = _late_diffs(table, metric)
        if seeds is not None and seeds.ngroups:
            source, groups = "seed", seeds
        elif late is not None and late.ngroups:
            source, groups = "late", late
    if groups is None:
        return Floor(metric, None, "none", reason=NONE_REASON if budget is None else "no pair of ok rows")
    per = {str(s): (float(d.median()), int(len(d))) for s, d in groups if len(d)}
    if not per:
        return Floor(metric, None, "none", reason="no pair of ok rows")
    top = max(per, key=lambda s: (per[s][0], s))
    return Floor(metric, per[top][0], source, top, per[top][1], len(per), budgets, per)


def task_floor(run: pd.DataFrame, task: str, metric: str) -> Floor:
    """The floor of the table of one task label (as the leaderboard's tables: ``run["task"] == task``)."""
    return table_floor(run, run[run["task"] == task], metric)
