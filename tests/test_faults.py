"""Surviving faults: kill -9 and resume, failing solvers isolated, corrupt part files recomputed, an
unwritable output directory refused before any work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.plan.grid import load_grid
from bench.run.runner import run_grid
from bench.store import parts as store
from kit.grids import (OUTCOMES, REPO, assert_same_rows, bench_cmd, bench_env, comparable, make_checkpoint, run_bench,
                       write_grid, write_plugin)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A tiny checkpoint, the faulty-solver plugin on PYTHONPATH, and the environment for subprocess runs."""
    d = tmp_path_factory.mktemp("faults")
    ckpt = make_checkpoint(d / "realnvp-t.pt", "realnvp")
    plugin = write_plugin(d / "plugins")
    env = bench_env(PYTHONPATH=os.pathsep.join([str(d / "plugins"), os.environ.get("PYTHONPATH", "")]))
    return {"dir": d, "ckpt": str(ckpt), "plugin": plugin, "env": env}


# ------------------------------------------------------------------------------------------------ kill -9
@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_then_resume_gives_every_row_once_and_same_values(kit, tmp_path, workers):
    # unit order = solver order within (split, prior, task): test-slow runs second and holds a 1 s window.
    # With --workers 2 the pool workers must die with the killed parent (no orphan goes on writing part files).
    grid = write_grid(tmp_path / "kill.toml", priors=[kit["ckpt"]], tasks=["denoise", "inpaint"],
                      solvers=["zero-init", "test-slow", "aipo", "lasso-dct"])
    n_units = 2 * 4
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["run", "--grid", grid, "--plugin", kit["plugin"], "-q", "--workers", workers]
    proc = subprocess.Popen(bench_cmd(*args, "--out", killed), cwd=REPO, env=kit["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    rows_dir = killed / store.ROWS
    n_at_kill, deadline = 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            n_at_kill = len(list(rows_dir.glob("*.parquet"))) if rows_dir.is_dir() else 0
            if n_at_kill >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    time.sleep(1.0)  # a pool worker would finish test-slow's 1 s unit by now if it had outlived its parent
    n_left = len(list(rows_dir.glob("*.parquet")))
    assert 1 <= n_left < n_units, n_left

    resumed = run_bench(*args, "--out", killed, env=kit["env"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n_units - n_left} units run, {n_left} already done" in resumed.stdout, resumed.stdout
    fresh = run_bench(*args, "--out", ref, env=kit["env"])
    assert fresh.returncode == 0, fresh.stderr

    got, want = comparable(store.read_run(killed)), comparable(store.read_run(ref))
    assert len(want) == n_units * 2 * 2 and got["cell_id"].is_unique
    assert list(got["cell_id"]) == list(want["cell_id"])
    assert_same_rows(got[["cell_id", *OUTCOMES]], want[["cell_id", *OUTCOMES]])
    assert (got["status"] == "ok").all()
    assert len(store.unit_ids(killed)) == n_units


def _process_table() -> dict[int, tuple[int, str, str]]:
    """{pid: (parent pid, state, command line)} of every process (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(d.name)] = (int(stat[1]), stat[0], cmd)
    return out


def _descendants(pid: int) -> set[int]:
    table, out, todo = _process_table(), set(), [pid]
    while todo:
        parent = todo.pop()
        for p, (ppid, _, _) in table.items():
            if ppid == parent and p not in out:
                out.add(p)
                todo.append(p)
    return out


def _survivors(pids, mention: str) -> list[str]:
    """Live (not zombie) processes among ``pids``, or whose command line mentions ``mention``."""
    return [f"{p}: {cmd[:120]}" for p, (_, state, cmd) in _process_table().items()
            if state != "Z" and p != os.getpid() and (p in pids or mention in cmd)]


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The parent-death signal covers only a parent alive when it is requested: a pool worker started by a run that
    was killed meanwhile (its parent pid is no longer its parent) exits instead of starting work."""
    code = "import os, sys; from bench.run.executors import die_with_parent; die_with_parent(int(sys.argv[1])); print('on')"
    gone = subprocess.run([sys.executable, "-c", code, "1" if os.getpid() != 1 else "2"], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and gone.stdout == "", (gone.returncode, gone.stdout, gone.stderr)
    here = subprocess.run([sys.executable, "-c", code, str(os.getpid())], cwd=REPO, env=bench_env(),
                          capture_output=True, text=True, timeout=60)
    assert here.returncode == 0 and here.stdout.strip() == "on", here.stderr


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.skipif(not all((REPO / "priors" / "checkpoints" / f"{n}.pt").is_file() for n in ("realnvp-xs", "glow-xs")),
                    reason="shipped xs priors not trained yet")
def test_kill_9_during_start_up_and_mid_run_leaves_no_process(tmp_path):
    """``kill -9`` of ``bench run --grid smoke`` at ~1 s (importing), ~3 s (pool workers starting) and after its first
    unit: 2 s later no process it started is left (pool workers die with their parent, even one killed while they
    were still starting), and the resumed run is bit-identical to an uninterrupted one (``check --exact``)."""
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["run", "--grid", "smoke", "--task", "inpaint", "--workers", "2", "--device", "cpu", "-q", "--no-report"]
    env = bench_env()
    for when in (1.0, 3.0, "first unit"):
        n_before = len(store.unit_ids(killed))
        proc = subprocess.Popen(bench_cmd(*args, "--out", killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        seen, t0 = set(), time.monotonic()
        try:
            while proc.poll() is None and time.monotonic() - t0 < 120:
                seen |= _descendants(proc.pid)
                if (when == "first unit" and len(store.unit_ids(killed)) > n_before) or \
                        (when != "first unit" and time.monotonic() - t0 >= when):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.02)
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill at {when}"
        time.sleep(2.0)
        assert _survivors(seen, str(killed)) == [], f"left behind after kill -9 at {when} ({len(seen)} seen)"

    resumed = run_bench(*args, "--out", killed)
    assert resumed.returncode == 0, resumed.stderr
    fresh = run_bench(*args, "--out", ref)
    assert fresh.returncode == 0, fresh.stderr
    check = run_bench("check", killed, "--reference", ref, "--exact")
    assert check.returncode == 0 and "check passed" in check.stdout, check.stdout + check.stderr


# -------------------------------------------------------------------------------------- failing solvers
@pytest.mark.slow
def test_failing_solvers_are_isolated_and_counted(kit, tmp_path):
    grid = write_grid(tmp_path / "faulty.toml", priors=[kit["ckpt"]], tasks=["denoise", "inpaint"],
                      solvers=["test-raises", "zero-init", "test-nan", "aipo", "test-diverges"])
    out = tmp_path / "out"
    r = run_bench("run", "--grid", grid, "--plugin", kit["plugin"], "--out", out, "-q", "--strict", env=kit["env"])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    df = store.read_run(out)
    per = 2 * 2 * 2  # tasks x images x λ per solver
    assert len(df) == 5 * per and df["cell_id"].is_unique
    by = {s: g for s, g in df.groupby("solver")}
    assert (by["test-raises"]["status"] == "error").all()
    assert by["test-raises"]["error"].str.contains("test-raises blew up on purpose").all()
    for s in ("test-nan", "test-diverges"):
        assert (by[s]["status"] == "nan").all(), by[s]["status"].tolist()
        assert by[s]["error"].str.contains("non-finite").all()
        assert by[s]["psnr"].isna().all()
    for s in ("zero-init", "aipo"):
        assert (by[s]["status"] == "ok").all() and (by[s]["error"] == "").all()
        assert by[s]["psnr"].notna().all() and by[s]["map_loss"].notna().all()
    # the summary line counts them
    assert f"{3 * per} failures (error {per}, nan {2 * per})" in r.stdout, r.stdout

    # a rerun skips everything and still reports the failures (from earlier runs); without --strict it exits 0
    again = run_bench("run", "--grid", grid, "--plugin", kit["plugin"], "--out", out, "-q", env=kit["env"])
    assert again.returncode == 0 and "0 units run" in again.stdout and "earlier" in again.stdout, again.stdout


# --------------------------------------------------------------------------------------- corrupt files
def _truncate(p: Path, keep: float = 0.5) -> None:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])


@pytest.mark.parametrize("damage", ["truncated-rows", "garbage-rows", "foreign-rows", "truncated-recon"])
def test_corrupt_part_file_is_detected_and_recomputed(kit, tmp_path, damage):
    grid = load_grid(str(write_grid(tmp_path / "c.toml", priors=[kit["ckpt"]], tasks=["denoise"],
                                    solvers=["zero-init", "aipo", "lasso-dct"])))
    out = tmp_path / "out"
    first = run_grid(grid, out, device="cpu", progress=False, log=lambda m: None)
    assert first.units_run == 3 and first.n_failures == 0
    before = comparable(store.read_run(out))
    uids = sorted(store.unit_ids(out))
    victim, other = uids[0], uids[1]
    rows = out / store.ROWS / f"{victim}.parquet"
    if damage == "truncated-rows":
        _truncate(rows)
    elif damage == "garbage-rows":
        rows.write_bytes(b"PAR1 this is not parquet")
    elif damage == "foreign-rows":  # a valid file holding another unit's rows
        rows.write_bytes((out / store.ROWS / f"{other}.parquet").read_bytes())
    else:
        _truncate(out / store.RECON / f"{victim}.npz", 0.3)

    logs = []
    second = run_grid(grid, out, device="cpu", progress=False, log=logs.append)
    assert second.units_run == 1 and second.units_skipped == 2, second.line()
    warned = [m for m in logs if victim in m and "corrupt" in m]
    assert len(warned) == 1, logs
    after = comparable(store.read_run(out))
    assert after["cell_id"].is_unique
    assert_same_rows(after[["cell_id", *OUTCOMES]], before[["cell_id", *OUTCOMES]])


# ------------------------------------------------------------------------------------- unwritable output
def _unwritable_targets(tmp_path) -> list[Path]:
    """Output paths that cannot be created: one under a regular file (fails for root too) and, when not root, one
    inside a read-only folder."""
    f = tmp_path / "a-file"
    f.write_text("x")
    targets = [f / "sub" / "out"]
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    if not os.access(ro, os.W_OK):  # root bypasses the mode bits
        targets.append(ro / "out")
    return targets


def test_unwritable_output_dir_fails_before_any_work(kit, tmp_path):
    grid = write_grid(tmp_path / "w.toml", priors=[kit["ckpt"]], tasks=["denoise"], solvers=["test-slow"])
    for target in _unwritable_targets(tmp_path):
        r = run_bench("run", "--grid", grid, "--plugin", kit["plugin"], "--out", target, "-q", env=kit["env"])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, r.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and str(target) in lines[0], r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert not target.exists()  # nothing created, so no unit ran and nothing is half-written
