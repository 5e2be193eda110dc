"""Declared parameters: every solver's and task's declarations are typed and documented, and values are checked
against them — type, integer size, range, choices — in one place (``resolve_params``) when a grid is read."""
from __future__ import annotations

import pytest

from bench.core.errors import UserError
from bench.core.registry import Param, as_param, resolve_params
from bench.solvers.base import SOLVERS
from bench.tasks import TASKS


@pytest.mark.parametrize("name", SOLVERS.names())
def test_solver_parameters_are_typed_and_documented(name):
    cls = SOLVERS.get(name)
    for k, p in cls.parameters.items():
        assert isinstance(p, Param)
        assert p.default is None or isinstance(p.default, p.type), (k, p)
        assert p.doc, f"{name}: parameter {k} has no doc"
    assert set(cls.tunable) <= set(cls.parameters)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_parameters_have_consistent_types(name):
    for k, v in TASKS.get(name).parameters.items():
        p = as_param(v)
        assert p.default is None or isinstance(p.default, p.type), (k, p)


def test_grid_rejects_wrongly_typed_parameter():
    from bench.plan.grid import parse_grid

    raw = {"name": "t", "priors": ["realnvp-xs"], "tasks": ["denoise"], "lams": [0.5], "budget": 10, "mle_steps": 2}
    with pytest.raises(UserError, match="parameter 'lr' of solver 'latent-lbfgs' must be a number"):
        parse_grid({**raw, "solvers": ["latent-lbfgs[lr=abc]"]})
    with pytest.raises(UserError, match="unknown parameter 'alpah' for solver 'aipo'; valid: K, K_growth"):
        parse_grid({**raw, "solvers": ["aipo[alpah=0.1]"]})


@pytest.mark.parametrize("rule,good,bad,want", [
    (">0", [1e-9, 3], [0, -1.0, float("nan"), float("inf")], "> 0"),
    (">=0", [0, 2.5], [-1e-9], ">= 0"),
    (">=1", [1, 7], [0.5], ">= 1"),
    ("(0,1)", [0.5], [0.0, 1.0], "in (0, 1)"),
    ("(0,1]", [1.0, 1e-3], [0.0, 1.5], "in (0, 1]"),
    ("[1,64]", [1, 64], [0, 65], "in [1, 64]"),
    ("<=5", [-3, 5], [5.5], "<= 5"),
])
def test_declared_range_is_checked_with_one_line_naming_the_value(rule, good, bad, want):
    declared = {"x": Param(float, 0.5 if rule != "[1,64]" else 1.0, range=rule, doc="what x is")}
    for v in good:
        assert resolve_params("solver", "s", declared, {"x": v})["x"] == v
    for v in bad:
        with pytest.raises(UserError) as e:
            resolve_params("solver", "s", declared, {"x": v})
        assert str(e.value) == f"parameter 'x' of solver 's' must be {want}, got {float(v)!r} (what x is)"


def test_declared_choices_and_unset_values():
    declared = {"opt": Param(str, "adam", choices=("adam", "gd")), "lr": Param(float, None, range=">0")}
    assert resolve_params("solver", "s", declared, {"opt": "gd"}) == {"opt": "gd", "lr": None}
    with pytest.raises(UserError, match=r"^parameter 'opt' of solver 's' must be one of adam, gd, got 'sgd'$"):
        resolve_params("solver", "s", declared, {"opt": "sgd"})
    with pytest.raises(UserError, match=r"^parameter 'lr' of solver 's' must be > 0, got -1$"):
        resolve_params("solver", "s", declared, {"lr": -1})


def test_malformed_range_fails_when_declared():
    for rule in ("0<x", ">zero", "(1,0)", "[1;2]"):
        with pytest.raises(ValueError, match="malformed parameter range"):
            Param(float, 1.0, range=rule)


@pytest.mark.parametrize("spec,needle", [
    ("aipo[alpha=-1.0]", "parameter 'alpha' of solver 'aipo' must be > 0, got -1.0"),
    ("aipo[optimizer=sgd]", "parameter 'optimizer' of solver 'aipo' must be one of adam, gd, got 'sgd'"),
    ("latent-lbfgs[penalty=l1]", "parameter 'penalty' of solver 'latent-lbfgs' must be one of l2, l2sq, got 'l1'"),
    ("lasso-dct[tol=0]", "parameter 'tol' of solver 'lasso-dct' must be > 0, got 0.0"),
    ("lasso-dct[alpha=-0.1]", "parameter 'alpha' of solver 'lasso-dct' must be >= 0, got -0.1"),
    ("random-init[temperature=-1.0]", "parameter 'temperature' of solver 'random-init' must be >= 0, got -1.0"),
])
def test_shipped_solver_declarations_refuse_bad_values(spec, needle):
    from bench.solvers.base import make_solver

    with pytest.raises(UserError) as e:
        make_solver(spec)
    assert needle in str(e.value) and len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("spec,needle", [
    ("inpaint[frac=1.5]", "parameter 'frac' of task 'inpaint' must be in (0, 1), got 1.5"),
    ("inpaint[block=0]", "parameter 'block' of task 'inpaint' must be >= 1, got 0"),
    ("denoise[sigma=0.0]", "parameter 'sigma' of task 'denoise' must be > 0, got 0.0 (noise standard deviation; "
                           "the MAP objective's noise likelihood divides by 2*sigma^2)"),
])
def test_shipped_task_declarations_refuse_bad_values(spec, needle):
    from bench.tasks import make_task

    with pytest.raises(UserError) as e:
        make_task(spec)
    assert needle in str(e.value)
