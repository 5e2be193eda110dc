"""``python -m bench run --grid NAME``: run a benchmark grid into a results directory (see docs/ARCHITECTURE.md)."""
from __future__ import annotations

import sys

from bench.cli.commands import COMMANDS

HELP = "run a benchmark grid"
DESCRIPTION = """Run a benchmark grid: every (task, prior, split, λ, solver, seed, image) cell, batched into work units
(one solver over a split's images × λ values), one Parquet part file per unit under --out. Units with the same
prior, solver and budget are solved together, their prior passes batched (--batch-rows rows at most).

Rerunning the same command resumes: finished cells are skipped, corrupt part files are recomputed. A different grid,
code commit or tuned file in the same --out is refused unless --resume-anyway; a second run into the same --out
while one is running is refused. At the end the run writes its report, DIR/LEADERBOARD.md and DIR/figures/
(unless --no-report). Solver failures (status error / overspend / nan) are results: they are counted in the last
line and the report, and the exit status is 0 unless --strict. Exit status 2: bad input (one line, before any
work). The last line also gives the image-passes of the prior the run planned and their rate per second of wall
time.

examples:
  python -m bench run --grid smoke --out results/smoke
  python -m bench run --grid default --workers 2 --task denoise --lam 0.5,1.0
  python -m bench run --grid smoke --device cuda --deterministic   # TF32 stays off unless --tf32
  python -m bench run --grid paper --data-root /data/celeba --ood-root /data/ood   # checkpoints/*-paper.pt"""


def add_arguments(p):
    from bench.plan.filters import add_filter_arguments
    from bench.run.executors import add_arguments as add_executor_arguments
    from bench.run.executors import positive_int

    p.add_argument("--grid", required=True, metavar="NAME|FILE", help="preset name (see `list grids`) or a .toml file")
    p.add_argument("--out", metavar="DIR", help="results directory (default: results/<grid name>)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda (default: auto)")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 matmuls and convolutions on CUDA (faster, ~1e-3 relative error; default: pinned "
                        "off). Recorded per row (column tf32); no effect on CPU, where it is recorded as False")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (torch.use_deterministic_algorithms, cuDNN deterministic, "
                        "CUBLAS_WORKSPACE_CONFIG=:4096:8) in every worker; an op without a deterministic kernel "
                        "fails its unit. Recorded in run.json and per row (column deterministic)")
    add_executor_arguments(p)
    p.add_argument("--batch-rows", type=positive_int, metavar="N",
                   help="most rows whose prior passes are batched together (default: 256 on CPU, 1024 on CUDA; "
                        "1 solves every unit alone). Float results depend on it in the last bits; recorded per row "
                        "(column pass_batch)")
    p.add_argument("--tuned", metavar="FILE", help="apply tuned solver parameters written by `bench tune`")
    add_filter_arguments(p)
    p.add_argument("--data-root", metavar="PATH", help="folder of the grid's dataset (overrides the grid file)")
    p.add_argument("--ood-root", metavar="PATH",
                   help="folder of the grid's OOD dataset (default: --data-root when both splits use one dataset)")
    p.add_argument("--prior-dir", metavar="DIR", help="folder that relative prior checkpoint paths resolve against "
                   "(default: the current directory)")
    p.add_argument("--resume-anyway", action="store_true",
                   help="add to a --out made by a different grid, code commit or tuned file (recorded in run.json)")
    p.add_argument("--retry-failed", action="store_true", help="recompute units that have failed rows")
    p.add_argument("--dry-run", action="store_true", help="validate and plan, print what would run, run nothing")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first (it may register extra solvers, tasks or datasets); repeatable")
    p.add_argument("--no-isolation", action="store_true",
                   help="UNSAFE, for debugging and profiling: run solvers in the harness's process (no solver "
                        "process, no oracle, no unit limits); a plugin can then reach scores and clean images")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write DIR/LEADERBOARD.md and figures at the end")
    p.add_argument("--strict", action="store_true", help="exit 1 when any row failed (for CI)")


@COMMANDS.register("run")
def main(args) -> int:
    from pathlib import Path

    from bench.core.device import resolve_device
    from bench.core.registry import import_plugins
    from bench.plan.filters import apply_filters, filters_of
    from bench.plan.grid import load_grid
    from bench.run.executors import make_executor
    from bench.run.runner import run_grid
    from bench.run.tuning import load_tuned

    imports = import_plugins(args.plugin)
    grid = load_grid(args.grid, data_root=args.data_root, ood_data_root=args.ood_root)
    grid = apply_filters(grid, **filters_of(args))
    tuned = load_tuned(args.tuned) if args.tuned else None
    device = resolve_device(args.device)
    if args.deterministic:   # before CUDA starts here or in a worker (spawned workers inherit the environment)
        import os

        from bench.core.device import CUBLAS_WORKSPACE

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    executor = make_executor(args, imports)
    out = Path(args.out) if args.out else Path("results") / grid.name
    summary = run_grid(grid, out, device=device.type if device.index is None else str(device), executor=executor,
                       tuned=tuned, prior_dir=args.prior_dir, resume_anyway=args.resume_anyway,
                       retry_failed=args.retry_failed, progress=not args.quiet, dry_run=args.dry_run,
                       imports=imports, argv=sys.argv[1:], tf32=args.tf32, deterministic=args.deterministic,
                       isolate=not args.no_isolation, batch_rows=args.batch_rows)
    if args.dry_run:
        return 0
    line = summary.line()
    if not args.no_report and (out / "rows").is_dir():
        from bench.report.leaderboard import write_report

        line += f"; leaderboard {write_report(out)}"
    print(line)
    return summary.exit_code if args.strict else 0
