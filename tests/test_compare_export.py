"""`bench compare` (paired differences, changed verdicts) and `bench export` (CSV tables, IOHanalyzer traces)."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.cli import main as cli
from bench.report.export import IOH_COLUMNS, check_ioh
from kit.synthetic_run import make_run


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    kw = dict(tasks=("denoise",), priors=("glow-xs",), splits=("test",), n_images=8, recon=False)
    a = make_run(base / "a", **kw)
    # B: x-adam 10 nats better on every image of λ = 1 (a real change), everything else the same
    b = make_run(base / "b", budget=400, shift=lambda r: -10.0 if r["solver"] == "x-adam" and r["lam"] == 1.0 else 0.0,
                 **kw)
    return a, b


def test_compare_shows_the_changed_verdict_and_paired_differences(pair, tmp_path, capsys):
    a, b = pair
    out = tmp_path / "c" / "COMPARE.md"
    assert cli(["compare", str(a), str(b), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "1 of 4 verdicts changed" in said and "budget: 200 -> 400" in said
    text = out.read_text()
    changed = text.split("## Changed verdicts", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in changed.splitlines() if line.startswith("| denoise"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["denoise", "glow-xs", "test", "1", "map_loss"] and cells[5:7] == ["aipo", "x-adam"]
    every = text.split("## Every cell", 1)[1]
    line = next(l for l in every.splitlines() if "| x-adam" in l and "| 1 " in l)
    assert "-10.00 ± 0.00" in line          # B − A, paired per image
    assert "- budget: A 200; B 400" in text
    html = out.with_suffix(".html").read_text()
    assert "<table>" in html and "http:" not in html and "https:" not in html


def test_compare_without_common_rows_is_a_user_error(pair, tmp_path, capsys):
    other = make_run(tmp_path / "o", tasks=("inpaint",), priors=("glow-xs",), splits=("test",), recon=False)
    assert cli(["compare", str(pair[0]), str(other), "--out", str(tmp_path / "x.md")]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_export_writes_tables_and_a_valid_iohanalyzer_csv(pair, tmp_path):
    a, _ = pair
    assert cli(["export", str(a), "--out", str(tmp_path / "e")]) == 0
    t = pd.read_csv(tmp_path / "e" / "ioh_traces.csv")
    assert list(t.columns) == IOH_COLUMNS and check_ioh(t) == []
    assert set(t["algorithm"]) == {"aipo", "latent-lbfgs", "x-adam", "lasso-dct"}   # lasso-dct: its final value
    assert t["function"].str.match(r"^denoise·glow-xs·λ=(0\.5|1)$").all() and (t["dimension"] == 64).all()
    assert t.groupby(["function", "algorithm", "run"])["value"].min().min() == pytest.approx(0.0, abs=1e-9)
    block = pd.read_csv(tmp_path / "e" / "tables" / "map_loss__denoise.csv")
    ok = pd.concat([pd.read_parquet(f) for f in (a / "rows").glob("*.parquet")])
    sel = ok[(ok.solver == "aipo") & (ok.lam == 1.0)]["map_loss"]
    got = block[(block.solver == "aipo") & (block.lam == 1.0)].iloc[0]
    assert got["mean"] == pytest.approx(sel.mean()) and got["n"] == 8


def test_the_ioh_schema_check_can_fail():
    good = pd.DataFrame({"evaluations": [10, 20], "value": [3.0, 1.0], "function": ["f", "f"],
                         "algorithm": ["a", "a"], "run": ["r", "r"], "dimension": [64, 64]})
    assert check_ioh(good) == []
    assert check_ioh(good.assign(value=[1.0, 3.0]))               # not improvement-only
    assert check_ioh(good.assign(value=[3.0, -1.0]))              # below the best-known optimum
    assert check_ioh(good.assign(run=["r,1", "r,1"]))             # separator inside a field
    assert check_ioh(good[IOH_COLUMNS[::-1]])                     # column order
