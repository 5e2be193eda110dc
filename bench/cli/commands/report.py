"""``python -m bench report DIR [--out FILE]``: LEADERBOARD.md (tables, ranking, summary) and PNG figures."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "write LEADERBOARD.md tables and figures from a run directory"
DESCRIPTION = """Write DIR/LEADERBOARD.md from a run directory: a table per metric that declares one (MAP loss, PSNR
and SSIM, and any a --plugin registers; mean ± se over (image, seed), best in bold), a ranking with paired
comparisons against the baseline solver (the one that declares itself the baseline, or --baseline), a generated
summary, and PNG figures (anytime curves with the gap to the best-known
optimum, data profiles and target ECDFs, rankings against the budget, reconstructions, PSNR vs m) in figures/
beside the markdown file, and the best-known optima and every row's gap in profiles/. Table verdicts are
significance-tested (Wilcoxon signed-rank, Holm) and must exceed each table's noise floor (the median change of a
solver's result between the run's budgets, else between its seeds). Prints the path."""


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="run directory (rows/*.parquet, traces/, recon/, run.json)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="markdown file to write (default DIR/LEADERBOARD.md; its folder must exist); figures go to "
                        "its folder's figures/")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--with", dest="also", action="append", default=[], metavar="DIR",
                   help="another run directory of the same instances whose rows and traces count towards the "
                        "best-known optimum f_ref (repeatable)")
    p.add_argument("--baseline", metavar="SOLVER", default=None,
                   help="the solver of the paired comparison (a solver of the run; default: the solver that declares "
                        "itself the baseline)")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first (it may register extra metrics); repeatable")


def check_out_file(out) -> None:
    """``--out FILE``: its folder must exist and be writable, and FILE must not be a folder (UserError, before any
    work; the report never creates folders the user did not ask for)."""
    import os
    from pathlib import Path

    from bench.core.errors import UserError

    p = Path(out)
    folder = p.parent
    if p.is_dir():
        raise UserError(f"--out {str(p)!r} is a folder; give the markdown file to write, e.g. "
                        f"{str(p / 'LEADERBOARD.md')!r}")
    if not folder.is_dir():
        raise UserError(f"--out {str(p)!r}: folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(p)!r}: folder {str(folder)!r} is not writable")


@COMMANDS.register("report")
def main(args) -> int:
    from bench.core.registry import import_plugins
    from bench.report.leaderboard import write_report

    if args.out:
        check_out_file(args.out)
    import_plugins(args.plugin)
    path = write_report(args.dir, args.out, make_figures=not args.no_figures, also=args.also, baseline=args.baseline)
    print(path)
    return 0
