"""Tuning: candidate grids, the search picks the best step on validation images, the tuned file round-trips and
``run --tuned`` applies it (rows say tuned = True and hold the tuned values)."""
from __future__ import annotations

import json
import math

import pytest

from bench.cli import main as cli_main
from bench.core.errors import UserError
from bench.plan.grid import parse_grid
from bench.run import runner
from bench.run.tuning import candidates, load_tuned, tune_grid
from bench.solvers.base import SOLVERS, Solver, SolveResult
from bench.store import parts as store


class OffsetSolver(Solver):
    """x̂ = clamp(fᵀy) + 0.1·|log2(lr / 0.02)|: at λ = 0 the MAP loss is the data fit, best at lr = 0.02 = 2 × the
    default, so the search must move away from the default to find it. Records the image ids it was given."""

    parameters = {"lr": 0.01, "steps": 4}
    tunable = ("lr", "steps")
    seen: set = set()

    def solve(self, problem, prior, lam, ctx):
        type(self).seen.update(problem.image_ids)
        prior.log_prob(problem.adjoint(problem.y).clamp(0, 1))  # one counted pass
        off = 0.1 * abs(math.log2(self.params["lr"] / 0.02)) + 0.01 * abs(self.params["steps"] - 4)
        return SolveResult((problem.adjoint(problem.y).clamp(0, 1) + off).clamp(0, 1))


class PlainSolver(Solver):
    parameters = {"lr": 0.5}
    tunable = ()

    def solve(self, problem, prior, lam, ctx):
        return SolveResult(problem.adjoint(problem.y).clamp(0, 1))


@pytest.fixture
def solvers():
    OffsetSolver.seen = set()
    with SOLVERS.temporarily("t-offset", OffsetSolver), SOLVERS.temporarily("t-plain", PlainSolver):
        yield


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory):
    from bench.priors.gaussian import GaussianLogitPrior
    from bench.priors.training import save_checkpoint

    p = tmp_path_factory.mktemp("tune-priors") / "gauss.pt"
    save_checkpoint(GaussianLogitPrior((1, 16, 16)), p)
    return str(p)


def grid(prior_path, **kw):
    raw = {"name": "tune-t", "priors": [prior_path], "tasks": ["denoise"], "lams": [0.0],
           "solvers": ["t-offset", "t-plain"], "budget": 5, "mle_steps": 0, "images_per_split": 2, "splits": ["id"]}
    raw.update(kw)
    return parse_grid(raw)


def test_candidates():
    assert candidates(0.01, (0.25, 0.5, 1, 2, 4)) == [0.0025, 0.005, 0.01, 0.02, 0.04]
    assert candidates(40, (0.25, 0.5, 1, 2, 4)) == [10, 20, 40, 80, 160]
    assert candidates(1, (0.25, 0.5, 1, 2)) == [1, 2]  # rounded, >= 1, de-duplicated
    assert candidates(0.0, (0.5, 2)) == [0.0] and candidates("adam", (0.5, 2)) == ["adam"]


