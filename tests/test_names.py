"""No registered name is spelled outside its declaration: the string literals of bench/ (docstrings and comments
aside) never equal the name of a registered solver, a registered metric or a row status, except in the module that
declares it — metrics in bench/core/metrics.py, statuses in bench/core/schema.py, solvers in their own files under solvers/
(not scanned). Code asks the declarations instead: ``METRICS.role(...)``, ``Status.OK``, ``role_solver(...)``.
Tests and docs may name them."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DECLARING = {"metric": "bench/core/metrics.py", "status": "bench/core/schema.py"}
# (module, literal): a different thing that happens to share a registered name
ALLOWED = {("bench/core/schema.py", "observed"): "the recon file's array of the observed image, not the solver"}


def registered() -> dict[str, set[str]]:
    """{name: the kinds of registered thing it names}."""
    from bench.core.metrics import METRICS
    from bench.core.schema import Status
    from bench.solvers.base import SOLVERS

    out: dict[str, set[str]] = {}
    for kind, names in (("solver", SOLVERS.names()), ("metric", list(METRICS)), ("status", [s.value for s in Status])):
        for n in names:
            out.setdefault(n, set()).add(kind)
    return out


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of the string literals of a module that are code: not docstrings, not ``float("nan")``'s
    argument."""
    tree = ast.parse(path.read_text())
    skip = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    skip |= {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "float" for a in n.args}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def name_literals(root: Path, names: dict[str, set[str]]) -> list[str]:
    """``path:line: 'name' (kinds)`` for every literal under ``root/bench`` that spells a registered name outside the
    module declaring it."""
    hits = []
    for path in sorted((root / "bench").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for line, value in literals(path):
            kinds = {k for k in names.get(value, ()) if DECLARING.get(k) != rel}
            if kinds and (rel, value) not in ALLOWED:
                hits.append(f"{rel}:{line}: {value!r} ({', '.join(sorted(kinds))})")
    return hits


def test_no_solver_metric_or_status_name_outside_its_declaration():
    assert name_literals(REPO, registered()) == []


def test_the_check_finds_an_inserted_name(tmp_path):
    """It can fail: a copy of bench/ with a solver, a metric and a status written into the report is caught, and
    the same names in a docstring, a comment, ``float("nan")`` or the declaring module are not."""
    shutil.copytree(REPO / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__", "static",
                                                                                     "templates", "grids"))
    names = registered()
    assert name_literals(tmp_path, names) == []
    report = tmp_path / "bench" / "report" / "leaderboard.py"
    report.write_text(report.read_text() + '\n\ndef _odd():\n    """aipo, psnr and ok in a docstring are fine."""\n'
                      '    # so is "overspend" in a comment\n    return "aipo", ["psnr"], {"status": "overspend"}, '
                      'float("nan")\n')
    metrics = tmp_path / "bench" / "core" / "metrics.py"
    metrics.write_text(metrics.read_text() + '\n_X = "ssim"\n')
    hits = name_literals(tmp_path, names)
    assert sorted(h.split(": ", 1)[1] for h in hits) == ["'aipo' (solver)", "'overspend' (status)", "'psnr' (metric)"]
    assert all(h.startswith("bench/report/leaderboard.py:") for h in hits)
