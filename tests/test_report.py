"""Report: tables reproduce the Parquet rows, bold bests, failures, ranking, paired numbers, figures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main as cli
from bench.core import metrics
from bench.core.errors import UserError
from bench.report import leaderboard as report
from bench.report import tables
from kit.synthetic_run import make_run

TASKS = ("denoise", "inpaint", "cs[m=0.1]", "cs[m=0.2]", "cs[m=0.4]")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = make_run(tmp_path_factory.mktemp("run") / "r", tasks=TASKS, fail={("inpaint", "x-adam"): 2})
    assert cli(["report", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def md(run):
    global _RUN
    _RUN = run
    return (run / "LEADERBOARD.md").read_text()


_RUN = None


def _plain_rows(run: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted((run / "rows").glob("*.parquet"))], ignore_index=True)


_METRIC = {"MAP loss": "map_loss", "PSNR": "psnr", "SSIM": "ssim"}


def _section(md: str, metric_title: str, task: str) -> str:
    """The per-cell table of ``task`` (in tables/ beside the leaderboard, linked from it)."""
    from bench.report.table_files import safe_name

    rel = f"tables/{_METRIC[metric_title]}__{safe_name(task)}.md"
    assert f"]({rel})" in md
    return (_RUN / rel).read_text()


def _header(section: str) -> list[str]:
    line = next(l for l in section.splitlines() if l.startswith("| prior"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table_row(section: str, prior: str, split: str, lam: str) -> list[str]:
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == [prior, split, lam]:
            return cells
    raise AssertionError(f"no row {prior} {split} {lam}")


def test_leaderboard_written_with_pm_bold_and_figures(run, md, capsys):
    assert "±" in md and "**" in md
    for name in ["anytime_denoise.png", "profiles_inpaint.png", "recon_denoise.png", "recon_inpaint.png",
                 "psnr_vs_m.png"]:
        f = run / "figures" / name
        assert f.is_file() and f.stat().st_size > 1000, name
        assert f"(figures/{name})" in md or name.startswith(("anytime", "profiles"))
    assert "grid `synthetic`: budget 200" in md and "commit `abc1234`" in md
    assert "0.2 min wall" in md and len(md.encode()) < 40_000
    assert (run / "LEADERBOARD.html").is_file() and (run / "tables" / "index.md").is_file()


@pytest.mark.parametrize("metric,title,task,prior,split,lam,solver", [
    ("map_loss", "MAP loss", "denoise", "glow-xs", "test", 1.0, "aipo"),
    ("map_loss", "MAP loss", "cs[m=0.2]", "realnvp-xs", "ood", 0.5, "lasso-dct"),
    ("psnr", "PSNR", "inpaint", "realnvp-xs", "test", 1.0, "latent-lbfgs"),
    ("ssim", "SSIM", "denoise", "glow-xs", "ood", 0.5, "x-adam"),
])
def test_plain_pandas_reproduces_table_cell(run, md, metric, title, task, prior, split, lam, solver):
    df = _plain_rows(run)
    sel = df[(df.task == task) & (df.prior == prior) & (df.split == split) & (df.lam == lam)
             & (df.solver == solver) & (df.status == "ok")][metric]
    assert len(sel) == 3
    d = metrics.METRICS[metric].decimals
    expected = f"{sel.mean():.{d}f} ± {sel.std(ddof=1) / np.sqrt(len(sel)):.{d}f}"
    row = _table_row(_section(md, title, task), prior, split, f"{lam:g}")
    header = _header(_section(md, title, task))
    assert row[header.index(solver)].strip("*") == expected


def test_bold_marks_best_in_metric_direction(run, md):
    df = _plain_rows(run)
    df = df[(df.task == "denoise") & (df.prior == "realnvp-xs") & (df.split == "ood") & (df.lam == 0.5)]
    means = df.groupby("solver")[["map_loss", "psnr"]].mean()
    for metric, title, best in (("map_loss", "MAP loss", means.map_loss.idxmin()),
                                ("psnr", "PSNR", means.psnr.idxmax())):
        sec = _section(md, title, "denoise")
        header = _header(sec)
        row = _table_row(sec, "realnvp-xs", "ood", "0.5")
        bold = [header[i] for i, c in enumerate(row) if c.startswith("**")]
        order = means[metric].sort_values(ascending=metric == "map_loss").index
        verdict = row[header.index("verdict")]
        # 3 images cannot give a significant Wilcoxon test: a tie of the best and the runner-up, both bold
        assert verdict.startswith("tie") and sorted(bold) == sorted(order[:2])


def test_failures_counted_and_excluded(run, md):
    sec = _section(md, "MAP loss", "inpaint")
    header = _header(sec)
    row = _table_row(sec, "glow-xs", "test", "0.5")
    cell = row[header.index("x-adam")]
    assert cell.endswith("(2 failed)") and "±" not in cell and "**" not in cell  # n = 1: no se, not eligible
    df = _plain_rows(run)
    ok = df[(df.task == "inpaint") & (df.prior == "glow-xs") & (df.split == "test") & (df.lam == 0.5)
            & (df.solver == "x-adam") & (df.status == "ok")]
    assert cell.startswith(f"{ok.map_loss.mean():.2f}")
    assert "failed: nan 8" in md


def test_headline_rank_and_wins_match_pandas(run, md):
    """The headline's mean rank per solver is the mean over (task, prior, split, λ, seed) of its rank by mean MAP
    loss (a failed row ranks last); its W / L count Holm-corrected pairwise Wilcoxon tests (3 images: none)."""
    df = _plain_rows(run)
    df = df[df.task == "inpaint"]
    ok = df[df.status == "ok"]
    cm = ok.groupby(["prior", "split", "lam", "seed", "solver"]).map_loss.mean().unstack()
    failed = df[df.status != "ok"].groupby(["prior", "split", "lam", "seed", "solver"]).size().unstack()
    cm = cm.where(failed.reindex_like(cm).isna())
    ranks = cm.rank(axis=1, method="min").fillna(cm.shape[1]).mean().sort_values()
    sec = md.split("### inpaint\n", 1)[1].split("\n### ", 1)[0]
    lines = [[c.strip() for c in l.strip().strip("|").split("|")] for l in sec.splitlines() if l.startswith("| ")]
    table = {l[1].strip("*").split(" (")[0]: l for l in lines[1:]}
    assert set(table) == set(ranks.index)
    shown = [float(l[2].split(" ")[0]) for l in lines[1:]]
    assert shown == sorted(shown)
    for s, r in ranks.items():
        assert table[s][2].startswith(f"{r:.2f}") and table[s][3] == "0 / 0"
    first = lines[1][1].strip("*").split(" (")[0]
    findings = next(l for l in md.splitlines() if l.startswith("**Findings.**"))
    assert "On inpaint, " + first + " ranks first" in findings and "nan" not in findings.replace("status nan", "")


def test_rank_and_paired_on_handmade_frame():
    rows = []
    for img, (a, b, c) in enumerate([(1.0, 2.0, 3.0), (1.0, 0.5, 3.0), (1.0, 3.0, np.nan)]):
        for s, v in zip(("aipo", "b", "c"), (a, b, c)):
            rows.append(dict(task="denoise", prior="p", split="test", lam=1.0, seed=0, image_id=str(img), solver=s,
                             map_loss=v, psnr=-v, status="ok" if np.isfinite(v) else "nan"))
    df = pd.DataFrame(rows)
    r = tables.rank_cells(df, "map_loss", ["aipo", "b", "c"])
    assert r.loc[("denoise", "p", "test", 1.0, 0)].tolist() == [1.0, 2.0, 3.0]  # c has a failure: last
    p = tables.paired(df, "b", "aipo", "map_loss")
    assert p["n"] == 3 and p["better"] == 1 and p["worse"] == 2
    assert p["mean"] == pytest.approx(np.mean([1.0, -0.5, 2.0]))
    assert p["se"] == pytest.approx(np.std([1.0, -0.5, 2.0], ddof=1) / np.sqrt(3))
    q = tables.paired(df, "b", "aipo", "psnr")
    assert q["better"] == 1 and q["worse"] == 2  # higher PSNR is better


def test_no_aipo_skips_paired(tmp_path):
    d = make_run(tmp_path / "r", tasks=("denoise",), priors=("glow-xs",), solvers=("latent-lbfgs", "lasso-dct"),
                 recon=False, traces=False, run_json=False)
    out = report.write_report(d, tmp_path / "elsewhere" / "LB.md", make_figures=True)
    text = out.read_text()
    assert "`observed` (doing nothing) did not run on denoise" in text and text.count("did not run") == 1
    assert "Paired comparison against" not in (tmp_path / "elsewhere" / "tables" / "ranking.md").read_text()
    assert not list((tmp_path / "elsewhere" / "figures").glob("anytime*.png"))  # no traces: no curve


def test_baseline_is_declared_or_named(tmp_path, capsys):
    """The paired comparison is against the solver declaring ``baseline = True`` (aipo) unless ``--baseline`` names
    another solver of the run; a name that is not one is one line and exit 2, before anything is written."""
    d = make_run(tmp_path / "r", tasks=("denoise",), priors=("glow-xs",), recon=False, traces=False, run_json=False)
    assert cli(["report", str(d), "--no-figures"]) == 0
    assert "## Paired comparison against `aipo`" in (d / "tables" / "ranking.md").read_text()
    assert cli(["report", str(d), "--no-figures", "--baseline", "latent-lbfgs"]) == 0
    ranking = (d / "tables" / "ranking.md").read_text()
    assert "## Paired comparison against `latent-lbfgs`" in ranking and "| aipo " in ranking
    assert "paired comparison against `latent-lbfgs`" in (d / "LEADERBOARD.md").read_text()
    capsys.readouterr()
    (d / "LEADERBOARD.md").unlink()
    assert cli(["report", str(d), "--no-figures", "--baseline", "no-such-solver"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'no-such-solver' is not a solver of this run" in err
    assert not (d / "LEADERBOARD.md").exists()


def test_traces_keyed_by_cell_and_image(tmp_path):
    d = make_run(tmp_path / "r", tasks=("denoise",), priors=("glow-xs",), splits=("test",), per_image_cell_id=False)
    from bench.report.figures import anytime_curves

    c = anytime_curves(report.load_run(d)[0], report.load_traces(d))["denoise"]
    assert set(c.columns) == {"aipo", "latent-lbfgs", "x-adam"}
    assert (c.to_numpy() >= -1e-9).all() and c.loc[0].min() > 40  # gap starts near 50, never below L*


def test_cs_sweep_needs_three_m(run):
    from bench.report.figures_recon import cs_sweep

    df = report.load_run(run)[0]
    t, label = cs_sweep(df)
    assert label == "m / n" and sorted(t.index.get_level_values("x").unique()) == [0.1, 0.2, 0.4]
    assert cs_sweep(df[df.task != "cs[m=0.4]"]) is None


def test_missing_or_empty_dir_is_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        report.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert cli(["report", str(tmp_path / "empty")]) == 2
    assert "empty" in capsys.readouterr().err


def test_task_column_without_parameters_is_split_by_p_task():
    df = pd.DataFrame({"task": ["cs", "cs", "denoise"], "p_task_m": [0.1, 2000.0, None],
                       "p_task_sigma": [0.1, 0.1, 0.1], "solver": ["aipo"] * 3})
    assert report.disambiguate_tasks(df)["task"].tolist() == ["cs[m=0.1]", "cs[m=2000]", "denoise"]
