"""``python -m bench compare RUN_A RUN_B``: paired differences per cell and changed verdicts (see bench/report/compare.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "compare two runs: paired differences per cell and the verdicts that changed"
DESCRIPTION = """Compare run RUN_B against RUN_A (two commits, protocols, machines, prior versions, budgets) on the
rows both hold, matched on task, prior, split, λ, solver, seed and image. Writes a markdown report (and the same
as a self-contained HTML page beside it): what differs between the runs (the identity columns with one value in
each), the verdicts (significant winner or tie, as in the leaderboard) that changed, the mean difference B − A per
solver and task, and every cell's paired difference of MAP loss and PSNR (mean ± se). `check` stays the CI gate.

Example: python -m bench compare results/reference/smoke /tmp/smoke --out /tmp/compare.md"""


def add_arguments(p):
    p.add_argument("run_a", metavar="RUN_A", help="first run directory (A, the reference)")
    p.add_argument("run_b", metavar="RUN_B", help="second run directory (B); differences are B − A")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="markdown file to write (default RUN_B/COMPARE.md); FILE with .html beside it")


@COMMANDS.register("compare")
def main(args) -> int:
    from pathlib import Path

    from bench.core.errors import UserError
    from bench.report.compare import compare_runs, html_report, markdown_report
    from bench.report.leaderboard import drop_skipped, load_run

    a, b = (drop_skipped(load_run(d)[0], {}) for d in (args.run_a, args.run_b))
    res = compare_runs(a, b)
    if res["cells"].empty:
        raise UserError(f"{args.run_a} and {args.run_b} have no (task, prior, split, λ, solver, seed, image) row in "
                        "common: nothing to compare")
    out = Path(args.out) if args.out else Path(args.run_b) / "COMPARE.md"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = markdown_report(res, str(args.run_a), str(args.run_b))
        out.write_text(text)
        out.with_suffix(".html").write_text(html_report(text, f"Comparison {args.run_b} vs {args.run_a}"))
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    v = res["verdicts"]
    changed = int(v["changed"].sum()) if len(v) else 0
    best = int((v["best_changed"] & ~v["changed"]).sum()) if len(v) else 0
    print(f"{len(res['cells'])} cells compared, {changed} of {len(v)} verdicts changed, best mean changed within "
          f"ties in {best}; "
          + "; ".join(f"{c}: {', '.join(x)} -> {', '.join(y)}" for c, x, y in res["differ"]))
    print(out)
    return 0
