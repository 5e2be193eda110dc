"""The grid runner: unit expansion, rows for every cell, resume, corrupt files, failure isolation, determinism,
batch-order independence. Priors are analytic GaussianLogitPrior checkpoints written to a temporary folder (loaded
by path through the real catalog); solvers are tiny test solvers registered per test (tests/kit/runs.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.cli import main as cli_main
from bench.core import schema
from bench.plan.batches import default_max_rows, group_units
from bench.plan.filters import apply_filters
from bench.plan.units import plan_units
from bench.run.unit import execute_unit
from bench.store import parts as store
from kit.runs import GradSolver, LamFreeSolver, make_grid, rows_of, run


# --------------------------------------------------------------------------------------------- expansion
def test_unit_expansion_counts(priors, test_solvers):
    g = make_grid(priors, solvers=["t-grad", "t-lamfree"], seeds=[0, 1],
                  extra=[{"tasks": ["cs[m=0.05]", "denoise"], "lams": [1.0], "priors": priors[:1]}])
    units = plan_units(g)
    # main: 2 splits x 2 priors x 2 tasks x 2 seeds x 2 solvers = 32; extra adds cs[m=0.05] for 1 prior: 8 more
    assert len(units) == 40
    assert len({u.unit_id for u in units}) == 40
    den = [u for u in units if u.task == "denoise" and u.prior == priors[0]]
    assert all(u.lams == (0.5, 1.0, 2.0) for u in den)  # λ merged over blocks, one unit per key
    assert all(len(u.image_ids) == 2 for u in units)
    cells = [c for u in units for c in u.cell_ids()]
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
    expected = schema.names(schema.row_columns())   # the declared columns, in their order, then the parameters
    assert list(df.columns[:len(expected)]) == expected
    for col in ["p_solver_lr", "p_task_sigma"]:
        assert col in df.columns, col
    declared = {c.name: c.dtype for c in schema.row_columns()}
    assert {c: str(df[c].dtype) for c in expected} == declared
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
    assert list(tr.columns) == schema.names(schema.trace_columns()) and set(tr["cell_id"]) <= set(df["cell_id"])
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
    # only that unit is written; its batch is recomputed whole, so its numbers are the first run's to the bit
    (batch,) = [b for b in group_units(plan_units(g), default_max_rows("cpu")) if uid in {u.unit_id for u in b}]
    assert len(GradSolver.calls) == len(batch) > 1 and s.units_run == 1
    assert any(uid in w and "corrupt" in w for w in warnings)
    after = rows_of(out)
    assert len(after) == len(before)
    np.testing.assert_array_equal(after["map_loss"], before["map_loss"])


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
    s = run(apply_filters(g, lam=["2.0"]), out)  # a different unit composition than the orphan's
    assert s.units_run == 1 and set(GradSolver.calls) == {2}   # its batch recomputed (2 images x 1 λ each)
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


def test_solver_output_is_neither_cast_nor_printed_raw(priors, test_solvers, tmp_path):
    """An x̂ that is complex, integer or bool is an error (never cast to real); an exception carrying terminal
    escapes reaches the rows' error column without them."""
    kinds = ["complex", "bool", "uint8", "int64"]
    g = make_grid(priors[:1], solvers=["t-escape", *(f"t-dtype[kind={k}]" for k in kinds)], splits=["id"])
    run(g, tmp_path / "out")
    df = store.read_run(tmp_path / "out")
    esc = df[df.solver == "t-escape"]
    assert (esc["status"] == "error").all()
    assert (esc["error"] == "RuntimeError: red alert overwritten").all(), esc["error"].iloc[0]
    for k in kinds:
        rows = df[df.solver == (f"t-dtype[kind={k}]" if k != "complex" else "t-dtype")]
        assert len(rows) == 8 and (rows["status"] == "error").all(), (k, rows["status"].tolist())
        assert rows["error"].str.contains("expected a real floating-point tensor").all()
        assert rows["psnr"].isna().all()


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
    (spec,) = plan_units(g)
    rev = replace(spec, image_ids=spec.image_ids[::-1], lams=spec.lams[::-1])
    small = replace(spec, image_ids=spec.image_ids[1:2], lams=(1.0,))
    for s in (spec, rev, small):
        execute_unit(s, tmp_path)
    a, b, c = (store.read_unit(tmp_path, s.unit_id).set_index("cell_id") for s in (spec, rev, small))
    b = b.loc[a.index]
    np.testing.assert_allclose(a["map_loss"], b["map_loss"], rtol=1e-5)
    np.testing.assert_allclose(a.loc[c.index, "map_loss"], c["map_loss"], rtol=1e-5)


def test_unit_ids_stable_and_grid_independent(priors, test_solvers):
    g1 = make_grid(priors)
    g2 = make_grid(priors, name="renamed", solvers=["t-grad", "t-lamfree"])
    ids1 = {u.unit_id for u in plan_units(g1)}
    ids2 = {u.unit_id for u in plan_units(g2)}
    assert ids1 <= ids2
    assert ids1 == {u.unit_id for u in plan_units(g1)}
    g3 = make_grid(priors, budget=11)
    assert not ids1 & {u.unit_id for u in plan_units(g3)}
