"""Protocols: one declaration per parameter, selected by the grid, part of every unit's identity."""
from __future__ import annotations

import pytest
import torch

from bench.core.errors import UserError
from bench.core.protocols import DEFAULT, PROTOCOLS
from bench.core.registry import protocol_values
from bench.plan.grid import load_grid, parse_grid
from bench.solvers.aipo import first_round_steps
from bench.solvers.base import SOLVERS
from bench.solvers.optim import Adam, decayed
from bench.tasks import make_task

BASE = {"priors": ["realnvp-xs"], "tasks": ["denoise"], "lams": [0.5], "solvers": ["aipo"], "budget": 40,
        "mle_steps": 10, "images_per_split": 1, "splits": ["id"]}


def test_grid_protocol_default_and_bad_name():
    assert parse_grid(dict(BASE)).protocol == DEFAULT == "robust"
    assert parse_grid({**BASE, "protocol": "paper"}).protocol == "paper"
    with pytest.raises(UserError, match="protocol.*'fast'.*robust, paper"):
        parse_grid({**BASE, "protocol": "fast"})


def test_protocol_is_part_of_the_identity_and_sets_declared_values():
    from bench.plan.units import plan_units

    robust = plan_units(parse_grid(dict(BASE)))[0]
    paper = plan_units(parse_grid({**BASE, "protocol": "paper"}))[0]
    assert robust.unit_id != paper.unit_id and robust.protocol == "robust" and paper.protocol == "paper"
    assert robust.solver == paper.solver == "aipo"                       # the solver column is the grid's spec
    assert robust.solver_params["lr_decay"] > 0 and paper.solver_params["lr_decay"] == 0
    assert robust.solver_params["K"] == 0 and paper.solver_params["K"] == 40
    assert paper.solver_params["mle_optimizer"] == "gd" and paper.solver_params["mle_lr"] == 3e-4


def test_grid_spec_wins_over_the_protocol():
    from bench.plan.units import plan_units

    spec = plan_units(parse_grid({**BASE, "protocol": "paper", "solvers": ["aipo[lr_decay=50.0]"]}))[0]
    assert spec.solver_params["lr_decay"] == 50.0


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_protocol_value_is_a_valid_parameter(name):
    for solver, cls in SOLVERS.items():
        cls(**protocol_values(cls.parameters, name))          # raises on a bad value or unknown name


def test_step_decay():
    assert decayed(0.05, 0.0, 500) == 0.05
    assert decayed(0.05, 100.0, 1) == 0.05 and decayed(0.05, 100.0, 101) == pytest.approx(0.025)
    x, g = torch.zeros(1, 3), torch.ones(1, 3)
    const, decay = Adam(0.1), Adam(0.1, decay=10.0)
    xc, xd = x, x
    for _ in range(50):
        xc, xd = const.step(xc, g), decay.step(xd, g)
    assert float(xd.abs().max()) < float(xc.abs().max())         # decayed steps travel less


def test_first_round_steps_fit_the_slowest_schedule():
    for passes in (100, 500, 1000, 3000):
        K = first_round_steps(passes, 0.05, 1.1)
        assert sum(K * 1.1 ** j for j in range(1, 21)) <= 0.8 * passes or K == 1
    assert first_round_steps(3200, 0.05, 1.1) == pytest.approx(40, abs=1)    # Table 4's K at the paper's scale


@pytest.mark.parametrize("spec", ["cs[m=0.3255]", "inpaint"])
def test_tangent_is_the_null_space_projection(spec):
    task = make_task(spec)
    x = torch.rand(3, 1, 16, 16)
    p = task.make(x, ["a", "b", "c"], 0)
    v = torch.randn_like(x)
    t = p.tangent(v)
    assert torch.allclose(task.forward(p, t), torch.zeros_like(p.y), atol=1e-4)   # f(Pv) = 0
    assert torch.allclose(p.tangent(t), t, atol=1e-4)                              # P² = P


def test_default_grid_names_its_protocol():
    assert load_grid("default").protocol == "robust"
