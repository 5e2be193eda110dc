"""The grid runner: unit expansion, rows for every cell, resume, corrupt files, failure isolation, determinism,
batch-order independence, refusal to mix runs. Priors are analytic GaussianLogitPrior checkpoints written to a
temporary folder (loaded by path through the real catalog); solvers are tiny test solvers registered per test."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import runner, store
from bench.cli import main as cli_main
from bench.errors import UserError
from bench.grid import apply_filters, load_grid, parse_grid
from bench.solvers.base import SOLVERS, SolveResult, Solver, Trace


# ------------------------------------------------------------------------------------------ test solvers
def _grad_steps(problem, prior, lam, lr, passes):
    """``passes`` gradient steps on L(x; λ) from clamp(fᵀy), one counted prior pass each; rows independent."""
    x = problem.adjoint(problem.y).clamp(0, 1)
    trace = Trace()
    for _ in range(passes):
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            loss = problem.data_fit(xr) - lam * prior.log_prob(xr)
            (g,) = torch.autograd.grad(loss.sum(), xr)
        trace.record(prior.used.clone(), loss.detach())
        x = (x - lr * g).clamp(0, 1)
    return x.detach(), trace


class GradSolver(Solver):
    """Counts its solve calls and batch sizes (class attributes)."""

    parameters = {"lr": 0.01, "passes": 3}
    tunable = ("lr",)
    calls: list = []

    def solve(self, problem, prior, lam, ctx):
        type(self).calls.append(problem.batch_size)
        x, trace = _grad_steps(problem, prior, lam, self.params["lr"], self.params["passes"])
        return SolveResult(x, trace, {"iterations": torch.full((problem.batch_size,), self.params["passes"])})


class BoomSolver(Solver):
    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        raise RuntimeError("kaboom\nsecond line of the message")


class NanSolver(Solver):
    """NaN for the rows with λ > 1, a fine answer otherwise."""

    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        x, trace = _grad_steps(problem, prior, lam, 0.01, 2)
        x[lam > 1] = float("nan")
        return SolveResult(x, trace)


class GreedySolver(Solver):
    parameters = {}

    def solve(self, problem, prior, lam, ctx):
        x = problem.adjoint(problem.y).clamp(0, 1)
        for _ in range(ctx.budget + 1):
            prior.log_prob(x)
        return SolveResult(x)


class LamFreeSolver(Solver):
    """λ-independent and prior-free (like Lasso): the runner must solve once per image and replicate across λ."""

    parameters = {"shift": 0.0}
    uses_prior = False
    lam_independent = True
    calls: list = []

    def solve(self, problem, prior, lam, ctx):
        assert prior is None
        type(self).calls.append(problem.batch_size)
        return SolveResult((problem.adjoint(problem.y) + self.params["shift"]).clamp(0, 1))


TEST_SOLVERS = {"t-grad": GradSolver, "t-boom": BoomSolver, "t-nan": NanSolver, "t-greedy": GreedySolver,
                "t-lamfree": LamFreeSolver}


@pytest.fixture
def test_solvers():
    GradSolver.calls, LamFreeSolver.calls = [], []
    with contextlib.ExitStack() as stack:   # temporarily: discovers the real plugins first, unregisters after
        for name, cls in TEST_SOLVERS.items():
            stack.enter_context(SOLVERS.temporarily(name, cls))
        yield


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    """Two analytic priors saved as checkpoints (loaded by path through bench.priors.catalog)."""
    from bench.priors.base import GaussianLogitPrior
    from bench.priors.training import save_checkpoint

    d = tmp_path_factory.mktemp("priors")
    save_checkpoint(GaussianLogitPrior((1, 16, 16)), d / "gauss-a.pt")
    save_checkpoint(GaussianLogitPrior((1, 16, 16), torch.full((1, 16, 16), 0.3), torch.full((1, 16, 16), 1.5)),
                    d / "gauss-b.pt")
    return [str(d / "gauss-a.pt"), str(d / "gauss-b.pt")]


def make_grid(priors, **changes):
    raw = {"name": "tiny", "priors": priors, "tasks": ["denoise", "cs[m=0.1628]"], "lams": [0.5, 2.0],
           "solvers": ["t-grad"], "budget": 10, "mle_steps": 2, "images_per_split": 2, "splits": ["id", "ood"]}
    raw.update(changes)
    return parse_grid(raw)


def run(grid, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda m: None)
    return runner.run_grid(grid, out, **kw)


def rows_of(out) -> pd.DataFrame:
    return store.read_run(out).sort_values("cell_id").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- expansion
def test_unit_expansion_counts(priors, test_solvers):
    g = make_grid(priors, solvers=["t-grad", "t-lamfree"], seeds=[0, 1],
                  extra=[{"tasks": ["cs[m=0.05]", "denoise"], "lams": [1.0], "priors": priors[:1]}])
    units = runner.plan_units(g)
    # main: 2 splits x 2 priors x 2 tasks x 2 seeds x 2 solvers = 32; extra adds cs[m=0.05] for 1 prior: 8 more
    assert len(units) == 40
    assert len({u["unit_id"] for u in units}) == 40
    den = [u for u in units if u["task"] == "denoise" and u["prior"] == priors[0]]
    assert all(u["lams"] == [0.5, 1.0, 2.0] for u in den)  # λ merged over blocks, one unit per key
    assert all(len(u["image_ids"]) == 2 for u in units)
    cells = [c for u in units for c in runner.cell_ids(u)]
    assert len(cells) == len(set(cells))


def test_rows_for_every_cell(priors, test_solvers, tmp_path):
    g = make_grid(priors, solvers=["t-grad", "t-lamfree"])
    s = run(g, tmp_path / "out")
    df = store.read_run(tmp_path / "out")
    assert s.exit_code == 0 and s.rows_written == len(df) == 2 * 2 * 2 * 2 * 2 * 2
    keys = df[["task", "prior", "split", "lam", "solver", "image_id"]].drop_duplicates()
    assert len(keys) == len(df)
    assert set(df["prior"]) == {"gauss-a", "gauss-b"} and set(df["split"]) == {"id", "ood"}
    assert set(df["dataset"]) == {"lfw-faces", "ood"}
    assert (df["status"] == "ok").all() and df[["map_loss", "psnr", "ssim"]].notna().all().all()
    expected = store.IDENTITY_COLUMNS + store.OUTCOME_COLUMNS + store.PROVENANCE_COLUMNS
    for col in expected + ["p_solver_lr", "p_task_sigma"]:
        assert col in df.columns, col
    grad = df[df.solver == "t-grad"]
    assert (grad["nfe_used"] == 3).all() and (grad["iterations"] == 3).all() and (grad["budget"] == 10).all()
    assert (df.loc[df.solver == "t-lamfree", "nfe_used"] == 0).all()
    # metrics are the harness's: recompute one row's MAP loss from the reconstruction
    rec = {}
    for f in (tmp_path / "out" / "recon").glob("*.npz"):
        z = np.load(f)
        rec.update({c: z["x_hat"][i] for i, c in enumerate(z["cell_id"])})
    assert set(rec) == set(df["cell_id"])
    tr = store.read_traces(tmp_path / "out")
    assert set(tr.columns) >= set(store.TRACE_COLUMNS) and set(tr["cell_id"]) <= set(df["cell_id"])
    assert set(tr["cell_id"]) >= set(grad["cell_id"])


def test_recon_arrays(priors, test_solvers, tmp_path):
    g = make_grid(priors[:1], tasks=["inpaint", "cs[m=0.1628]"], splits=["id"])
    run(g, tmp_path / "out")
    df = store.read_run(tmp_path / "out")
    for f in (tmp_path / "out" / "recon").glob("*.npz"):
        z = np.load(f)
        assert {"cell_id", "x_hat", "x_true", "observed", "mask"} <= set(z.files)
        assert z["x_hat"].dtype == np.float32 and z["x_hat"].shape == (4, 1, 16, 16)
        task = df.set_index("cell_id").loc[z["cell_id"][0], "task"]
        if task == "inpaint":
            assert 0 < z["mask"].mean() < 1 and np.allclose(z["observed"] * (1 - z["mask"]), 0)
        else:   # cs: y is not an image; the figures show clip(A⁺y)
            assert z["observed"].min() >= 0 and z["observed"].max() <= 1 and z["observed"].any()
            assert (z["mask"] == 1).all()


def test_lam_independent_solved_once_per_image(priors, test_solvers, tmp_path):
    g = make_grid(priors[:1], solvers=["t-lamfree"], lams=[0.3, 0.5, 2.0], splits=["id"], tasks=["denoise"])
    run(g, tmp_path / "out")
    assert LamFreeSolver.calls == [2]  # one solve on the 2 images, not 6 rows
    df = store.read_run(tmp_path / "out")
    assert len(df) == 6
    per_img = df.groupby("image_id")["psnr"].nunique()
    assert (per_img == 1).all()  # same x_hat replicated over λ ...
    assert df.groupby("image_id")["map_loss"].nunique().eq(3).all()  # ... scored at each row's own λ


# ------------------------------------------------------------------------------------------------- resume
def test_resume_does_no_solver_work(priors, test_solvers, tmp_path):
    g = make_grid(priors)
    s1 = run(g, tmp_path / "out")
    n = len(GradSolver.calls)
    assert n == s1.units_run == 8
    s2 = run(g, tmp_path / "out")
    assert len(GradSolver.calls) == n and s2.units_run == 0 and s2.units_skipped == 8 and s2.rows_written == 0
    assert len(store.read_run(tmp_path / "out")) == 32


def test_filtered_then_full_run_composes(priors, test_solvers, tmp_path):
    g = make_grid(priors)
    run(apply_filters(g, lam=["0.5"]), tmp_path / "out")
    assert set(GradSolver.calls) == {2}  # 2 images x 1 λ
    GradSolver.calls.clear()
    s = run(g, tmp_path / "out")
    assert s.units_run == 8 and set(GradSolver.calls) == {2}  # only the missing λ = 2.0 ran
    df = store.read_run(tmp_path / "out")
    assert len(df) == 32 and not df["cell_id"].duplicated().any()
    ref = tmp_path / "ref"
    run(g, ref)
    a, b = rows_of(tmp_path / "out"), rows_of(ref)
    assert (a["cell_id"] == b["cell_id"]).all()
    np.testing.assert_allclose(a["map_loss"], b["map_loss"], rtol=1e-5)


@pytest.mark.parametrize("victim", ["rows", "traces", "recon"])
def test_corrupt_part_file_recomputed(priors, test_solvers, tmp_path, victim):
    g = make_grid(priors)
    out = tmp_path / "out"
    run(g, out)
    before = rows_of(out)
    uid = sorted(store.unit_ids(out))[0]
    f = next((out / victim).glob(f"{uid}.*"))
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    GradSolver.calls.clear()
    warnings = []
    s = run(g, out, log=warnings.append)
    assert len(GradSolver.calls) == 1 and s.units_run == 1
    assert any(uid in w and "corrupt" in w for w in warnings)
    after = rows_of(out)
    assert len(after) == len(before)
    np.testing.assert_allclose(after["map_loss"], before["map_loss"], rtol=1e-6)


def test_killed_run_leftovers_are_cleaned(priors, test_solvers, tmp_path):
    """A kill between a unit's traces and its rows leaves an orphan traces file and temp files: the rerun removes
    them, so no trace row exists without its result row."""
    g = make_grid(priors)
    out = tmp_path / "out"
    run(g, out)
    uid = sorted(store.unit_ids(out))[0]
    (out / "rows" / f"{uid}.parquet").unlink()  # as if killed before the rows file landed
    (out / "rows" / f".{uid}.parquet.abc.tmp").write_bytes(b"partial")
    GradSolver.calls.clear()
    run(apply_filters(g, lam=["2.0"]), out)  # a different unit composition than the orphan's
    assert len(GradSolver.calls) == 1
    assert not list(out.rglob("*.tmp"))
    tr = store.read_traces(out)
    assert set(tr["cell_id"]) <= set(store.read_run(out)["cell_id"])


# ---------------------------------------------------------------------------------------- failure isolation
def test_failure_isolation(priors, test_solvers, tmp_path):
    g = make_grid(priors[:1], solvers=["t-grad", "t-boom", "t-nan", "t-greedy"], splits=["id"])
    s = run(g, tmp_path / "out")
    df = store.read_run(tmp_path / "out")
    assert len(df) == 4 * 2 * 2 * 2  # every row written, failed or not
    by = df.groupby("solver")["status"]
    assert set(by.get_group("t-grad")) == {"ok"}
    assert set(by.get_group("t-boom")) == {"error"}
    assert set(by.get_group("t-greedy")) == {"overspend"}
    nan_rows = df[df.solver == "t-nan"]
    assert set(nan_rows.loc[nan_rows.lam > 1, "status"]) == {"nan"}
    assert set(nan_rows.loc[nan_rows.lam < 1, "status"]) == {"ok"}
    boom = df[df.solver == "t-boom"]["error"].iloc[0]
    assert "kaboom" in boom and "\n" not in boom
    assert "budget" in df[df.solver == "t-greedy"]["error"].iloc[0]
    assert df.loc[df.status != "ok", "map_loss"].isna().all()
    assert s.failures == {"error": 8, "overspend": 8, "nan": 4} and s.exit_code == 1
    # a rerun does no work but still reports the failures it holds; --retry-failed recomputes them
    s2 = run(g, tmp_path / "out")
    assert s2.units_run == 0 and s2.n_failures == 20 and s2.failures_earlier == 20 and s2.exit_code == 1
    s3 = run(g, tmp_path / "out", retry_failed=True)
    assert s3.units_run == 6 and s3.n_failures == 20
    assert len(store.read_run(tmp_path / "out")) == 32


def test_cli_exit_codes(priors, test_solvers, tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(f'name = "cli"\npriors = ["{priors[0]}"]\ntasks = ["denoise"]\nlams = [0.5]\nsplits = ["id"]\n'
                    'solvers = ["t-grad", "t-boom"]\nbudget = 10\nmle_steps = 0\nimages_per_split = 2\n')
    out = tmp_path / "out"
    # --workers 1: the t-* test solvers are registered in this process only (plugins for workers go via --plugin)
    # solver failures are results: exit 0, counted in the last line; --strict makes them exit 1
    assert cli_main(["run", "--grid", str(path), "--out", str(out), "--device", "cpu", "-q", "--workers", "1",
                     "--no-report"]) == 0
    line = capsys.readouterr().out.strip()
    assert "4 rows written" in line and "2 failures" in line and str(out) in line
    assert cli_main(["run", "--grid", str(path), "--out", str(out), "--device", "cpu", "-q", "--workers", "1",
                     "--strict"]) == 1
    line = capsys.readouterr().out.strip()
    assert "leaderboard" in line and (out / "LEADERBOARD.md").is_file()
    assert cli_main(["run", "--grid", str(path), "--out", str(out), "--device", "cpu", "-q", "--workers", "1",
                     "--solver", "t-grad"]) == 0
    assert cli_main(["run", "--grid", str(path), "--out", str(out), "--solver", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- determinism & order
def test_determinism_two_dirs(priors, test_solvers, tmp_path):
    g = make_grid(priors, solvers=["t-grad", "t-lamfree"])
    run(g, tmp_path / "a")
    run(g, tmp_path / "b")
    a, b = rows_of(tmp_path / "a"), rows_of(tmp_path / "b")
    assert (a["cell_id"] == b["cell_id"]).all() and (a["unit_id"] == b["unit_id"]).all()
    for col in ("map_loss", "data_fit", "log_prior", "psnr", "ssim", "nfe_used"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())


def test_batch_order_independence(priors, test_solvers, tmp_path):
    g = make_grid(priors[:1], splits=["id"], tasks=["cs[m=0.1628]"], images_per_split=4, lams=[0.5, 1.0, 2.0])
    (spec,) = runner.plan_units(g)
    rev = dict(spec, image_ids=spec["image_ids"][::-1], lams=spec["lams"][::-1], unit_id="reversed")
    small = dict(spec, image_ids=spec["image_ids"][1:2], lams=[1.0], unit_id="single")
    for s in (spec, rev, small):
        runner.execute_unit(s, tmp_path)
    d = {u: store.read_unit(tmp_path, u).set_index("cell_id") for u in (spec["unit_id"], "reversed", "single")}
    a, b, c = d[spec["unit_id"]], d["reversed"].loc[d[spec["unit_id"]].index], d["single"]
    np.testing.assert_allclose(a["map_loss"], b["map_loss"], rtol=1e-5)
    np.testing.assert_allclose(a.loc[c.index, "map_loss"], c["map_loss"], rtol=1e-5)


def test_unit_ids_stable_and_grid_independent(priors, test_solvers):
    g1 = make_grid(priors)
    g2 = make_grid(priors, name="renamed", solvers=["t-grad", "t-lamfree"])
    ids1 = {u["unit_id"] for u in runner.plan_units(g1)}
    ids2 = {u["unit_id"] for u in runner.plan_units(g2)}
    assert ids1 <= ids2
    assert ids1 == {u["unit_id"] for u in runner.plan_units(g1)}
    g3 = make_grid(priors, budget=11)
    assert not ids1 & {u["unit_id"] for u in runner.plan_units(g3)}


# ---------------------------------------------------------------------------------------- run.json & refusal
def test_run_json_and_refusals(priors, test_solvers, tmp_path, monkeypatch):
    out = tmp_path / "out"
    g = make_grid(priors)
    run(g, out)
    rec = json.loads((out / "run.json").read_text())
    assert rec["grid_hash"] == g.hash and rec["grid"]["blocks"][0]["lams"] == [0.5, 2.0]
    assert rec["git_commit"] and "torch" in rec["versions"] and len(rec["runs"]) == 1
    df = store.read_run(out)
    assert (df["grid_hash"] == g.hash).all() and (~df["tuned"]).all()

    changed = make_grid(priors, lams=[0.5, 1.0])
    with pytest.raises(UserError, match="grid") as e:
        run(changed, out)
    assert "--resume-anyway" in str(e.value)
    assert len(store.read_run(out)) == 32  # nothing written
    run(changed, out, resume_anyway=True)
    rec = json.loads((out / "run.json").read_text())
    assert rec["grid_hash"] == changed.hash and "resumed_anyway_despite" in rec["runs"][-1]

    monkeypatch.setattr(runner, "git_commit", lambda: ("f" * 40, False))
    with pytest.raises(UserError, match="commit"):
        run(changed, out)


def test_changed_solver_default_is_detected(priors, test_solvers, tmp_path, monkeypatch):
    """Uncommitted code changes that alter a solver's parameters give the same cells other cell ids: refused, not
    mixed (the commit check cannot see them)."""
    out = tmp_path / "out"
    run(make_grid(priors), out)
    monkeypatch.setattr(GradSolver, "parameters", {"lr": 0.02, "passes": 3})
    with pytest.raises(UserError, match="other solver parameters") as e:
        run(make_grid(priors), out)
    assert "t-grad" in str(e.value)
    assert len(store.read_run(out)) == 32
    GradSolver.calls.clear()
    run(make_grid(priors), out, resume_anyway=True)
    assert len(GradSolver.calls) == 8 and len(store.read_run(out)) == 64


def test_unwritable_out_dir(priors, test_solvers, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        run(make_grid(priors), blocker / "out")
    with pytest.raises(UserError, match="not a directory"):
        run(make_grid(priors), blocker)
    assert GradSolver.calls == []


def test_images_per_split_larger_than_split(priors, test_solvers, tmp_path):
    with pytest.raises(UserError, match="images_per_split = 50"):
        run(make_grid(priors, images_per_split=50), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_paper_grid_stops_with_what_is_missing(tmp_path, capsys):
    assert cli_main(["run", "--grid", "paper", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--data-root" in err and "glow-paper.pt" in err and "train-prior" in err
    assert not (tmp_path / "p").exists()


def test_dry_run_writes_nothing(priors, test_solvers, tmp_path):
    s = run(make_grid(priors), tmp_path / "out", dry_run=True)
    assert s.units_planned == 8 and GradSolver.calls == [] and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- executors
@pytest.mark.slow  # two spawned workers each import torch and the plugins: ~10-20 s on a loaded 2-core box
def test_process_pool_matches_serial(priors, tmp_path):
    """--workers 2 (spawned processes) writes the same numbers as in-process execution (real registered solvers):
    every unit runs 1 torch thread either way, so float summation order is the same."""
    from bench.executors import LocalExecutor

    g = make_grid(priors, solvers=["lasso-dct", "mle-init"], tasks=["cs[m=0.1628]", "inpaint"], budget=10,
                  mle_steps=4)
    before = torch.get_num_threads()
    run(g, tmp_path / "serial", executor=LocalExecutor(workers=1))
    assert torch.get_num_threads() == before  # the in-process run restores the caller's thread count
    run(g, tmp_path / "pool", executor=LocalExecutor(workers=2))
    a, b = rows_of(tmp_path / "serial"), rows_of(tmp_path / "pool")
    assert len(a) == len(b) == 64 and (a["cell_id"] == b["cell_id"]).all()
    assert (a["torch_threads"] == 1).all() and (b["torch_threads"] == 1).all()
    assert a["cpu_isa"].nunique() == 1 and (a["cpu_isa"] == b["cpu_isa"]).all()
    for col in ("map_loss", "psnr", "nfe_used"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())


# ------------------------------------------------------------------------------------------- shipped smoke
SHIPPED_XS = [Path(__file__).resolve().parents[1] / "priors" / "checkpoints" / f"{n}.pt"
              for n in ("realnvp-xs", "glow-xs")]
needs_xs = pytest.mark.skipif(not all(p.is_file() for p in SHIPPED_XS), reason="shipped xs priors not trained yet")


@needs_xs
def test_smoke_grid_slice_with_shipped_priors(tmp_path):
    g = apply_filters(load_grid("smoke"), task=["inpaint"], lam=["2.0"], split=["id"])
    s = run(g, tmp_path / "smoke", device="cpu")
    df = store.read_run(tmp_path / "smoke")
    assert len(df) == s.rows_written == 2 * len(g.main.solvers) * 2  # 2 priors x solvers x 2 images
    assert (df["status"] == "ok").all(), df.loc[df.status != "ok", ["solver", "error"]].to_string()
    assert (df["nfe_used"] <= df["budget"]).all()


@needs_xs
@pytest.mark.slow
def test_smoke_grid_complete_and_resumes(tmp_path):
    import time

    g = load_grid("smoke")
    t = time.perf_counter()
    s = run(g, tmp_path / "smoke", device="cpu")
    wall = time.perf_counter() - t
    df = store.read_run(tmp_path / "smoke")
    n = len(g.main.priors) * len(g.main.tasks) * len(g.main.lams) * len(g.main.solvers) * 2 * 2
    assert len(df) == n and s.exit_code == 0, df.loc[df.status != "ok", ["solver", "error"]].to_string()
    assert wall < 120  # the target is < 60 s on an idle 2-core machine; leave room for a loaded CI box
    s2 = run(g, tmp_path / "smoke", device="cpu")
    assert s2.units_run == 0 and s2.units_skipped == s.units_run
