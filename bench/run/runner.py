"""The grid runner: grid → work units → Parquet part files, with resume and provenance.

Data path (docs/ARCHITECTURE.md): a validated :class:`~bench.plan.grid.Grid` is planned into frozen
:class:`~bench.plan.units.UnitSpec` work units (:mod:`bench.plan.units`); what the results directory already holds
decides which cells are left (:mod:`bench.store.resume`); :func:`run_units` hands the units to an executor
(:mod:`bench.run.executors`), which runs :func:`bench.run.unit.execute_unit` for each and writes its files with
:func:`bench.store.parts.write_unit`; ``DIR/run.json`` (:mod:`bench.store.manifest`) records what ran. ``bench tune`` uses the
same :func:`run_units`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.device import tf32_allowed
from bench.core.errors import DiskFull, UserError, one_line
from bench.core.provenance import now_iso
from bench.core.schema import NOT_FAILURES, UNIT_FAILURES, Status
from bench.plan.estimate import estimate_wall, planned_passes
from bench.plan.grid import Grid
from bench.plan.batches import default_max_rows, plan_batches
from bench.plan.units import plan_units, start_run
from bench.run.unit import error_rows, execute_batch, summarize
from bench.store import parts as store
from bench.store.manifest import (RunLock, check_writable, compatibility_problems, read_run_json, refuse_foreign_dir,
                                  refuse_links, write_run_json)
from bench.store.resume import clean_dir, planned_keys, reduce_to_missing, remove_unit, scan_dir, stale_rows


def run_units(executor, batches, out_dir, *, progress: bool = True, desc: str = "", lost_is_error: bool = False):
    """Run ``batches`` (:class:`~bench.plan.batches.UnitBatch`) on ``executor`` into ``out_dir``; yield
    ``(spec, summary)`` for every unit written, as batches finish (any order).

    A batch the executor itself lost (its worker died, the scheduler failed) becomes error rows ("executor: ...")
    for the units it was to write, so every unit handed in yields rows — or, with ``lost_is_error``, stops the loop
    with a UserError and writes nothing for it (``tune``: a lost candidate must not score as a failed one). Shows a
    progress bar of units with the running failure count."""
    bar, failures = None, 0
    total = sum(len(b.write) for b in batches)
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="unit", desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    try:
        for batch, result in executor.map(execute_batch, batches, out_dir):
            if isinstance(result, DiskFull):   # no rows can be written either: stop, keep what is finished
                raise result
            if isinstance(result, BaseException):
                if lost_is_error:
                    raise UserError(f"units {', '.join(sorted(batch.write))} failed in the executor: "
                                    f"{one_line(result)}")
                lost, result, written = result, [], store.unit_ids(out_dir)
                for spec in batch.to_write:   # units the batch wrote before it was lost keep their rows
                    if spec.unit_id in written:
                        rows = store.read_unit(out_dir, spec.unit_id)
                    else:
                        rows = error_rows(spec, "executor: " + one_line(lost))
                        store.write_unit(out_dir, spec.unit_id, rows)
                    result.append(summarize(spec.unit_id, rows, 0.0))
            for spec, summary in zip(batch.to_write, result):
                failures += sum(n for s, n in summary["status"].items() if s not in NOT_FAILURES)
                if bar is not None:
                    bar.update(1)
                    if failures:
                        bar.set_postfix(failures=failures, refresh=False)
                yield spec, summary
    finally:
        if bar is not None:
            bar.close()


@dataclass
class RunSummary:
    out_dir: str
    units_planned: int = 0
    units_run: int = 0
    units_skipped: int = 0
    rows_written: int = 0
    failures: dict = field(default_factory=dict)   # status -> rows (over every planned cell, old and new)
    failures_earlier: int = 0
    units_failed: dict = field(default_factory=dict)   # timeout / oom / crashed -> units of this run
    wall_s: float = 0.0
    image_passes: int = 0      # image-passes of the prior planned for the units this invocation ran

    @property
    def n_failures(self) -> int:
        return sum(self.failures.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.n_failures else 0

    def line(self) -> str:
        fail = f"{self.n_failures} failures"
        if self.failures:
            fail += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) + ")"
        if self.failures_earlier:
            fail += f", {self.failures_earlier} of them from earlier runs (--retry-failed reruns them)"
        if self.units_failed:
            n = sum(self.units_failed.values())
            fail += (f", {n} unit{'s' if n != 1 else ''} stopped by its limits or its solver process ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(self.units_failed.items())) + ")")
        rate = (f", {self.image_passes:,} image-passes of the prior ({self.passes_per_s:,.0f}/s)"
                if self.image_passes else "")
        return (f"{self.rows_written} rows written, {self.units_run} units run, {self.units_skipped} already done, {fail}, "
                f"{self.wall_s:.1f} s wall{rate}; results in {self.out_dir}")

    @property
    def passes_per_s(self) -> float:
        """Image-passes of the prior per second of this invocation's wall time (planning and writing included)."""
        return self.image_passes / self.wall_s if self.wall_s > 0 else float("nan")


