"""``python -m bench check DIR --reference REF_DIR``: regression check, cell by cell (see bench/verify/check.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS
from bench.core.metrics import METRICS

HELP = "compare a run against a reference run (regression check)"
DESCRIPTION = """Compare run DIR against REF_DIR cell by cell (task, prior, split, λ, solver; samples matched on
seed and image). Fails (exit 1, table of what moved) when a metric moves beyond its tolerance, when cells of
REF_DIR or rows are missing on either side, when a row's status changes, when the winner (lowest mean MAP loss) of
a (task, prior, split, λ) row changes significantly, or when either directory is incomplete or inconsistent
(missing units, damaged or stray files); prints "check passed: N cells compared" otherwise. Cells only DIR has (a
solver, task or λ added since the reference) are listed as new, not compared, and do not fail the check.

A metric is judged on the paired per-image differences (current − reference) of a cell: |mean| must stay within
k standard errors of those differences plus a floor. Tolerances: <k>se+<x>% (floor relative to |reference
mean|), <k>se+<x> (absolute floor), <k>se, <x>% or a plain number. Solvers declared chaotic (latent-lbfgs) are
judged against k standard errors of the reference cell instead (README, Regression check). --exact instead
requires every value to be identical: the bit-for-bit self-check of two runs on one machine.

Default tolerances (declared per metric in bench/core/metrics.py): """ + ", ".join(
    f"{m.flag[len('--fail-'):]} {m.tolerance}" for m in METRICS.values() if m.tolerance is not None) + "."


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="run directory to check")
    p.add_argument("--reference", metavar="REF_DIR", required=True, help="reference run directory")
    for m in METRICS.values():
        if m.tolerance is not None:
            p.add_argument(m.flag, metavar="TOL", default=m.tolerance, dest=f"fail_{m.name}",
                           help=f"tolerance for {m.doc or m.name} (cell means): <k>se+<x>%%, <k>se, <x>%% or "
                                f"absolute (default {m.tolerance.replace('%', '%%')})")
    p.add_argument("--fail", action="append", default=[], metavar="METRIC=TOL",
                   help="tolerance for any metric, also one a --plugin registers (repeatable)")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first (it may register extra metrics or solvers); repeatable")
    p.add_argument("--max-lines", metavar="N", type=_count, default=60,
                   help="print at most N problem lines (default 60; 0 = all)")
    p.add_argument("--exact", action="store_true",
                   help="require bit-identical values in every row (the same run twice on one machine)")


def _count(value: str) -> int:
    """A whole number >= 0 (argparse type)."""
    import argparse

    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0 (0 = all), got {value!r}")
    return n


def tolerances(args) -> dict:
    """{metric: Tolerance} for every metric of the table that has one: --fail METRIC=TOL, else --fail-<metric>,
    else the metric's default."""
    from bench.core.errors import UserError
    from bench.core.tolerance import parse_tolerance

    given = {}
    for item in args.fail:
        name, sep, tol = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in METRICS:
            raise UserError(f"--fail {item!r}: use METRIC=TOL with METRIC one of {', '.join(METRICS)}")
        given[name] = (tol, f"--fail {name}")
    out = {}
    for m in METRICS.values():
        text, flag = given.get(m.name, (getattr(args, f"fail_{m.name}", None) or m.tolerance, m.flag))
        if text is not None:
            out[m.name] = parse_tolerance(text, flag)
    return out


@COMMANDS.register("check")
def main(args) -> int:
    from tabulate import tabulate

    from bench.core.registry import import_plugins
    from bench.core.schema import TABLE_CELL
    from bench.report.leaderboard import load_run
    from bench.store.integrity import run_problems
    from bench.verify.check import HEADERS, compare, exact_problems, provenance_notes

    import_plugins(args.plugin)
    tols = tolerances(args)
    ref, _ = load_run(args.reference)
    cur, _ = load_run(args.dir)
    broken = [(d, p) for d in (args.dir, args.reference) for p in run_problems(d)]
    for d, p in broken:
        print(f"{d}: {p}")
    new = []
    if args.exact:
        problems, n = exact_problems(cur, ref), len(ref.groupby(TABLE_CELL))
    else:
        problems, n, new = compare(cur, ref, tols)
    if broken and not problems:
        print(f"check failed: {len(broken)} problems with the run directories themselves (above)")
        return 1
    if problems:
        shown = problems if args.max_lines == 0 else problems[:args.max_lines]
        print(tabulate(shown, headers=HEADERS, tablefmt="simple", disable_numparse=True))
        if len(shown) < len(problems):
            print(f"... {len(problems) - len(shown)} more (--max-lines 0 prints all)")
        kinds = {}
        for p in problems:
            kinds[p[1]] = kinds.get(p[1], 0) + 1
        cells = len({p[0] for p in problems})
        print(f"check failed: {len(problems)} problems in {cells} cells ("
              + ", ".join(f"{k}: {v}" for k, v in kinds.items()) + f"); {n} cells compared against {args.reference}"
              + (f"; and {len(broken)} problems with the run directories (above)" if broken else ""))
        for note in provenance_notes(cur, ref):
            print(f"note: {note}")
        print(f"paired differences per cell and the verdicts that moved: python -m bench compare {args.reference} "
              f"{args.dir}")
        return 1
    shown = new if args.max_lines == 0 else new[:args.max_lines]
    for label in shown:
        print(f"new, not compared: {label}")
    if len(shown) < len(new):
        print(f"... {len(new) - len(shown)} more new cells (--max-lines 0 prints all)")
    how = "bit-identical" if args.exact else ", ".join(f"{k} {t.text}" for k, t in tols.items())
    print(f"check passed: {n} cells compared against {args.reference} ({how})"
          + (f"; {len(new)} new cells not compared" if new else ""))
    return 0
