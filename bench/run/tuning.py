"""Step-size tuning on validation images (README contract 5: declared parameters, an explicit protocol).

Protocol (``python -m bench tune --grid NAME``)
- **What is tuned:** only the parameters a solver lists in its ``tunable`` attribute (step sizes), separately for
  every (solver, task, prior) of the grid: a step size that suits denoising with one flow need not suit compressed
  sensing with another, and each combination is cheap at the embedded scale.
- **Search:** coordinate search, one pass over the tunable parameters in declared order; each is searched over
  ``value × factors`` (default ×{0.25, 0.5, 1, 2, 4}, a log grid around the paper default, or around the value the
  grid's solver spec sets) with the parameters already tuned held at their chosen values. Integer parameters are
  rounded (≥ 1) and de-duplicated.
- **Data:** the first ``--images`` images (default 4) of the grid dataset's ``val`` split — for ``lfw-faces`` the
  10 validation faces, disjoint from the 20 test faces the benchmark reports on — at the grid's image size, with the
  grid's λ values, seed (the first one), budget and MLE steps: the same budget the benchmark gives.
- **Objective:** the benchmark's primary metric, the MAP loss L(x̂; λ) = ||y − f(x̂)||² − λ·log p_G(x̂)
  (AIPO eq. 3) scored by the harness, averaged over validation images × λ (so larger λ, whose losses are larger in
  magnitude, weigh more — the same for every candidate). A candidate with any failed row (error, overspend,
  non-finite) is discarded; ties go to the candidate closest to the starting value. Solvers that do not use the
  prior (Lasso) are tuned on the same objective, so their tuned values are the ones that fit the benchmark's loss.

Output: a JSON file whose ``params`` entry maps ``solver spec → task spec → prior → {param: value}``, plus the
protocol, the validation image ids and every candidate's objective. ``run --tuned FILE`` applies it: the rows of a
tuned (solver, task, prior) get ``tuned = True`` and their ``p_solver_*`` columns hold the tuned values; run.json
records the file and its hash. Candidate units are ordinary work units written under a work directory, so an
interrupted tuning run resumes.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core.errors import UserError
from bench.core.metrics import loss_metric
from bench.core.schema import NOT_FAILURES, Status
from bench.plan.grid import Grid
from bench.store import parts as store

DEFAULT_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_IMAGES = 4
OBJECTIVE = ("mean MAP loss L(x; lam) = -log p_e(y - f(x)) - lam * log p_G(x) (AIPO eq. 3) over validation images x "
             "the grid's lam values; candidates with any failed row are discarded")


# ----------------------------------------------------------------------------------------------- tuned files
@dataclass
class Tuned:
    params: dict   # {solver spec: {task spec: {prior: {param: value}}}}
    path: str
    hash: str

    def record(self) -> dict:
        return {"file": self.path, "hash": self.hash, "params": self.params}


def params_hash(params: dict) -> str:
    from bench.core.identity import sha256_json

    return sha256_json(params, 16)


def normalize_params(params: dict, where: str = "tuned file") -> dict:
    """Canonical solver and task keys; parameter names and types checked against each solver's declaration."""
    from bench.core.registry import parse_spec
    from bench.solvers.base import SOLVERS, make_solver
    from bench.tasks import make_task

    if not isinstance(params, dict):
        raise UserError(f"{where}: expected a table solver -> task -> prior -> {{param: value}}")
    out = {}
    for s_key, tasks in params.items():
        solver = make_solver(s_key).spec
        name, base = parse_spec(s_key)
        cls = SOLVERS.get(name)
        if not isinstance(tasks, dict):
            raise UserError(f"{where}: entry {s_key!r} must map task specs to priors")
        for t_key, priors in tasks.items():
            task = make_task(t_key).spec
            if not isinstance(priors, dict):
                raise UserError(f"{where}: entry {s_key!r} / {t_key!r} must map priors to parameters")
            for prior, values in priors.items():
                if not isinstance(values, dict):
                    raise UserError(f"{where}: entry {s_key!r} / {t_key!r} / {prior!r} must be {{param: value}}")
                resolved = cls(**{**base, **values}).params  # validates names and types
                out.setdefault(solver, {}).setdefault(task, {})[prior] = {k: resolved[k] for k in values}
    return out