def run_grid(grid: Grid, out_dir, *, device: str = "cpu", executor=None, tuned=None, prior_dir: str | None = None,
             resume_anyway: bool = False, retry_failed: bool = False, progress: bool = True, dry_run: bool = False,
             imports=(), argv=None, log=None, tf32: bool = False, deterministic: bool = False,
             isolate: bool = True, batch_rows: int | None = None) -> RunSummary:
    """Plan, check, execute and summarise a grid run into ``out_dir``. ``tuned`` is a
    :class:`bench.run.tuning.Tuned` (or None); ``tf32`` and ``deterministic`` say how every unit computes
    (:func:`bench.core.device.numerics_mode`, applied in the process that runs the unit); ``batch_rows`` caps the
    solve rows of a batch of units (:mod:`bench.plan.batches`; default per device). Raises UserError before any
    work for every input problem."""
    from bench.run.executors import LocalExecutor

    log = log or (lambda m: print(m, file=sys.stderr))
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    ctx, facts = start_run(grid, device=device, tf32=tf32, deterministic=deterministic, isolate=isolate,
                           prior_dir=prior_dir, imports=imports)
    check_writable(out_dir)
    units = plan_units(grid, ctx, tuned=tuned.params if tuned else None)
    executor = executor or LocalExecutor()
    record = {
        "format": 1, "grid_name": grid.name, "grid_hash": grid.hash, "grid_source": grid.source,
        "grid": grid.resolved_unfiltered(), "git_commit": facts["git_commit"], "git_dirty": facts["git_dirty"],
        "versions": facts["versions"], "tuned": tuned.record() if tuned else None,
    }
    refuse_foreign_dir(out_dir)
    refuse_links(out_dir)
    lock = None if dry_run else RunLock(out_dir)
    try:
        flags = {"tf32": tf32_allowed(device, tf32), "deterministic": bool(deterministic)}
        return _run_locked(grid, out_dir, units, record, facts["started_at"], executor, device=device, flags=flags,
                           resume_anyway=resume_anyway, retry_failed=retry_failed, progress=progress,
                           batch_rows=batch_rows or default_max_rows(device),
                           dry_run=dry_run, argv=argv, log=log, t_start=t_start)
    except DiskFull as e:
        raise DiskFull(f"{e}; {len(store.unit_ids(out_dir))} finished units are kept in {str(out_dir)!r}: free "
                       f"space and rerun the same command to resume") from None
    finally:
        if lock is not None:
            lock.release()