def test_tune_picks_best_on_validation_and_run_applies_it(prior_path, solvers, tmp_path):
    from bench.datasets.lfw_faces import split_indices

    g = grid(prior_path)
    out = tmp_path / "tuned.json"
    # in-process: the test solver records the image ids it is given (a solver process gets opaque row keys)
    rec = tune_grid(g, out, n_images=3, progress=False, log=lambda m: None, isolate=False)
    test_ids = {f"lfw-faces/{i:04d}" for i in split_indices()["test"]}
    assert OffsetSolver.seen and not OffsetSolver.seen & test_ids  # validation images only
    assert len(OffsetSolver.seen) == 3
    params = rec["params"]
    assert list(params) == ["t-offset"]  # t-plain declares nothing tunable
    chosen = params["t-offset"]["denoise"][prior_path]
    assert chosen == {"lr": 0.02, "steps": 4}
    assert "MAP loss" in rec["objective"]
    lr_search = [s for s in rec["search"] if s["param"] == "lr"][0]
    assert [c["value"] for c in lr_search["candidates"]] == [0.0025, 0.005, 0.01, 0.02, 0.04]
    assert json.loads(out.read_text())["params"] == params

    tuned = load_tuned(out)
    assert tuned.params == params and tuned.hash == rec["params_hash"]
    res = runner.run_grid(g, tmp_path / "run", tuned=tuned, progress=False, log=lambda m: None)
    df = store.read_run(tmp_path / "run")
    assert res.exit_code == 0
    off = df[df.solver == "t-offset"]
    assert off["tuned"].all() and (off["p_solver_lr"] == 0.02).all()
    assert (~df.loc[df.solver == "t-plain", "tuned"]).all()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["tuned"]["hash"] == tuned.hash
    # an untuned run into the same directory would mix: refused
    with pytest.raises(UserError, match="tuned"):
        runner.run_grid(g, tmp_path / "run", progress=False, log=lambda m: None)


def test_tune_plans_with_the_run_planner(prior_path, solvers):
    """Tuning's candidates are the run's units (one planner, bench.plan.units), moved to the validation images, the
    first seed and the largest budget, with the candidate value as a tuned parameter."""
    from bench.plan.units import RunContext, make_unit, plan_cells, plan_units

    g = grid(prior_path, seeds=[3, 4], budget=[5, 9])
    ctx = RunContext()
    runs, vals = plan_cells(g, ctx), plan_cells(g, ctx, validation=2)
    assert {(p.seed, p.budget, p.source.dataset_split) for p in runs} == {(s, b, "test") for s in (3, 4) for b in (5, 9)}
    assert {(p.seed, p.budget, p.source.split, len(p.source.image_ids)) for p in vals} == {(3, 9, "val", 2)}
    assert [u.unit_id for u in plan_units(g, ctx)] == [make_unit(g, ctx, p).unit_id for p in runs]
    spec = make_unit(g, ctx, vals[0], {"lr": 0.04})
    assert spec.tuned and spec.solver_params["lr"] == 0.04 and spec.lams == (0.0,) and spec.run is ctx


def test_tune_resumes_from_work_dir(prior_path, solvers, tmp_path):
    g = grid(prior_path, solvers=["t-offset"])
    tune_grid(g, tmp_path / "a.json", work_dir=tmp_path / "w", n_images=2, progress=False, log=lambda m: None)
    calls = []
    orig = OffsetSolver.solve
    OffsetSolver.solve = lambda self, *a: calls.append(1) or orig(self, *a)
    try:
        tune_grid(g, tmp_path / "b.json", work_dir=tmp_path / "w", n_images=2, progress=False, log=lambda m: None)
    finally:
        OffsetSolver.solve = orig
    assert calls == []
    a, b = (json.loads((tmp_path / f).read_text())["params"] for f in ("a.json", "b.json"))
    assert a == b


@pytest.mark.parametrize("content, match", [
    ({"no-such-solver": {}}, "no-such-solver"),
    ({"t-offset": {"denoise": {"p": {"nope": 1.0}}}}, "nope"),
    ({"t-offset": {"deblur": {"p": {"lr": 1.0}}}}, "deblur"),
    ({"t-offset": {"denoise": {"p": {"lr": "fast"}}}}, "lr"),
    ({"params": {"t-offset": ["x"]}}, "t-offset"),
])
def test_bad_tuned_file(content, match, solvers, tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(content))
    with pytest.raises(UserError, match=match):
        load_tuned(p)


def test_tuned_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tuned(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_tuned(tmp_path / "bad.json")


def test_tune_cli_errors(capsys, tmp_path):
    assert cli_main(["tune", "--grid", "smoke", "--factors", "a,b", "--out", str(tmp_path / "t.json")]) == 2
    assert "--factors" in capsys.readouterr().err
    assert cli_main(["tune", "--grid", "no-such-grid"]) == 2
    assert "no-such-grid" in capsys.readouterr().err
