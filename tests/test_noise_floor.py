"""The noise floor of a leaderboard table (bench.report.noise_floor) and the rule that no win is bold below it."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.core import metrics
from bench.report import leaderboard as report
from bench.report import tables
from bench.report.noise_floor import Floor, shows_win, task_floor

N_IMAGES = 10


def _rows(*, gap=1.0, budget_move=None, seeds=(0,), seed_move=None, budgets=(250, 500)) -> pd.DataFrame:
    """Two solvers on one table row (denoise, prior p, split test, λ = 1), ``N_IMAGES`` images. At the largest
    budget, ``b`` is worse than ``a`` by ``gap`` nats on every image (a significant paired difference).
    ``budget_move``: {solver: |change|} from the largest budget to the one below; ``seed_move``: {solver: change}
    from seed 0 to every other seed. PSNR mirrors the MAP loss (higher is better)."""
    recs = []
    top = max(budgets)
    for budget in budgets:
        for seed in seeds:
            for solver, offset in (("a", 0.0), ("b", gap)):
                for i in range(N_IMAGES):
                    loss = -100.0 + 3 * i + offset + 0.01 * i * (solver == "b")
                    if budget != top:
                        loss += (budget_move or {}).get(solver, 0.0)
                    if seed:
                        loss += (seed_move or {}).get(solver, 0.0)
                    recs.append(dict(task="denoise", prior="p", split="test", lam=1.0, solver=solver, seed=seed,
                                     image_id=f"img{i}", budget=budget, map_loss=loss, psnr=30.0 - loss / 10,
                                     ssim=0.5, status="ok", nfe_used=budget))
    return report.disambiguate_tasks(pd.DataFrame(recs))


def _bold(df, task, metric="map_loss"):
    h, rows = tables.metric_table(df, task, metric, ["a", "b"])
    (row,) = rows
    return {s: row[h.index(s)].startswith("**") for s in ("a", "b")}, row[-1]


def test_floor_from_budgets_is_largest_solver_median():
    df = _rows(budget_move={"a": 3.0, "b": 2.0})
    assert sorted(df["task"].unique()) == ["denoise[budget=250]", "denoise[budget=500]"]
    f = task_floor(df, "denoise[budget=500]", "map_loss")
    # standings (value − the instance's median over solvers): b − a shrinks by 1 nat, so each standing moves 0.5
    assert (f.source, f.budgets, f.solver, f.pairs, f.solvers) == ("budget", (500.0, 250.0), "b", N_IMAGES, 2)
    assert f.value == pytest.approx(0.5) and f.per_solver["a"][0] == pytest.approx(0.5)
    assert task_floor(df, "denoise[budget=500]", "psnr").value == pytest.approx(0.05)
    # progress that every solver makes does not count
    assert task_floor(_rows(budget_move={"a": 30.0, "b": 30.0}), "denoise[budget=500]", "map_loss").value == 0
    # the smallest budget has nothing below it and one seed: no floor
    assert task_floor(df, "denoise[budget=250]", "map_loss").source == "none"


def test_floor_from_seeds_without_a_smaller_budget():
    df = _rows(budgets=(500,), seeds=(0, 1, 2), seed_move={"a": 0.4, "b": -0.7})
    f = task_floor(df, "denoise", "map_loss")
    # b − a moves by 1.1 from seed 0 to the others: standings 0.55 apart for 0-1 and 0-2, equal for 1-2
    assert (f.source, f.solver, f.pairs) == ("seed", "b", 3 * N_IMAGES)
    assert f.value == pytest.approx(0.55)


def test_solvers_without_prior_passes_do_not_count():
    df = _rows(budgets=(500,), seeds=(0, 1), seed_move={"a": 0.4, "b": 9.0})
    df.loc[df["solver"] == "b", "nfe_used"] = 0   # b spends no prior passes: its seed change is the problem's
    f = task_floor(df, "denoise", "map_loss")
    assert (f.source, f.solver, f.solvers) == ("seed", "a", 1) and f.value == 0   # alone, a has no standing to move
    only_b = df[df["solver"] == "b"]
    g = task_floor(only_b, "denoise", "map_loss")
    assert not g.measurable and "no solver spends prior passes" in g.caption()


def test_budget_floor_preferred_over_seeds():
    df = _rows(seeds=(0, 1), budget_move={"a": 0.2, "b": 0.2}, seed_move={"a": 5.0, "b": 5.0})
    f = task_floor(df, "denoise[budget=500]", "map_loss")
    assert f.source == "budget" and f.value == pytest.approx(0.0) and f.pairs == 2 * N_IMAGES


def test_no_floor_with_one_budget_and_one_seed():
    df = _rows(budgets=(500,))
    f = task_floor(df, "denoise", "map_loss")
    assert f.source == "none" and not f.measurable and f.text() == "none"
    assert f.caption().startswith("Noise floor: no floor measurable (one budget, one seed, no traces)")
    bold, verdict = _bold(df, "denoise")
    assert bold == {"a": True, "b": False} and verdict.startswith("a (p = ")   # significance alone decides


def test_difference_below_floor_is_not_bold():
    df = _rows(gap=1.0, budget_move={"a": 3.0, "b": 0.0})
    v, floor = tables.task_verdicts(df, "denoise[budget=500]", "map_loss", ["a", "b"])
    (cell,) = v.values()
    assert cell["significant"] and not cell["win"] and cell["gain"] == pytest.approx(1.045)
    bold, verdict = _bold(df, "denoise[budget=500]")
    assert bold == {"a": True, "b": True}   # a tie: both bold
    assert verdict.startswith("tie (p = ") and "; Δ 1.05 ≤ floor 1.50)" in verdict
    wins, n = tables.significant_wins(df, "map_loss", ["a", "b"])
    assert n == 2 and wins["a"] == 0


def test_difference_above_floor_is_bold():
    df = _rows(gap=1.0, budget_move={"a": 0.5, "b": 0.25})
    bold, verdict = _bold(df, "denoise[budget=500]")
    assert bold == {"a": True, "b": False} and verdict.startswith("a (p = ")
    # PSNR: a is higher by ~0.1 dB, the floor is 0.0125 dB: bold too
    assert _bold(df, "denoise[budget=500]", "psnr")[0] == {"a": True, "b": False}


def test_rule_is_one_pure_function():
    f = Floor("map_loss", 0.8, "budget", "a", 40, 3, (500, 250))
    assert not shows_win(False, 10.0, f)
    assert not shows_win(True, 0.8, f) and shows_win(True, 0.81, f)
    assert not shows_win(True, float("nan"), f)
    assert shows_win(True, 0.01, Floor("map_loss", None, "none")) and shows_win(True, 0.01, None)


def test_caption_text():
    f = Floor("map_loss", 0.8123, "budget", "aipo", 320, 8, (500.0, 250.0))
    assert f.caption().startswith("Noise floor: 0.81 nats (aipo's median |standing at budget 500 − at 250| over 320 "
                                  "(image, λ, seed) pairs; the largest of 8 solvers').")
    assert "exceeds the floor" in f.caption()
    s = Floor("psnr", 0.4, "seed", "b", 60, 2)
    assert s.caption().startswith("Noise floor: 0.40 dB (b's median |standing at seed a − at seed b| over 60 (image, "
                                  "λ) seed pairs")
    assert Floor("ssim", 0.0123, "seed", "b", 6, 2).text() == "0.012"
    assert metrics.unit_of("ssim") == ""


def test_floor_in_table_files_and_html_data(tmp_path):
    from bench.report.html_data import table_rows
    from bench.report.table_files import write_tables

    df = _rows(gap=1.0, budget_move={"a": 3.0, "b": 0.0})
    out = write_tables(tmp_path, df, ["a", "b"], [], pd.DataFrame())
    md = (tmp_path / "tables" / "map_loss__denoise_budget_500.md").read_text()
    assert "Noise floor: 1.50 nats (b's median |standing at budget 500 − at 250| over 10" in md.splitlines()[2]
    csv = pd.read_csv(tmp_path / "tables" / "map_loss__denoise_budget_500.csv")
    assert (csv["noise_floor"] == 1.5).all() and (csv["floor_source"] == "budget").all()
    assert dict(zip(csv["solver"], csv["solver_floor"])) == pytest.approx({"a": 1.5, "b": 1.5})
    assert (csv["verdict"] == "tie").all() and csv["gain"].iloc[0] == pytest.approx(1.045)
    low = pd.read_csv(tmp_path / "tables" / "map_loss__denoise_budget_250.csv")
    assert low["noise_floor"].isna().all() and (low["floor_source"] == "none").all()
    assert "noise floor: 1.50 nats" in (tmp_path / "tables" / "index.md").read_text()
    assert [fl.text() for _, _, fl in out["blocks"]["map_loss"]] == ["none", "1.50 nats"]
    rows = {r["task"]: r for r in table_rows(df, ["a", "b"])}
    r = rows["denoise[budget=500]"]
    assert r["floor"]["map_loss"]["value"] == 1.5 and r["floor"]["map_loss"]["source"] == "budget"
    assert r["verdict"]["map_loss"]["significant"] and not r["verdict"]["map_loss"]["win"]
    assert rows["denoise[budget=250]"]["floor"]["map_loss"]["value"] is None


def test_headline_wins_respect_the_floor():
    from bench.report.headline import headline

    below = dict(headline(_rows(gap=1.0, budget_move={"a": 3.0, "b": 0.0})))
    above = dict(headline(_rows(gap=1.0, budget_move={"a": 0.5, "b": 0.0})))
    (t_below,), (t_above,) = below.values(), above.values()
    # two-sided Wilcoxon over 10 pairs, Holm over the group's 2 tests (one per budget): p = 2/1024 · 2 < 0.05.
    # At budget 500 b trails a by 1.05 nats: below a floor of 1.5, above one of 0.25. At 250 (no smaller budget, one
    # seed: no floor) a is 2 behind b in the first run and 0.55 ahead in the second: significance decides.
    assert (t_below.loc["a", "wins"], t_below.loc["b", "wins"]) == (0, 1)
    assert (t_above.loc["a", "wins"], t_above.loc["b", "wins"]) == (2, 0)


def test_floor_from_late_trace_points():
    """One budget, one seed, but traces: the standing at 90 % of the budget against the end."""
    from bench.report.noise_floor import with_late_values

    df = _rows(budgets=(500,))
    df["cell_id"] = [f"c{i}" for i in range(len(df))]
    # a's trace at pass 450 is 4 nats above its end, b's 1 nat: b − a shrinks by 3, each standing moves 1.5;
    # the point after 450 (pass 460) must not be the one read
    tr = [{"cell_id": r.cell_id, "nfe": n, "map_loss": r.map_loss + (4.0 if r.solver == "a" else 1.0) + (n > 450) * 50}
          for r in df.itertuples() for n in (100, 450, 460)]
    df = with_late_values(df, pd.DataFrame(tr))
    f = task_floor(df, "denoise", "map_loss")
    assert (f.source, f.pairs) == ("late", N_IMAGES) and f.value == pytest.approx(1.5)
    assert "at 90% of the budget" in f.caption()
    assert task_floor(df, "denoise", "psnr").source == "none"      # traces hold the MAP loss only
    assert with_late_values(_rows(budgets=(500,)), pd.DataFrame())["map_loss_late"].isna().all()


def test_a_row_is_judged_by_the_floors_of_its_two_solvers():
    """An erratic third solver raises the table's floor (the caption) but not the bar between two steady ones."""
    from bench.report.noise_floor import pair_floor

    f = Floor("map_loss", 80.0, "late", "c", 10, 3, per_solver={"a": (2.0, 10), "b": (3.0, 10), "c": (80.0, 10)})
    assert pair_floor(f, ("a", "b")) == 3.0 and pair_floor(f, ("a", "c")) == 80.0 and pair_floor(f) == 80.0
    assert pair_floor(f, ("lasso", "observed")) == 0.0       # no prior passes: no optimiser noise
    assert shows_win(True, 5.0, f, ("a", "b")) and not shows_win(True, 5.0, f, ("a", "c"))
    assert pair_floor(Floor("map_loss", None, "none"), ("a", "b")) is None
