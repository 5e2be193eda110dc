"""Anytime reporting: best-known optima and gaps reproduce from the rows and traces, data profiles and ECDFs are
fractions, verdicts are significance-tested, and a budget axis gives separate cells."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.cli import main as cli
from bench.report import leaderboard as report
from bench.report import profiles, tables
from kit.grids import make_checkpoint, run_bench, write_grid
from kit.synthetic_run import make_run


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = make_run(tmp_path_factory.mktemp("prof") / "r", tasks=("denoise", "inpaint"), priors=("glow-xs",),
                 recon=False)
    assert cli(["report", str(d), "--no-figures"]) == 0
    return d


def test_f_ref_and_gaps_reproduce_with_plain_pandas(synth):
    rows = pd.concat([pd.read_parquet(p) for p in sorted((synth / "rows").glob("*.parquet"))])
    traces = pd.concat([pd.read_parquet(p) for p in sorted((synth / "traces").glob("*.parquet"))])
    ok = rows[rows["status"] == "ok"]
    inst = ["task", "prior", "split", "image_id", "lam", "seed"]
    pts = pd.concat([ok[inst + ["map_loss"]],
                     traces[["cell_id", "map_loss"]].merge(ok[["cell_id"] + inst], on="cell_id")[inst + ["map_loss"]]])
    want = pts.groupby(inst)["map_loss"].min()
    got = pd.read_parquet(synth / "profiles" / "f_ref.parquet").rename(columns={"task_spec": "task"})
    got = got.set_index(inst)["f_ref"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    gaps = pd.read_parquet(synth / "profiles" / "gaps.parquet").merge(rows, on="cell_id")
    g_ok = gaps[gaps["status"] == "ok"]
    np.testing.assert_allclose(g_ok["gap"], g_ok["map_loss"] - g_ok["f_ref"])
    assert (g_ok["gap"] >= 0).all() and gaps.loc[gaps["status"] != "ok", "gap"].isna().all()


def test_profiles_are_monotone_fractions(synth):
    df, _ = report.load_run(synth)
    prof = profiles.profiles(df, report.load_traces(synth))
    assert set(prof) == {"denoise", "inpaint"}
    for d in prof.values():
        for frame in [*d["data"].values(), d["ecdf"]]:
            v = frame.to_numpy()
            assert ((v >= 0) & (v <= 1)).all() and (np.diff(v, axis=0) >= -1e-12).all()
    sc = profiles.anytime_scores(prof)
    assert ((sc >= 0) & (sc <= 1)).all().all() and "mean" in sc.columns


def _cell(diffs, n_other=0.0):
    """One table cell: solver A = 100 + diffs per image, solver B = 100 (lower MAP loss is better)."""
    rows = []
    for i, d in enumerate(diffs):
        for s, v in (("A", 100.0 - d), ("B", 100.0)):
            rows.append({"task": "denoise", "prior": "p", "split": "id", "lam": 0.5, "solver": s, "seed": 0,
                         "image_id": f"i{i}", "map_loss": v, "psnr": 20.0, "ssim": 0.5, "status": "ok"})
    return pd.DataFrame(rows)


def test_tiny_difference_on_few_images_is_a_tie_and_a_large_consistent_one_a_win():
    tie = tables.cell_verdicts(_cell([1e-3, 2e-3, 1.5e-3]), "map_loss", ["A", "B"])[("p", "id", 0.5)]
    assert tie["best"] == "A" and not tie["win"]
    win = tables.cell_verdicts(_cell(np.linspace(5, 9, 10)), "map_loss", ["A", "B"])[("p", "id", 0.5)]
    assert win["best"] == "A" and win["win"] and win["p"] < 0.01
    h, r = tables.metric_table(_cell([1e-3, 2e-3, 1.5e-3]), "denoise", "map_loss", ["A", "B"])
    assert r[0][-1].startswith("tie") and r[0][3].startswith("**") and r[0][4].startswith("**")
    h, r = tables.metric_table(_cell(np.linspace(5, 9, 10)), "denoise", "map_loss", ["A", "B"])
    assert r[0][-1].startswith("A (p =") and r[0][3].startswith("**") and not r[0][4].startswith("**")


def test_holm_rejects_in_order():
    assert tables.holm({"a": 0.001, "b": 0.02, "c": 0.04}) == {"a": True, "b": True, "c": True}
    assert tables.holm({"a": 0.001, "b": 0.03, "c": 0.04}) == {"a": True, "b": False, "c": False}  # 0.03 > 0.05/2
    assert tables.holm({"a": 0.03, "b": 0.04}) == {"a": False, "b": False}


def test_budget_axis_runs_resumes_and_reports_both_budgets(tmp_path):
    ckpt = make_checkpoint(tmp_path / "realnvp-t.pt", "realnvp")
    grid = write_grid(tmp_path / "budgets.toml", priors=[str(ckpt)], tasks=["denoise"], budget=[20, 40],
                      solvers=["zero-init", "aipo"])
    out = tmp_path / "out"
    r = run_bench("run", "--grid", grid, "--out", out, "-q", "--workers", "1")
    assert r.returncode == 0, r.stderr
    df = pd.concat([pd.read_parquet(p) for p in (out / "rows").glob("*.parquet")])
    assert sorted(df["budget"].unique()) == [20, 40] and df["cell_id"].is_unique
    assert (df.groupby("budget")["nfe_used"].max() == pd.Series({20: 20, 40: 40})).all()
    again = run_bench("run", "--grid", grid, "--out", out, "-q", "--workers", "1")
    assert again.returncode == 0 and "0 units run" in again.stdout
    assert cli(["report", str(out)]) == 0
    text = (out / "LEADERBOARD.md").read_text()
    assert "[denoise[budget=20]](tables/" in text and "[denoise[budget=40]](tables/" in text
    assert (out / "figures" / "budget_axis.png").is_file() and "aipo@40" in text


def test_reference_solves_only_lower_f_ref(tmp_path):
    ckpt = make_checkpoint(tmp_path / "realnvp-t.pt", "realnvp")
    grid = write_grid(tmp_path / "refgrid.toml", priors=[str(ckpt)], tasks=["denoise", "inpaint"],
                      solvers=["zero-init", "aipo", "observed"])
    out = tmp_path / "out"
    assert run_bench("run", "--grid", grid, "--out", out, "-q", "--workers", "1").returncode == 0
    assert cli(["report", str(out), "--no-figures"]) == 0
    before = pd.read_parquet(out / "profiles" / "f_ref.parquet")
    assert cli(["reference", str(out), "--factor", "0.5", "-q"]) == 0
    ref = pd.read_parquet(out / "reference.parquet")
    key = ["task_spec", "prior", "split", "image_id", "lam", "seed"]
    assert ref.groupby(key).ngroups == len(before) and (ref["passes"] == 15).all()
    assert cli(["report", str(out), "--no-figures"]) == 0
    after = pd.read_parquet(out / "profiles" / "f_ref.parquet")
    m = before.merge(after, on=key, suffixes=("_run", "_ref"))
    assert (m["f_ref_ref"] <= m["f_ref_run"] + 1e-3).all() and (m["f_ref_ref"] < m["f_ref_run"] - 1e-3).any()
    assert "reference.parquet" in (out / "LEADERBOARD.md").read_text()
