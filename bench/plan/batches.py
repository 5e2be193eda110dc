"""Batches of work units: the units a worker solves at once, their prior passes batched together.

A unit (:class:`~bench.plan.units.UnitSpec`) is the grid's bookkeeping: one solver over one split's images × its λ
values for one task and seed, 10–60 rows in the shipped grids. Prior passes are cheaper per image in larger batches
(a 28×28 flow pass costs 1.3–1.4× less per image at 120 rows than at 20 on a 2-core CPU, README "Performance"), so
units that share everything a pass depends on — the prior, the solver with its parameters, the budget, the MLE
length, the protocol and how they compute — are solved together as one :class:`UnitBatch` (tasks, splits, seeds
and λ may differ), up to ``max_rows`` solve rows (:data:`DEFAULT_MAX_ROWS` per device). Each unit keeps its identity,
rows and files; :class:`~bench.run.passes.PassBatcher` batches the members' passes.

Batches are planned from the whole planned grid, so a batch has the same members whether or not a run was
interrupted: a resumed run recomputes the members of a batch that were already written (and writes only the
others), and its numbers equal an uninterrupted run's. A killed batch loses at most its own rows' work.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from bench.core.identity import sha256_json

# Solve rows per batch unless ``run --batch-rows`` says: the largest pass batch that was still faster per image on a
# 2-core CPU for the shipped priors (README "Performance"), and a GPU's larger appetite.
DEFAULT_MAX_ROWS = {"cpu": 256, "cuda": 1024}


def default_max_rows(device: str) -> int:
    return DEFAULT_MAX_ROWS["cuda" if str(device).startswith("cuda") else "cpu"]


@dataclass(frozen=True)
class UnitBatch:
    """Units solved at once (``units``, in a fixed order: their place in each batched pass) of which ``write``
    (unit ids) are written; the others are computed only so that the batch is the planned one."""

    units: tuple
    write: frozenset

    @property
    def unit_id(self) -> str:
        """An id for logs and executors' task names (a hash of the members' unit ids)."""
        return sha256_json([u.unit_id for u in self.units], 16)

    @property
    def device(self) -> str:
        return self.units[0].device

    @property
    def rows(self) -> int:
        """Result rows it writes."""
        return sum(u.rows for u in self.units if u.unit_id in self.write)

    @property
    def to_write(self) -> list:
        return [u for u in self.units if u.unit_id in self.write]


def solve_rows(unit) -> int:
    """Rows of a unit's solve: images × λ, or images alone for a solver whose answer does not depend on λ."""
    from bench.core.registry import parse_spec
    from bench.solvers.base import SOLVERS

    lam_free = SOLVERS.get(parse_spec(unit.solver)[0]).lam_independent
    return len(unit.image_ids) * (1 if lam_free else len(unit.lams))


def batch_key(unit) -> str:
    """What the members of a batch share: everything a prior pass and the solver's code path depend on."""
    return json.dumps([unit.prior, unit.prior_sha256, unit.solver, unit.solver_params, unit.budget, unit.mle_steps,
                       unit.protocol, unit.image_size, unit.device], sort_keys=True, default=str)


def group_units(units, max_rows: int) -> list[tuple]:
    """``units`` (in order) split into batches of units with the same :func:`batch_key`, each batch at most
    ``max_rows`` solve rows unless one unit alone is larger; a key's units are spread evenly over the fewest
    batches that hold them."""
    by_key: dict = {}
    for u in units:
        by_key.setdefault(batch_key(u), []).append(u)
    out = []
    for members in by_key.values():
        total = sum(solve_rows(u) for u in members)
        target = total / max(1, math.ceil(total / max(1, int(max_rows))))
        batch, rows = [], 0
        for u in members:
            r = solve_rows(u)
            if batch and (rows + r > max_rows or rows >= target):
                out.append(tuple(batch))
                batch, rows = [], 0
            batch.append(u)
            rows += r
        if batch:
            out.append(tuple(batch))
    return out


def plan_batches(planned, to_run, max_rows: int) -> list[UnitBatch]:
    """The batches that write ``to_run``: a unit of the plan runs with the members the whole plan gives it (done
    members are recomputed, not written), a unit reduced to its missing λ values (not in ``planned``) with the other
    such units."""
    todo = {u.unit_id for u in to_run}
    planned_ids = {u.unit_id for u in planned}
    out = [UnitBatch(g, frozenset(u.unit_id for u in g if u.unit_id in todo))
           for g in group_units(planned, max_rows) if any(u.unit_id in todo for u in g)]
    rest = [u for u in to_run if u.unit_id not in planned_ids]
    out += [UnitBatch(g, frozenset(u.unit_id for u in g)) for g in group_units(rest, max_rows)]
    return out
