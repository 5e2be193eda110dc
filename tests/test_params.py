"""Declared parameters: every solver's and task's declarations are typed and documented, and values are checked
against them when a grid is read."""
from __future__ import annotations

import pytest

from bench.errors import UserError
from bench.registry import as_param
from bench.solvers.base import SOLVERS
from bench.tasks import TASKS


@pytest.mark.parametrize("name", SOLVERS.names())
def test_solver_parameters_are_typed_and_documented(name):
    cls = SOLVERS.get(name)
    for k in cls.parameters:
        p = cls.param(k)
        assert p.default is None or isinstance(p.default, p.type), (k, p)
        assert p.doc, f"{name}: parameter {k} has no doc"
    assert set(cls.tunable) <= set(cls.parameters)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_parameters_have_consistent_types(name):
    for k, v in TASKS.get(name).parameters.items():
        p = as_param(v)
        assert p.default is None or isinstance(p.default, p.type), (k, p)


def test_grid_rejects_wrongly_typed_parameter():
    from bench.grid import parse_grid

    raw = {"name": "t", "priors": ["realnvp-xs"], "tasks": ["denoise"], "lams": [0.5], "budget": 10, "mle_steps": 2}
    with pytest.raises(UserError, match="parameter 'lr' of solver 'latent-lbfgs' must be a number"):
        parse_grid({**raw, "solvers": ["latent-lbfgs[lr=abc]"]})
    with pytest.raises(UserError, match="unknown parameter 'alpah' for solver 'aipo'; valid: K, K_growth"):
        parse_grid({**raw, "solvers": ["aipo[alpah=0.1]"]})
