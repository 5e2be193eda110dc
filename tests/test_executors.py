"""Executor equivalence: the same grid under local, dask and slurm (submitit's debug / local executors)
writes the same Parquet rows, value for value; executors isolate failing units and explain missing packages."""
from __future__ import annotations

import operator
import sys
from types import SimpleNamespace

import pytest
import torch

from bench.core.errors import UserError
from bench.plan.filters import apply_filters
from bench.plan.grid import load_grid
from bench.run.executors import EXECUTORS, LocalExecutor
from bench.run.runner import run_grid
from bench.store.parts import read_run
from kit.grids import assert_same_rows, comparable, make_checkpoint, write_grid

pytest.importorskip("distributed")
pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    """A smoke-shaped grid (two architectures, two splits, every task family) on tiny fixture checkpoints."""
    d = tmp_path_factory.mktemp("exec-grid")
    rn = make_checkpoint(d / "realnvp-t.pt", "realnvp")
    gl = make_checkpoint(d / "glow-t.pt", "glow")
    return write_grid(d / "exec.toml", priors=[str(rn), str(gl)], splits=["id", "ood"],
                      tasks=["cs[m=0.1628]", "inpaint"], solvers=["aipo", "latent-lbfgs", "lasso-dct"],
                      budget=24, mle_steps=8)


def _run(grid, out, executor):
    s = run_grid(grid, out, device="cpu", executor=executor, progress=False, log=lambda m: None)
    assert s.n_failures == 0, s.line()
    return comparable(read_run(out))


@pytest.fixture(scope="module")
def local_rows(grid_file, tmp_path_factory):
    grid = load_grid(str(grid_file))
    return _run(grid, tmp_path_factory.mktemp("local") / "out", LocalExecutor())


def test_registered():
    assert {"local", "dask", "slurm"} <= set(EXECUTORS.names())


@pytest.mark.slow
def test_dask_local_cluster_matches_local(grid_file, local_rows, tmp_path):
    from bench.run.executor_dask import DaskExecutor

    grid = load_grid(str(grid_file))
    rows = _run(grid, tmp_path / "dask", DaskExecutor(workers=2))
    # 2 priors x 2 splits x 2 tasks x 3 solvers units of 2 images x 2 λ
    assert len(local_rows) == 2 * 2 * 2 * 3 * 4
    assert rows["cell_id"].is_unique
    assert_same_rows(rows, local_rows)


def test_slurm_debug_matches_local(grid_file, local_rows, tmp_path):
    from bench.run.executor_slurm import SlurmExecutor

    grid = apply_filters(load_grid(str(grid_file)), split=["id"], prior=[str(grid_file.parent / "glow-t.pt")])
    out = tmp_path / "slurm"
    rows = _run(grid, out, SlurmExecutor(cluster="debug"))
    assert (out / "slurm-logs").is_dir()
    # a filtered grid batches fewer units together than the whole one: compare with the same grid run locally
    want = _run(grid, tmp_path / "local", LocalExecutor())
    assert len(rows) == 2 * 3 * 4 and len(want) == len(rows)
    assert set(want["cell_id"]) <= set(local_rows["cell_id"])
    assert_same_rows(rows, want)


@pytest.mark.slow
def test_slurm_local_subprocesses_match_local(grid_file, local_rows, tmp_path):
    """submitit's local executor: each unit is a separate Python process, as on a cluster."""
    from bench.run.executor_slurm import SlurmExecutor

    grid = apply_filters(load_grid(str(grid_file)), split=["ood"], task=["inpaint"],
                         solver=["aipo", "lasso-dct"])
    rows = _run(grid, tmp_path / "slurm-local", SlurmExecutor(cluster="local", workers=2))
    want = _run(grid, tmp_path / "local", LocalExecutor())
    assert len(rows) == 2 * 2 * 4 and len(want) == len(rows)
    assert set(want["cell_id"]) <= set(local_rows["cell_id"])
    assert_same_rows(rows, want)


SPECS = [SimpleNamespace(unit_id="u1", device="cpu"), SimpleNamespace(unit_id="u2", device="cpu")]  # spec-like


@pytest.mark.parametrize("make", [
    lambda: LocalExecutor(),
    lambda: __import__("bench.run.executor_slurm", fromlist=["x"]).SlurmExecutor(cluster="debug"),
], ids=["local", "slurm-debug"])
def test_failing_unit_is_yielded_as_exception(make, tmp_path):
    # operator.truediv(spec, out_dir) raises TypeError: a picklable stand-in for a unit that crashes
    out = list(make().map(operator.truediv, SPECS, str(tmp_path)))
    assert sorted(s.unit_id for s, _ in out) == ["u1", "u2"]
    for _, res in out:
        assert isinstance(res, Exception) and "unsupported operand" in str(res)


