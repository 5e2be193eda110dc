"""``python -m bench export DIR``: tables as CSV and the anytime traces in IOHanalyzer's CSV format."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "export a run's tables (CSV) and anytime traces (IOHanalyzer CSV)"
DESCRIPTION = """Export run DIR for other tools into OUT (default DIR/export): every per-cell table of the
leaderboard as CSV (tables/*.csv: metric, task, prior, split, λ, solver, mean, se, n, failed, verdict, p), and the
anytime traces as ioh_traces.csv in IOHanalyzer's CSV format (evaluations = prior passes, value = MAP loss − f_ref,
function = task·prior·λ, algorithm = solver, run = image·seed, dimension = pixels; improvement-only records).

Example: python -m bench export results/default --out /tmp/export"""


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--out", metavar="FOLDER", default=None, help="output folder (default DIR/export)")


@COMMANDS.register("export")
def main(args) -> int:
    from pathlib import Path

    from bench.core.errors import UserError
    from bench.report.export import check_ioh, ioh_traces
    from bench.report.findings import regime
    from bench.report.headline import headline
    from bench.report.leaderboard import drop_skipped, load_run, load_traces
    from bench.report.profiles import f_ref
    from bench.report.table_files import write_tables
    from bench.report.tables import solver_order

    df, meta = load_run(args.dir)
    df = drop_skipped(df, meta)
    out = Path(args.out) if args.out else Path(args.dir) / "export"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    write_tables(out, df, solver_order(df["solver"].unique(), meta), headline(df, meta), regime(df))
    traces = load_traces(args.dir)
    table = ioh_traces(df, traces, f_ref(df, traces))
    problems = check_ioh(table)
    if problems:
        raise UserError(f"IOHanalyzer export is malformed: {problems[0]}")
    table.to_csv(out / "ioh_traces.csv", index=False)
    print(f"{out / 'tables'} ({len(list((out / 'tables').glob('*.csv')))} CSV files); {out / 'ioh_traces.csv'} "
          f"({len(table):,} records)")
    return 0
