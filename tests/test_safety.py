"""A run touches only what it wrote, resume repairs what is damaged, and report/check refuse to mislead."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from bench.cli import main as cli
from bench.store import parts as store
from bench.store.integrity import run_problems
from kit.grids import (REPO, assert_same_rows, bench_cmd, bench_env, comparable, make_checkpoint, run_bench, write_grid,
                       write_plugin)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    ckpt = make_checkpoint(d / "realnvp-t.pt", "realnvp")
    grid = write_grid(d / "safe.toml", priors=[str(ckpt)], tasks=["denoise", "inpaint"],
                      solvers=["zero-init", "aipo", "lasso-dct"])
    ref = d / "ref"
    r = run_bench("run", "--grid", grid, "--out", ref, "-q", "--workers", "1")
    assert r.returncode == 0, r.stderr
    return {"d": d, "ckpt": str(ckpt), "grid": str(grid), "ref": ref}


def _run(kit, out, *extra):
    return run_bench("run", "--grid", kit["grid"], "--out", out, "-q", "--workers", "1", *extra)


def _same_as_ref(kit, out):
    assert_same_rows(comparable(store.read_run(out)), comparable(store.read_run(kit["ref"])))


def test_two_concurrent_runs_one_refuses_and_the_result_is_whole(kit, tmp_path):
    """While a run holds --out (a slow solver keeps it busy for seconds), a second run into it is refused at once
    with one line naming the holder; the first finishes and its directory equals an uninterrupted run."""
    plugin = write_plugin(tmp_path / "plugins")
    env = bench_env(PYTHONPATH=str(tmp_path / "plugins"))
    grid = write_grid(tmp_path / "slow.toml", priors=[kit["ckpt"]], tasks=["denoise", "inpaint"],
                      solvers=["zero-init", "test-slow[seconds=2.0]"])
    args = ["run", "--grid", str(grid), "-q", "--workers", "1", "--plugin", plugin, "--no-report"]
    out, ref = tmp_path / "out", tmp_path / "ref"
    first = subprocess.Popen(bench_cmd(*args, "--out", out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_bench(*args, "--out", out, env=env)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2, (second.stdout, second.stderr)
    assert "another `bench run` (pid" in second.stderr and "Traceback" not in second.stderr
    assert run_bench(*args, "--out", ref, env=env).returncode == 0
    assert_same_rows(comparable(store.read_run(out)), comparable(store.read_run(ref)))
    assert run_problems(out) == []


def test_user_files_in_the_run_folders_survive(kit, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    mine = [out / "traces" / "notes.txt", out / "recon" / "keep.npz", out / "rows" / "mine.parquet"]
    for p in mine:
        p.write_bytes(b"mine")
    (out / "traces" / "sub").mkdir()
    r = _run(kit, out)
    assert r.returncode == 0, r.stderr
    assert all(p.read_bytes() == b"mine" for p in mine) and (out / "traces" / "sub").is_dir()
    _same_as_ref(kit, out)
    probs = run_problems(out)
    assert len(probs) == 1 and "not written by this harness" in probs[0] and "notes.txt" in probs[0]


def _drop_unit(out, uid):
    """Delete a unit's three files, so that the next run recomputes (and writes) it."""
    for sub, ext in (("rows", "parquet"), ("traces", "parquet"), ("recon", "npz")):
        (out / sub / f"{uid}.{ext}").unlink(missing_ok=True)


def _cli_run(kit, out, capsys) -> tuple[int, str]:
    code = cli(["run", "--grid", kit["grid"], "--out", str(out), "-q", "--workers", "1", "--no-report"])
    return code, capsys.readouterr().err


