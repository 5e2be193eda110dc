"""``python -m bench reference DIR``: best-known optima by long multi-start solves (see bench/verify/reference.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "compute best-known optima for a finished run (long multi-start solves) into DIR/reference.parquet"
DESCRIPTION = """For every instance (task, prior, split, image, λ, seed) of the finished run DIR, restart from the
reconstructions of the best --starts solvers and run projected Adam at fixed λ for --factor × the run's budget, once
per step size in --lrs; the lowest MAP loss seen is written to DIR/reference.parquet, which `report` then uses as a
candidate best-known optimum f_ref (it can only lower f_ref).

examples:
  python -m bench reference results/default                      # 1 x budget, lr 0.01, 2 starts: ~5 min on 2 cores
  python -m bench reference results/default --factor 3 --lrs 0.01,0.002"""


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="a finished run directory (rows/, recon/)")
    p.add_argument("--factor", type=float, default=1.0, help="passes per restart, as a multiple of the budget "
                                                               "(default 1)")
    p.add_argument("--lrs", default="0.01", help="comma list of Adam step sizes (default 0.01)")
    p.add_argument("--starts", type=int, default=2, help="restart from the best N solvers' x̂ (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu; TF32 is pinned off on cuda)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms, as `run --deterministic` (cuDNN deterministic, "
                        "CUBLAS_WORKSPACE_CONFIG=:4096:8)")
    p.add_argument("--data-root", metavar="PATH", help="the dataset folder the run used (folder datasets only)")
    p.add_argument("--ood-root", metavar="PATH", help="the OOD dataset folder the run used")
    p.add_argument("--prior-dir", metavar="DIR", help="what the grid's relative checkpoint paths resolve against")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


@COMMANDS.register("reference")
def main(args) -> int:
    import math
    from pathlib import Path

    from bench.core.errors import UserError
    from bench.report.leaderboard import REFERENCE_TABLE
    from bench.store.parts import write_parquet
    from bench.verify.reference import reference_solves

    try:
        lrs = [float(v) for v in str(args.lrs).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--lrs must be a comma list of numbers, got {args.lrs!r}") from None
    if not lrs or any(not math.isfinite(v) or v <= 0 for v in lrs):
        raise UserError(f"--lrs must be positive numbers, got {args.lrs!r}")
    if not math.isfinite(args.factor) or not 0 < args.factor <= 100:
        raise UserError(f"--factor must be in (0, 100], got {args.factor}")
    if args.starts < 1:
        raise UserError(f"--starts must be >= 1, got {args.starts}")
    from bench.core.device import numerics_mode, resolve_device

    with numerics_mode(resolve_device(args.device), deterministic=args.deterministic):
        table = reference_solves(args.dir, args.factor, lrs, args.starts, args.device, progress=not args.quiet,
                                 data_root=args.data_root, ood_root=args.ood_root, prior_dir=args.prior_dir)
    path = Path(args.dir) / REFERENCE_TABLE
    write_parquet(path, table)
    from bench.core.schema import INSTANCE

    print(f"{len(table)} reference solves for {table.groupby(INSTANCE).ngroups} instances written to {path}")
    return 0