def load_tuned(path) -> Tuned:
    """Read a tuning file written by ``bench tune`` (or a bare ``{solver: {task: {prior: {param: value}}}}``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"tuned file {str(p)!r} not found (write one with: python -m bench tune --grid NAME --out {p})")
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"tuned file {str(p)!r} is not valid JSON ({e})") from None
    params = raw.get("params", raw) if isinstance(raw, dict) else raw
    params = normalize_params(params, where=f"tuned file {str(p)!r}")
    return Tuned(params=params, path=str(p), hash=params_hash(params))


# --------------------------------------------------------------------------------------------------- search
def candidates(value, factors) -> list:
    """``value × factors`` (ints rounded, ≥ 1), sorted and de-duplicated; [value] if value is 0 or not numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0:
        return [value]
    if isinstance(value, int):
        return sorted({max(1, int(round(value * f))) for f in factors})
    return sorted({float(value * f) for f in factors})


def _pick(cands: list[dict], start) -> dict | None:
    ok = [c for c in cands if math.isfinite(c["objective"])]
    if not ok:
        return None

    def dist(v):
        try:
            return abs(math.log(v / start)) if start not in (0, None) else 0.0
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0
    return min(ok, key=lambda c: (c["objective"], dist(c["value"])))


def _objective(rows: pd.DataFrame) -> tuple[float, int]:
    fails = int((~rows["status"].isin(NOT_FAILURES)).sum())
    if fails or not (rows["status"] == Status.OK).any():
        return math.inf, fails
    return float(rows[loss_metric()].mean()), 0


