"""Regression check: identical runs pass; moved metrics, missing cells, status and winner changes fail."""
from __future__ import annotations

import zlib

import pytest

from bench.cli import main as cli
from bench.core.errors import UserError
from bench.core.tolerance import parse_tolerance
from bench.report.leaderboard import load_run
from bench.verify.check import compare
from kit.synthetic_run import make_run

SMALL = dict(tasks=("denoise", "inpaint"), priors=("glow-xs",), recon=False)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("ref") / "r", **SMALL)


def _check(capsys, cur, ref, *flags):
    rc = cli(["check", str(cur), "--reference", str(ref), *flags])
    return rc, capsys.readouterr().out


def test_identical_runs_pass(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", **SMALL)
    rc, out = _check(capsys, cur, ref)
    assert rc == 0 and "check passed: 32 cells compared" in out


def test_perturbed_solver_fails_naming_cells(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", shift=lambda r: 0.5 if r["solver"] == "x-adam" and r["task"] == "inpaint"
                   and r["lam"] == 1.0 else 0.0, **SMALL)
    rc, out = _check(capsys, cur, ref)
    assert rc == 1
    moved = [line for line in out.splitlines() if " map_loss " in line]
    assert sorted(line.split("  ")[0] for line in moved) == [
        "inpaint / glow-xs / ood / λ=1 / x-adam", "inpaint / glow-xs / test / λ=1 / x-adam"]
    assert "denoise" not in out


def test_systematic_shift_fails_even_under_se_tolerance(ref, tmp_path, capsys):
    """A shift that moves every image the same way has paired se 0: k·se never hides it, only a floor does."""
    cur = make_run(tmp_path / "cur", shift=lambda r: 0.5 if r["solver"] == "x-adam" else 0.0, **SMALL)
    assert _check(capsys, cur, ref)[0] == 1
    assert _check(capsys, cur, ref, "--fail-map-loss", "3se")[0] == 1
    rc, out = _check(capsys, cur, ref, "--fail-map-loss", "3se+5%")   # |MAP loss| here is ~ 20-60 nats
    assert rc == 0, out


def test_noise_that_scatters_both_ways_passes_se_tolerance(ref, tmp_path, capsys):
    """Per-image differences of both signs (float noise amplified) stay within 3 paired se."""
    sign = lambda r: 1 if zlib.crc32(f"{r['image_id']}{r['lam']}{r['task']}".encode()) % 2 else -1  # noqa: E731
    noise = lambda r: 0.05 * sign(r)  # noqa: E731
    cur = make_run(tmp_path / "cur", shift=lambda r: noise(r) if r["solver"] == "x-adam" else 0.0, **SMALL)
    rc, out = _check(capsys, cur, ref, "--fail-map-loss", "3se+0%")
    moved = [line for line in out.splitlines() if " map_loss " in line]
    assert len(moved) < 4, out   # of 8 x-adam cells, a chance same-sign triple may still exceed 3 se


def test_missing_cells_fail(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", lams=(0.5,), **SMALL)
    rc, out = _check(capsys, cur, ref)
    assert rc == 1 and out.count(" missing") == 16 and "λ=1" in out and "(cell: 16)" in out


def test_new_cells_are_listed_not_compared_and_pass(ref, tmp_path, capsys):
    """A solver (or λ) added since the reference: its cells are new, not compared, and the check still passes;
    the reference's cells are compared as before, so a move there still fails."""
    cur = make_run(tmp_path / "cur", solvers=("aipo", "latent-lbfgs", "lasso-dct", "x-adam", "new-solver"),
                   **SMALL)
    rc, out = _check(capsys, cur, ref)
    new = [line for line in out.splitlines() if line.startswith("new, not compared: ")]
    assert rc == 0, out
    assert len(new) == 8 and all(line.endswith(" / new-solver") for line in new)
    assert "check passed: 32 cells compared" in out and "8 new cells not compared" in out
    # the new solver is the winner of no reference row: adding one never changes the winners compared
    cur2 = make_run(tmp_path / "cur2", solvers=("aipo", "latent-lbfgs", "lasso-dct", "x-adam", "new-solver"),
                    shift=lambda r: -100.0 if r["solver"] == "new-solver" else 0.0, **SMALL)
    assert _check(capsys, cur2, ref)[0] == 0
    cur3 = make_run(tmp_path / "cur3", solvers=("aipo", "latent-lbfgs", "lasso-dct", "x-adam", "new-solver"),
                    shift=lambda r: 0.5 if r["solver"] == "x-adam" else 0.0, **SMALL)
    rc, out = _check(capsys, cur3, ref)
    assert rc == 1 and " map_loss " in out and "new-solver" not in out.split("check failed")[0].split("---")[-1]


def test_new_and_missing_cells_together_fail_on_the_missing(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", solvers=("aipo", "latent-lbfgs", "lasso-dct", "new-solver"), **SMALL)
    rc, out = _check(capsys, cur, ref)
    assert rc == 1 and out.count(" missing") == 8 and "x-adam" in out and "(cell: 8)" in out
    problems, n, new = compare(*(load_run(d)[0] for d in (cur, ref)), {"map_loss": parse_tolerance("3se")})
    assert len(problems) == 8 and n == 24 and len(new) == 8


def test_missing_images_fail(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", n_images=2, **SMALL)
    rc, out = _check(capsys, cur, ref, "--fail-map-loss", "1e9", "--fail-psnr", "1e9", "--fail-ssim", "1e9")
    assert rc == 1 and "rows (image, seed)" in out and "1 missing, 0 new" in out


def test_status_change_fails(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", fail={("denoise", "aipo"): 1}, **SMALL)
    rc, out = _check(capsys, cur, ref)
    assert rc == 1
    status = [line for line in out.splitlines() if " status " in line]
    assert len(status) == 2 and all("denoise" in s and "aipo" in s and "nan ×1" in s for s in status)


def test_winner_change_fails(ref, tmp_path, capsys):
    cur = make_run(tmp_path / "cur", shift=lambda r: -30.0 if r["solver"] == "lasso-dct" and r["task"] == "denoise"
                   and r["split"] == "test" and r["lam"] == 0.5 else 0.0, **SMALL)
    rc, out = _check(capsys, cur, ref, "--fail-map-loss", "1e9")  # only the winner rule can fail here
    assert rc == 1
    win = [line for line in out.splitlines() if "winner" in line and "changed" in line]
    assert len(win) == 1 and "denoise / glow-xs / test / λ=0.5 " in win[0]
    assert "aipo" in win[0] and "lasso-dct" in win[0]


@pytest.mark.parametrize("text,k,floor,rel", [("3se", 3.0, 0.0, False), ("0.2", 0.0, 0.2, False),
                                              ("0.01%", 0.0, 1e-4, True), ("1e-3", 0.0, 1e-3, False),
                                              ("3se+0.01%", 3.0, 1e-4, True), ("2se+0.05", 2.0, 0.05, False)])
def test_parse_tolerance(text, k, floor, rel):
    t = parse_tolerance(text)
    assert (t.k_se, t.relative) == (k, rel) and t.floor == pytest.approx(floor)


def test_tolerance_limits():
    assert parse_tolerance("3se").limit(100.0, 2.0) == pytest.approx(6.0)
    assert parse_tolerance("3se").limit(100.0, float("nan")) == pytest.approx(0.0, abs=1e-6)
    assert parse_tolerance("1%").limit(-200.0, 1.0) == pytest.approx(2.0)
    assert parse_tolerance("0.2").limit(30.0, 1.0) == pytest.approx(0.2)
    assert parse_tolerance("3se+1%").limit(-200.0, 1.0) == pytest.approx(5.0)


@pytest.mark.parametrize("bad", ["3 sigma", "-1", "abc", "", "se+"])
def test_bad_tolerance_is_user_error(bad):
    with pytest.raises(UserError, match="bad tolerance"):
        parse_tolerance(bad, "--fail-psnr")


def test_missing_dir_is_user_error(ref, tmp_path, capsys):
    assert cli(["check", str(tmp_path / "nope"), "--reference", str(ref)]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(UserError, match="no result rows"):
        load_run(tmp_path)


def test_compare_is_pure(ref):
    df, _ = load_run(ref)
    problems, n, new = compare(df.copy(), df.copy(), {"map_loss": parse_tolerance("0")})
    assert problems == [] and n == 32 and new == []


def test_help_renders(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["check", "--help"])
    assert e.value.code == 0 and "--fail-map-loss" in capsys.readouterr().out