def test_files_named_like_units_of_another_run_and_links_survive(kit, tmp_path, capsys):
    """Files named like a unit id that this run does not plan and that are not the harness's (a user's bytes), and
    links named like a unit's file, are left alone and reported; the run itself completes."""
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    _drop_unit(out, sorted(store.unit_ids(out))[0])   # the run has work to do, and cleaning
    precious = tmp_path / "precious.parquet"
    precious.write_bytes(b"precious")
    mine = {out / "rows" / f"{'a' * 20}.parquet": b"mine", out / "traces" / f"{'b' * 20}.parquet": b"mine",
            out / "recon" / f"{'c' * 20}.npz": b"mine"}
    for p, data in mine.items():
        p.write_bytes(data)
    link = out / "traces" / f"{'d' * 20}.parquet"
    link.symlink_to(precious)
    code, err = _cli_run(kit, out, capsys)
    assert code == 0, err
    assert all(p.read_bytes() == data for p, data in mine.items())
    assert link.is_symlink() and precious.read_bytes() == b"precious"
    assert "left alone" in err and "a" * 20 in err and "b" * 20 in err and "c" * 20 in err, err
    assert_same_rows(comparable(store.read_run(out, skip_unreadable=True)), comparable(store.read_run(kit["ref"])))


@pytest.mark.parametrize("sub", ["traces", "rows", "recon"])
def test_a_symlinked_result_folder_is_refused(kit, tmp_path, capsys, sub):
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    _drop_unit(out, sorted(store.unit_ids(out))[0])   # without the refusal, the run would write through the link
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / sub, elsewhere)
    (out / sub).symlink_to(elsewhere, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    code, err = _cli_run(kit, out, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "symbolic link" in lines[0] and str(out / sub) in lines[0], err
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_disk_full_is_one_line_naming_the_file_and_what_was_kept(kit, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the second unit's rows: one line naming the file and the units kept, no temp file left;
    the rerun (disk freed) finishes the run with the same rows as an uninterrupted one."""
    import errno
    import os

    out, real, landed = tmp_path / "out", store._write_file, []

    def full_after_one_unit(path, data):
        is_rows = f"{os.sep}rows{os.sep}" in path
        if is_rows and landed:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)
        landed.extend([path] if is_rows else [])

    monkeypatch.setattr(store, "_write_file", full_after_one_unit)
    code, err = _cli_run(kit, out, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "disk full writing" in lines[0] and str(out / "rows") in lines[0] and "1 finished units are kept" in lines[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and len(store.unit_ids(out)) == 1
    monkeypatch.undo()
    code, err = _cli_run(kit, out, capsys)
    assert code == 0, err
    _same_as_ref(kit, out)
    assert run_problems(out) == []


def test_a_non_empty_folder_that_is_not_a_run_is_refused(kit, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    r = _run(kit, out)
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


@pytest.mark.parametrize("damage", ["rows-column", "traces-deleted", "recon-deleted", "recon-crc", "recon-swapped",
                                    "traces-swapped"])
def test_resume_repairs_damaged_units(kit, tmp_path, damage):
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    uids = sorted(store.unit_ids(out))
    a, b = uids[0], uids[1]
    if damage == "rows-column":   # intact footer, a changed value: only the content hash sees it
        p = out / "rows" / f"{a}.parquet"
        df = pd.read_parquet(p)
        meta = store.unit_meta(p)
        df.loc[0, "map_loss"] += 1.0
        p.write_bytes(store.parquet_bytes(df, meta))
    elif damage == "traces-deleted":
        (out / "traces" / f"{a}.parquet").unlink()
    elif damage == "recon-deleted":
        (out / "recon" / f"{a}.npz").unlink()
    elif damage == "recon-crc":
        p = out / "recon" / f"{a}.npz"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    else:
        sub, ext = ("recon", "npz") if damage == "recon-swapped" else ("traces", "parquet")
        shutil.copy(out / sub / f"{b}.{ext}", out / sub / f"{a}.{ext}")
    assert run_problems(out), damage
    r = _run(kit, out)
    assert r.returncode == 0 and "recomputing" in r.stderr, r.stderr
    assert run_problems(out) == []
    _same_as_ref(kit, out)


def test_report_and_check_flag_an_incomplete_run(kit, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    uid = sorted(store.unit_ids(out))[0]
    for sub, ext in (("rows", "parquet"), ("traces", "parquet"), ("recon", "npz")):
        (out / sub / f"{uid}.{ext}").unlink(missing_ok=True)
    assert cli(["report", str(out), "--no-figures"]) == 0
    text = (out / "LEADERBOARD.md").read_text()
    assert "incomplete:" in text and "planned cells have no row" in text
    assert cli(["check", str(out), "--reference", str(kit["ref"])]) == 1
    assert "incomplete" in capsys.readouterr().out


def test_report_never_averages_cells_of_different_budgets(kit, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(kit["ref"], out)
    other = write_grid(tmp_path / "safe80.toml", priors=[kit["ckpt"]], tasks=["denoise", "inpaint"],
                       solvers=["zero-init", "aipo", "lasso-dct"], budget=60, name="safe")
    r = run_bench("run", "--grid", other, "--out", out, "-q", "--workers", "1", "--resume-anyway")
    assert r.returncode == 0, r.stderr
    assert cli(["report", str(out), "--no-figures"]) == 0
    text = (out / "LEADERBOARD.md").read_text()
    assert "[denoise[budget=30]](tables/" in text and "[denoise[budget=60]](tables/" in text


def test_check_passes_under_simulated_cross_cpu_noise_and_fails_on_a_real_change(kit, tmp_path, capsys):
    """Another CPU changes the last bits of every float; simulate it by perturbing the prior's weights by a few
    ulp, rerun, and check against the unperturbed run with the CI tolerances. A deliberate change still fails."""
    import torch

    payload = torch.load(kit["ckpt"], weights_only=True)
    g = torch.Generator().manual_seed(0)
    for k, v in payload["state_dict"].items():
        if v.is_floating_point():
            payload["state_dict"][k] = v * (1 + 4e-7 * torch.randn(v.shape, generator=g))
    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    torch.save(payload, noisy_dir / "realnvp-t.pt")
    grid = write_grid(tmp_path / "safe.toml", priors=[str(noisy_dir / "realnvp-t.pt")], tasks=["denoise", "inpaint"],
                      solvers=["zero-init", "aipo", "lasso-dct"])
    out = tmp_path / "out"
    r = run_bench("run", "--grid", grid, "--out", out, "-q", "--workers", "1")
    assert r.returncode == 0, r.stderr
    ci = ["--fail-map-loss", "3se+0.1%", "--fail-psnr", "3se+0.1", "--fail-ssim", "3se+0.005"]
    a, b = store.read_run(out), store.read_run(kit["ref"])
    assert not np.array_equal(a.sort_values("image_id")["map_loss"], b.sort_values("image_id")["map_loss"])
    assert cli(["check", str(out), "--reference", str(kit["ref"]), *ci]) == 0, capsys.readouterr().out
    # a deliberate one-solver change: zero-init's rows moved by 1 % in a copy of the run
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    for p in (changed / "rows").glob("*.parquet"):
        df = pd.read_parquet(p)
        if (df["solver"] == "zero-init").all():
            df["map_loss"] *= 1.01
            meta = dict(store.unit_meta(p), rows_hash=store.frame_hash(df))
            p.write_bytes(store.parquet_bytes(df, meta))
    capsys.readouterr()
    assert cli(["check", str(changed), "--reference", str(kit["ref"]), *ci]) == 1
    out_text = capsys.readouterr().out
    assert "zero-init" in out_text and "aipo" not in out_text.split("check failed")[0].replace("winner", "")


def test_exact_self_check(kit, tmp_path, capsys):
    out = tmp_path / "again"
    assert _run(kit, out).returncode == 0
    assert cli(["check", str(out), "--reference", str(kit["ref"]), "--exact"]) == 0
    assert "bit-identical" in capsys.readouterr().out
    p = next((out / "rows").glob("*.parquet"))
    df = pd.read_parquet(p)
    df.loc[0, "psnr"] = np.nextafter(df.loc[0, "psnr"], np.inf)
    p.write_bytes(store.parquet_bytes(df, dict(store.unit_meta(p), rows_hash=store.frame_hash(df))))
    assert cli(["check", str(out), "--reference", str(kit["ref"]), "--exact"]) == 1
    assert json.loads((out / "run.json").read_text())["runs"][-1]["planned_cells"]
