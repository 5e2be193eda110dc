"""The run directory: run.json and refusals to mix runs, unwritable or foreign folders, dry runs, a process pool,
and the smoke grid end to end with the shipped priors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main as cli_main
from bench.core import provenance
from bench.core.errors import UserError
from bench.plan.filters import apply_filters
from bench.plan.grid import load_grid
from bench.store import parts as store
from kit.runs import GradSolver, make_grid, rows_of, run


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

    monkeypatch.setattr(provenance, "git_commit", lambda: ("f" * 40, False))   # what start_run stamps
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
    from bench.run.executors import LocalExecutor

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