def _run_locked(grid, out_dir, units, record, started, executor, *, device, flags, resume_anyway,
                retry_failed, progress, batch_rows, dry_run, argv, log, t_start) -> RunSummary:
    """The part of :func:`run_grid` that reads and writes ``out_dir`` (under its :class:`RunLock` unless dry)."""
    commit, dirty = record["git_commit"], record["git_dirty"]
    prev = read_run_json(out_dir) if out_dir.exists() else None
    problems = compatibility_problems(prev, record, bool(store.unit_ids(out_dir)))
    scan = scan_dir(out_dir, planned={u.unit_id for u in units})
    stale = stale_rows(scan, planned_keys(units))
    if len(stale):
        ex = stale.iloc[0]
        problems.append(f"{len(stale)} of its finished rows are for cells of this run but were computed with other "
                        f"solver parameters or another prior checkpoint (e.g. {ex['solver']} on {ex['task']} / "
                        f"{ex['prior']}): the code or a checkpoint changed since")
    if problems and not resume_anyway:
        raise UserError(f"refusing to mix results: {str(out_dir)!r} " + "; ".join(problems)
                        + " — use another --out, or --resume-anyway to add to it knowingly")
    summary = RunSummary(out_dir=str(out_dir), units_planned=len(units))
    if dry_run:
        to_run, skipped = reduce_to_missing(units, scan.done)
        rows = sum(u.rows for u in to_run)
        passes, est = estimate_wall(plan_batches(units, to_run, batch_rows), getattr(executor, "workers", 1))
        log(f"grid {grid.name!r} (hash {grid.hash}): {len(units)} units, {len(to_run)} to run ({rows} rows, "
            f"{passes:,} image-passes of the prior), {len(skipped)} already done; executor {executor.describe()}, "
            f"device {device}; estimated wall time {est / 60:.1f} min (from a short calibration on this machine)")
        summary.units_skipped = len(skipped)
        return summary

    if problems:
        log(f"warning: --resume-anyway: {str(out_dir)!r} " + "; ".join(problems))
    this_run = {"started_at": started, "device": str(device), "executor": executor.describe(), "batch_rows": batch_rows,
                **flags, "isolated": all(u.run.isolate for u in units),
                "filters": grid.filters, "argv": list(argv or []),
                "git_commit": commit, "git_dirty": dirty, "grid_hash": grid.hash,
                "planned_cells": sorted(c for u in units for c in u.cell_ids())}
    if problems:
        this_run["resumed_anyway_despite"] = problems
    record["created_at"] = (prev or {}).get("created_at", started)
    record["runs"] = (prev or {}).get("runs", []) + [this_run]
    write_run_json(out_dir, record)

    clean_dir(out_dir, scan, warn=lambda m: log(f"warning: {m}"))
    rows = scan.rows  # readable units only; the corrupt ones were just removed
    planned_cells = {c for u in units for c in u.cell_ids()}
    if retry_failed:   # units with failed (or skipped) rows whose cells this run plans, so recomputes
        by_unit = rows.groupby("unit_id")["cell_id"].agg(set)
        failed = sorted(u for u in set(rows.loc[rows["status"] != Status.OK, "unit_id"]) if by_unit[u] <= planned_cells)
        for uid in failed:
            remove_unit(out_dir, uid)
        rows = rows[~rows["unit_id"].isin(failed)]
    done = dict(zip(rows["cell_id"], rows["status"]))
    to_run, skipped = reduce_to_missing(units, done)
    batches = plan_batches(units, to_run, batch_rows)
    batches.sort(key=lambda b: -b.rows)  # big batches first: shorter tail with workers
    summary.units_skipped = len(skipped)
    run_cells = {c for u in to_run for c in u.cell_ids()}
    earlier = {}
    for c in planned_cells - run_cells:
        s = done.get(c, Status.OK)
        if s not in NOT_FAILURES:
            earlier[s] = earlier.get(s, 0) + 1
    summary.failures = dict(earlier)
    summary.failures_earlier = sum(earlier.values())
    summary.image_passes = planned_passes([u for b in batches for u in b.units])

    for _, result in run_units(executor, batches, out_dir, progress=progress, desc=grid.name):
        summary.units_run += 1
        summary.rows_written += result["rows"]
        for s, n in result["status"].items():
            if s not in NOT_FAILURES:
                summary.failures[s] = summary.failures.get(s, 0) + n
            if s in UNIT_FAILURES:
                summary.units_failed[s] = summary.units_failed.get(s, 0) + 1
    summary.wall_s = time.perf_counter() - t_start
    this_run.update(finished_at=now_iso(), wall_s=round(summary.wall_s, 3), units_run=summary.units_run,
                    units_skipped=summary.units_skipped, rows_written=summary.rows_written,
                    failures=summary.failures, image_passes=summary.image_passes,
                    units_failed=summary.units_failed)
    write_run_json(out_dir, record)
    return summary
