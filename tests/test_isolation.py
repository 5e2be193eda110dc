"""Solver processes (bench/run/isolate.py): the same rows as in-process solves, opaque row keys, the message format,
unit limits declared by the grid, and no process left behind when the harness is killed mid-solve. The cheats
are in tests/test_cheats.py."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bench.core.errors import UserError
from bench.run.channel import Unsupported, pack, unpack
from bench.store import parts as store
from kit.grids import REPO, bench_cmd, bench_env, comparable, make_checkpoint, write_grid, write_plugin
from kit.runs import make_grid, rows_of, run


def test_messages_carry_tensors_and_never_code():
    x = {"a": torch.arange(6, dtype=torch.float32).view(2, 3), "b": [1, 2.5, None, "s", True],
         "c": torch.tensor([1 + 2j]), "d": torch.zeros(2, dtype=torch.bool)}
    y = unpack(pack(x))
    assert torch.equal(y["a"], x["a"]) and y["b"] == x["b"] and torch.equal(y["c"], x["c"]) and y["d"].dtype == torch.bool
    assert isinstance(unpack(pack({"f": object()}))["f"], Unsupported)
    assert isinstance(unpack(pack(torch.zeros(2, dtype=torch.bfloat16))), Unsupported)
    for bad in (b"", b"\x05\x00\x00\x00\x02\x00\x00\x00{\"x\":[]}", pack({"a": torch.zeros(3)})[:-4],
                b"\x10\x00\x00\x00\x02\x00\x00\x00" + b'{"__t": 0, "dtype": "object", "shape": [1]}'[:16] + b"[]"):
        with pytest.raises(ValueError):
            unpack(bad)


def test_solver_processes_give_the_rows_of_in_process_solves(priors, test_solvers, tmp_path):
    solvers = ["t-grad", "t-lamfree", "t-boom", "t-nan", "t-greedy", "t-escape", "t-dtype", "t-dtype[kind=bool]",
               "random-init", "aipo", "latent-lbfgs"]
    g = make_grid(priors[:1], solvers=solvers, splits=["id"])
    a = run(g, tmp_path / "iso", isolate=True)
    b = run(g, tmp_path / "inproc", isolate=False)
    assert a.rows_written == b.rows_written == 11 * 2 * 2 * 2
    ra, rb = comparable(rows_of(tmp_path / "iso")), comparable(rows_of(tmp_path / "inproc"))
    assert (ra["status"].values == rb["status"].values).all()
    assert set(ra.loc[ra["solver"].str.startswith("t-dtype"), "status"]) == {"error"}   # never cast
    assert (ra.loc[ra["solver"] == "t-greedy", "status"] == "overspend").all()
    num = [c for c in ra.columns if ra[c].dtype.kind == "f"]
    ok = ra["status"] == "ok"
    assert ra.loc[ok, num].equals(rb.loc[ok, num])
    ta = store.read_traces(tmp_path / "iso").sort_values(["cell_id", "nfe"]).reset_index(drop=True)
    tb = store.read_traces(tmp_path / "inproc").sort_values(["cell_id", "nfe"]).reset_index(drop=True)
    assert len(ta) and ta[["cell_id", "nfe", "map_loss"]].equals(tb[["cell_id", "nfe", "map_loss"]])


def test_a_solver_process_sees_opaque_row_keys_not_image_ids(priors, test_solvers, tmp_path):
    run(make_grid(priors[:1], solvers=["t-ids"], splits=["id"], tasks=["denoise"]), tmp_path / "o", isolate=True)
    err = rows_of(tmp_path / "o")["error"]
    assert err.str.contains("row-key-0").all() and not err.str.contains("lfw").any(), err.iloc[0]


def test_unit_limits_are_grid_keys(priors, test_solvers):
    g = make_grid(priors, unit_timeout_s=30, unit_memory_mb=2048)
    assert (g.unit_timeout_s, g.unit_memory_mb) == (30, 2048)
    assert make_grid(priors).hash == g.hash          # limits do not change the numbers, nor the grid's identity
    for k, v in (("unit_timeout_s", 0), ("unit_timeout_s", "1h"), ("unit_memory_mb", 10), ("unit_memory_mb", 1.5)):
        with pytest.raises(UserError, match=k):
            make_grid(priors, **{k: v})


HANG = textwrap.dedent('''
    import time
    from bench.solvers.base import SOLVERS, Solver

    @SOLVERS.register("t-hang")
    class Hang(Solver):
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            while True:
                time.sleep(0.1)
''')


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_of_the_harness_mid_solve_leaves_no_process(tmp_path):
    from test_faults import _descendants, _survivors

    ckpt = make_checkpoint(tmp_path / "realnvp-t.pt", "realnvp")
    write_plugin(tmp_path / "plugins", "hang_plugin", HANG)
    grid = write_grid(tmp_path / "hang.toml", priors=[str(ckpt)], tasks=["denoise", "inpaint"], solvers=["t-hang"])
    env = bench_env(PYTHONPATH=os.pathsep.join([str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]))
    for workers in ("1", "2"):
        proc = subprocess.Popen(bench_cmd("run", "--grid", grid, "--out", tmp_path / f"out{workers}", "--workers",
                                          workers, "--plugin", "hang_plugin", "-q", "--no-report"),
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen, t0 = set(), time.monotonic()
        try:
            while proc.poll() is None and time.monotonic() - t0 < 120:
                seen |= _descendants(proc.pid)
                if len(_solver_processes(seen)) >= int(workers):   # every unit is in its solver process
                    time.sleep(0.5)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None and time.monotonic() - t0 >= 120:
                proc.kill()
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        time.sleep(2.0)
        assert _survivors(seen, "hang_plugin") == [], f"left behind ({len(seen)} seen, workers {workers})"


def _solver_processes(pids) -> list[int]:
    """Children of a fork server among ``pids``."""
    from test_faults import _process_table

    table = _process_table()
    servers = {p for p in pids if p in table and "forkserver" in table[p][2]}
    return [p for p in pids if p in table and table[p][0] in servers and table[p][1] != "Z"]