def test_dask_failing_unit_is_yielded_as_exception(tmp_path):
    from bench.run.executor_dask import DaskExecutor

    out = list(DaskExecutor(workers=1).map(operator.truediv, SPECS, str(tmp_path)))
    assert sorted(s.unit_id for s, _ in out) == ["u1", "u2"]
    assert all(isinstance(r, TypeError) for _, r in out)


@pytest.mark.parametrize("module,cls,kw,mod_name", [
    ("bench.run.executor_dask", "DaskExecutor", {}, "distributed"),
    ("bench.run.executor_slurm", "SlurmExecutor", {"cluster": "debug"}, "submitit"),
])
def test_missing_package_is_a_user_error(monkeypatch, tmp_path, module, cls, kw, mod_name):
    mod = __import__(module, fromlist=[cls])
    monkeypatch.setitem(sys.modules, mod_name, None)  # makes `import <mod_name>` raise ImportError
    ex = getattr(mod, cls)(**kw)
    with pytest.raises(UserError, match=r"pip install 'flowprior-bench\["):
        list(ex.map(operator.truediv, SPECS, str(tmp_path)))


def test_bad_executor_settings_are_user_errors():
    from bench.run.executor_dask import DaskExecutor
    from bench.run.executor_slurm import SlurmExecutor

    with pytest.raises(UserError, match="--workers"):
        DaskExecutor(workers=0)
    with pytest.raises(UserError, match="--slurm-time"):
        SlurmExecutor(time_min=0, cluster="debug")
    with pytest.raises(UserError, match="--slurm-cluster"):
        SlurmExecutor(cluster="lsf")
    with pytest.raises(UserError, match="--threads"):
        DaskExecutor(threads=0)


def test_workers_auto_is_one_per_core_on_cpu_and_one_on_gpu(monkeypatch):
    import argparse

    import bench.core.device
    import bench.run.executors as ex

    monkeypatch.setattr(ex, "usable_cpus", lambda: 8)
    ns = lambda **kw: argparse.Namespace(**{"workers": "auto", "threads": 1, "device": "cpu", **kw})  # noqa: E731
    assert ex.resolve_workers(ns()) == 8
    assert ex.resolve_workers(ns(threads=2)) == 4
    assert ex.resolve_workers(ns(threads=16)) == 1
    assert ex.resolve_workers(ns(workers=3)) == 3
    with pytest.raises(UserError, match="--threads 33 is more than 4 x the 8 usable"):   # units run here
        ex.resolve_workers(ns(threads=33))
    assert ex.resolve_workers(ns(executor="slurm", workers=1, threads=64)) == 1          # cluster nodes: up to 1,024
    with pytest.raises(UserError, match="--threads 2000"):
        ex.resolve_workers(ns(executor="dask", scheduler="tcp://h:1", workers=1, threads=2000))
    monkeypatch.setattr(bench.core.device, "resolve_device", lambda name: torch.device("cuda"))
    assert ex.resolve_workers(ns(device="cuda")) == 1
    local = ex.make_executor(ns(executor="local", threads=2))
    assert (local.workers, local.threads) == (1, 2) and "1 worker × 2 threads" in local.describe()


def test_scheduler_is_checked_before_anything_is_created():
    """--scheduler: a closed port, something that is not Dask, and a bad address are one-line UserErrors from
    ``check_reachable`` (which the CLI calls before the output folder exists); a live scheduler passes."""
    import socket
    import threading

    from distributed import LocalCluster

    from bench.run.executor_dask import check_reachable

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(UserError, match="cannot reach Dask scheduler"):
        check_reachable(f"tcp://127.0.0.1:{closed}")
    with pytest.raises(UserError, match="not an address"):
        check_reachable("tcp://127.0.0.1")

    junk = socket.socket()
    junk.bind(("127.0.0.1", 0))
    junk.listen()

    def answer_junk():
        conn, _ = junk.accept()
        conn.sendall(b"\xff" * 64 + b"HTTP/1.1 200 OK\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_junk, daemon=True).start()
    try:
        with pytest.raises(UserError, match="is not a Dask scheduler"):
            check_reachable(f"tcp://127.0.0.1:{junk.getsockname()[1]}", timeout=3)
    finally:
        junk.close()

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        check_reachable(cluster.scheduler_address)
