"""The task contract (tests/kit/task_contract.py), parametrized over every registered task and every task spec of the
smoke grid: adjointness, least-norm, projection, observed image, operator norm, declared hooks."""
from __future__ import annotations

import pytest

from bench.plan.grid import load_grid
from bench.tasks import TASKS
from kit import task_contract as tc

SPECS = sorted(set(TASKS.names()) | set(load_grid("smoke").values("tasks")))


@pytest.mark.parametrize("spec", SPECS)
def test_declarations(spec):
    tc.check_declarations(spec)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("check", tc.ALL_CHECKS, ids=lambda f: f.__name__.removeprefix("check_"))
def test_contract(check, spec, c):
    check(spec, c)


def test_point_constraint_means_invertible():
    """Tasks declaring a point constraint: the least-norm solution is the whole constraint set, f(x) = x."""
    for name in TASKS.names():
        p = tc.problem64(name)
        if p.task.point_constraint:
            x = tc.images(3).double()
            assert (p.forward(x) - x).abs().max() == 0
