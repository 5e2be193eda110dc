"""Grid filters: ``--task --prior --solver --lam --split`` narrow every block of a grid; a ``--solver`` value with
parameters that the grid does not list (``aipo[alpha=0.01]``) adds that variant."""
from __future__ import annotations

import math
from dataclasses import replace

from bench.core.errors import UserError
from bench.plan.grid import AXES, Grid


def _split_values(values) -> list[str]:
    out = []
    for v in values or []:
        out += [p.strip() for p in str(v).split(",") if p.strip()]
    return out


def _spec_matcher(kind: str, make):
    """A filter value matches a spec exactly (canonically), or every spec of that name when given bare."""
    from bench.core.registry import parse_spec

    def match(value: str, spec: str) -> bool:
        name, params = parse_spec(value)
        if not params:
            return spec == value or parse_spec(spec)[0] == name
        try:
            return make(value).spec == spec
        except UserError:
            return False
    return match


def apply_filters(grid: Grid, task=None, prior=None, solver=None, lam=None, split=None) -> Grid:
    """Narrow every block to the given values (lists, or comma-separated strings; None = no filter).

    A value that matches nothing in the grid is a UserError naming it and the grid's values. Blocks left with an
    empty axis are dropped; if nothing is left, that is a UserError too. A ``--solver`` value with parameters that
    is not in the grid (``aipo[alpha=0.01]``) is a *variant*: validated (an unknown parameter or a wrong type is a
    UserError naming it and the valid ones) and added to every block that runs its solver.
    """
    from bench.solvers.base import make_solver
    from bench.tasks import make_task

    tests = {}
    wanted = {"tasks": _split_values(task), "priors": _split_values(prior), "solvers": _split_values(solver),
              "lams": _split_values(lam), "splits": _split_values(split)}
    flag = {"tasks": "--task", "priors": "--prior", "solvers": "--solver", "lams": "--lam", "splits": "--split"}
    match_task, match_solver = _spec_matcher("task", make_task), _spec_matcher("solver", make_solver)

    def match_lam(value, lam_):
        try:
            return math.isclose(float(value), lam_, rel_tol=1e-9, abs_tol=1e-12)
        except ValueError:
            raise UserError(f"--lam: {value!r} is not a number") from None

    matchers = {"tasks": match_task, "solvers": match_solver, "lams": match_lam,
                "priors": lambda v, p: v == p, "splits": lambda v, s: v == s}
    from bench.core.registry import parse_spec

    variants = {}   # canonical variant spec -> its solver name
    for v in wanted["solvers"] or []:
        name, params = parse_spec(v)
        if params and not any(match_solver(v, p) for p in grid.values("solvers")) and any(
                parse_spec(p)[0] == name for p in grid.values("solvers")):
            variants[make_solver(v).spec] = name   # raises the parameter's own one-line UserError
    for axis, values in wanted.items():
        if not values:
            continue
        present = grid.values(axis) + (list(variants) if axis == "solvers" else [])
        for v in values:
            if not any(matchers[axis](v, p) for p in present):
                raise UserError(f"{flag[axis]} {v!r} is not in grid {grid.name!r}; valid: "
                                f"{', '.join(str(p) for p in present)}")
        tests[axis] = values

    if not tests:
        return grid
    blocks = []
    for b in grid.blocks:
        vals = {}
        for axis in AXES:
            cur = getattr(b, axis)
            if axis == "solvers":   # variants join the blocks that run their solver
                cur = cur + tuple(v for v, name in variants.items()
                                  if any(parse_spec(p)[0] == name for p in cur) and v not in cur)
            if axis in tests:
                cur = tuple(p for p in cur if any(matchers[axis](v, p) for v in tests[axis]))
            vals[axis] = cur
        if all(vals[a] for a in AXES):
            blocks.append(replace(b, **vals))
    if not blocks:
        raise UserError(f"the filters leave no cell of grid {grid.name!r} (no block has all the requested values)")
    merged = {**grid.filters, **{k: list(v) for k, v in tests.items()}}
    return replace(grid, blocks=tuple(blocks), filters=merged, unfiltered=grid.resolved_unfiltered())


def filters_of(args) -> dict:
    """The filter arguments of an argparse namespace (as given)."""
    return {k: getattr(args, k, None) for k in ("task", "prior", "solver", "lam", "split")}


def add_filter_arguments(p, splits=True) -> None:
    """The ``--task --prior --solver --lam --split`` flags shared by ``run`` and ``tune``."""
    g = p.add_argument_group("filters (repeatable or comma lists; each value must be in the grid)")
    g.add_argument("--task", action="append", metavar="SPEC", help="keep these tasks (a bare name keeps every variant)")
    g.add_argument("--prior", action="append", metavar="NAME", help="keep these priors")
    g.add_argument("--solver", action="append", metavar="SPEC",
                   help="keep these solvers (a bare name keeps every variant)")
    g.add_argument("--lam", action="append", metavar="VALUE", help="keep these λ values")
    if splits:
        g.add_argument("--split", action="append", metavar="SPLIT", help="keep these splits (id, ood)")