def tune_grid(grid: Grid, out_file, *, device: str = "cpu", executor=None, factors=DEFAULT_FACTORS,
              n_images: int = DEFAULT_IMAGES, work_dir=None, prior_dir: str | None = None, imports=(),
              progress: bool = True, log=None, isolate: bool = True) -> dict:
    """Run the tuning protocol (module docstring) and write ``out_file``; returns the written record. The candidates
    are planned like a run's units (:func:`bench.plan.units.plan_cells` on the validation images).
    ``isolate=False``: solvers run in this process (unsafe; debugging only, as ``run --no-isolation``)."""
    from bench.core.provenance import now_iso
    from bench.core.registry import parse_spec, protocol_values
    from bench.plan.units import make_unit, plan_cells, start_run
    from bench.run.executors import LocalExecutor
    from bench.solvers.base import SOLVERS
    from bench.store.manifest import check_writable, prepare_out_dir

    log = log or (lambda m: print(m, file=sys.stderr))
    executor = executor or LocalExecutor()
    out_file = Path(out_file)
    work_dir = Path(work_dir) if work_dir else out_file.with_name(out_file.stem + "-units")
    if not factors or any((not isinstance(f, (int, float))) or f <= 0 for f in factors):
        raise UserError(f"--factors must be positive numbers, got {factors!r}")
    if n_images < 1:
        raise UserError(f"--images must be >= 1, got {n_images}")
    ctx, facts = start_run(grid, label=f"tune:{grid.name}", device=device, isolate=isolate, prior_dir=prior_dir,
                           imports=imports)
    check_writable(out_file.parent)
    check_writable(work_dir)
    plans = [p for p in plan_cells(grid, ctx, validation=n_images) if SOLVERS.get(parse_spec(p.solver)[0]).tunable]
    if not plans:
        raise UserError(f"no solver of grid {grid.name!r} declares tunable parameters; nothing to tune")
    combos = {(p.solver, p.task, p.prior_spec): p for p in plans}
    validation = plans[0].source

    chosen = {k: {} for k in combos}
    search = []
    prepare_out_dir(work_dir)
    stage = 0
    while True:
        jobs = []  # (combo, param, value, spec)
        for (solver, task, prior), plan in combos.items():
            name, base = parse_spec(solver)
            cls = SOLVERS.get(name)
            if stage >= len(cls.tunable):
                continue
            param = cls.tunable[stage]
            start = cls(**{**protocol_values(cls.parameters, grid.protocol), **base,
                           **chosen[(solver, task, prior)]}).params[param]
            for v in candidates(start, factors):
                spec = make_unit(grid, ctx, plan, {**chosen[(solver, task, prior)], param: v})
                jobs.append(((solver, task, prior), param, start, v, spec))
        if not jobs:
            break
        results = _run_jobs([j[-1] for j in jobs], work_dir, executor, progress,
                            desc=f"tune {grid.name} stage {stage + 1}")
        by_combo: dict = {}
        for combo, param, start, v, spec in jobs:
            obj, fails = _objective(results[spec.unit_id])
            by_combo.setdefault((combo, param, start), []).append({"value": v, "objective": obj, "failures": fails})
        for (combo, param, start), cands in by_combo.items():
            best = _pick(cands, start)
            value = best["value"] if best else start
            chosen[combo][param] = value
            solver, task, prior = combo
            search.append({"solver": solver, "task": task, "prior": prior, "param": param, "start": start,
                           "candidates": [{**c, "objective": c["objective"] if math.isfinite(c["objective"])
                                           else None} for c in cands],
                           "chosen": value, "note": "" if best else "every candidate failed; kept the start value"})
            if not best:
                log(f"warning: tuning {solver} / {task} / {prior}: every candidate of {param} failed; keeping {start}")
        stage += 1

    params = {}
    for (solver, task, prior), vals in chosen.items():
        params.setdefault(solver, {}).setdefault(task, {})[prior] = vals
    record = {
        "format": 1, "grid_name": grid.name, "grid_hash": grid.hash, "objective": OBJECTIVE,
        "protocol": "coordinate search, one pass over each solver's `tunable` parameters in declared order, each "
                    "over start x factors, per (solver, task, prior), same budget as the grid",
        "factors": list(factors), "validation": {"dataset": validation.dataset, "split": validation.dataset_split,
                                                 "image_ids": list(validation.image_ids), "seed": plans[0].seed},
        "budget": grid.budget, "mle_steps": grid.mle_steps, "grid_protocol": grid.protocol,
        "lams": sorted(grid.values("lams")), "created_at": now_iso(), "git_commit": facts["git_commit"],
        "versions": facts["versions"],
        "params": params, "params_hash": params_hash(params), "search": search,
    }
    prepare_out_dir(out_file.parent)
    store._atomic_bytes(out_file, (json.dumps(record, indent=2) + "\n").encode())
    return record


def _run_jobs(specs, work_dir, executor, progress, desc) -> dict:
    """Run the specs not already finished in ``work_dir``; return {unit_id: rows DataFrame}."""
    from bench.plan.batches import default_max_rows, plan_batches
    from bench.run.runner import run_units
    from bench.store.resume import remove_unit

    out, todo = {}, []
    for s in {s.unit_id: s for s in specs}.values():
        try:
            out[s.unit_id] = store.read_unit(work_dir, s.unit_id)
        except FileNotFoundError:
            todo.append(s)
        except Exception:  # noqa: BLE001 -- corrupt part file: recompute
            remove_unit(Path(work_dir), s.unit_id)
            todo.append(s)
    batches = plan_batches(todo, todo, default_max_rows(todo[0].device)) if todo else []
    for spec, _ in run_units(executor, batches, work_dir, progress=progress, desc=desc, lost_is_error=True):
        out[spec.unit_id] = store.read_unit(work_dir, spec.unit_id)
    return out
