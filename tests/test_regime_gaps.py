"""The regime-axis gaps: per (prior, task, λ) point, each solver's paired distance to the best, against the ratio."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.report.regime_gaps import has_axis, plot_regime_gaps, regime_gap_lines, regime_gaps


def _rows(points=4, fail=None):
    """Two solvers; at point k the data term weighs 2^k against the prior; solver b is 1 nat worse and 0.5 dB
    better than a on image 0 and 3 nats worse / 1 dB worse on image 1."""
    out = []
    for k in range(points):
        for img, (dl, dp) in enumerate(((1.0, 0.5), (3.0, -1.0))):
            for solver, extra, psnr_extra in (("a", 0.0, 0.0), ("b", dl, dp)):
                out.append({"dataset": "d", "prior": "p", "task": f"denoise[sigma={0.1 / 2 ** k:g}]", "lam": 1.0,
                            "split": "id", "seed": 0, "image_id": f"i{img}", "solver": solver, "status": "ok",
                            "map_loss": 100.0 + extra, "psnr": 20.0 + psnr_extra, "nfe_used": 10,
                            "log_prior": -100.0, "data_nll": -100.0 * 2 ** k, "bits_per_dim": 1.0})
    df = pd.DataFrame(out)
    if fail is not None:
        df.loc[fail, "status"] = "nan"
    return df


def test_gaps_are_paired_distances_to_the_best():
    g = regime_gaps(_rows())
    assert sorted(g["ratio"].unique()) == [1.0, 2.0, 4.0, 8.0]
    a, b = (g[g.solver == s].iloc[0] for s in "ab")
    assert a["map_loss_gap"] == 0 and b["map_loss_gap"] == pytest.approx(2.0)     # mean of 1 and 3
    assert a["psnr_gap"] == pytest.approx(0.25) and b["psnr_gap"] == pytest.approx(0.5)   # (0 + 0.5)/2, (0 + 1)/2
    assert has_axis(g) and not has_axis(regime_gaps(_rows(points=3)))
    text = "\n".join(regime_gap_lines(g))
    assert "`a` (0.00)" in text and "`b` +2.00" in text and "nan" not in text


def test_a_failed_row_removes_the_solver_from_that_point_only():
    df = _rows()
    g = regime_gaps(df, split="id")
    bad = df.index[(df.solver == "b") & (df.task == df.task.iloc[0])][0]
    g2 = regime_gaps(_rows(fail=bad))
    first = g2[g2.task == df.task.iloc[0]].set_index("solver")
    assert math.isnan(first.loc["b", "map_loss_gap"]) and first.loc["a", "map_loss_gap"] == 0
    assert np.allclose(g2[g2.task != df.task.iloc[0]]["map_loss_gap"], g[g.task != df.task.iloc[0]]["map_loss_gap"])


def test_figure_only_with_an_axis(tmp_path):
    assert plot_regime_gaps(regime_gaps(_rows()), tmp_path / "r.png") and (tmp_path / "r.png").stat().st_size > 0
    assert not plot_regime_gaps(regime_gaps(_rows(points=2)), tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def test_the_do_nothing_and_paired_baselines_are_each_declared_by_one_solver():
    """The report finds the do-nothing solver and the paired comparison's baseline by their declarations, not by
    names written in the report."""
    from bench.core.schema import BASELINE, TRIVIAL
    from bench.report.roles import role_solver
    from bench.solvers.base import SOLVERS

    assert [n for n, c in SOLVERS.items() if c.does_nothing] == [role_solver(TRIVIAL)] == ["observed"]
    assert [n for n, c in SOLVERS.items() if c.baseline] == [role_solver(BASELINE)] == ["aipo"]
