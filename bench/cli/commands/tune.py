"""``python -m bench tune --grid NAME``: pick declared step sizes on validation images (see bench/run/tuning.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "tune declared step sizes on validation images"
DESCRIPTION = """Tune each solver's declared `tunable` parameters (step sizes) per (solver, task, prior) of a grid on
validation images disjoint from the test images (the dataset's `val` split), under the grid's budget, by the mean MAP
loss (AIPO eq. 3; the benchmark's primary metric). Writes a JSON file for `run --tuned FILE`.

examples:
  python -m bench tune --grid default --out results/tuned-default.json
  python -m bench run --grid default --tuned results/tuned-default.json"""


def add_arguments(p):
    from bench.plan.filters import add_filter_arguments
    from bench.run.executors import add_arguments as add_executor_arguments
    from bench.run.tuning import DEFAULT_FACTORS, DEFAULT_IMAGES

    p.add_argument("--grid", required=True, metavar="NAME|FILE", help="preset name or .toml grid file")
    p.add_argument("--out", metavar="FILE", help="output JSON (default: results/tuned-<grid>.json)")
    p.add_argument("--work-dir", metavar="DIR", help="where candidate units are written (default: <out>-units/); "
                   "an interrupted tuning run resumes from it")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="K",
                   help=f"validation images to tune on (default {DEFAULT_IMAGES})")
    p.add_argument("--factors", default=",".join(str(f) for f in DEFAULT_FACTORS), metavar="LIST",
                   help="multipliers of the start value to try (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    add_executor_arguments(p)
    add_filter_arguments(p, splits=False)
    p.add_argument("--data-root", metavar="PATH", help="folder of the grid's dataset (overrides the grid file)")
    p.add_argument("--prior-dir", metavar="DIR", help="folder that relative prior checkpoint paths resolve against")
    p.add_argument("--plugin", action="append", metavar="MODULE", help="import MODULE first; repeatable")
    p.add_argument("--no-isolation", action="store_true",
                   help="UNSAFE, for debugging: run solvers in the harness's process (see `run --help`)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


@COMMANDS.register("tune")
def main(args) -> int:
    import math
    from pathlib import Path

    from bench.core.device import resolve_device
    from bench.core.errors import UserError
    from bench.core.registry import import_plugins
    from bench.plan.filters import apply_filters
    from bench.plan.grid import load_grid
    from bench.run.executors import make_executor
    from bench.run.tuning import tune_grid

    imports = import_plugins(args.plugin)
    try:
        factors = tuple(float(f) for f in args.factors.split(",") if f.strip())
    except ValueError:
        factors = ()
    bad = [f for f in factors if not (math.isfinite(f) and f > 0)]
    if not factors or bad:
        raise UserError(f"--factors must be a comma list of positive numbers, got {args.factors!r}"
                        + (f" ({', '.join(f'{f:g}' for f in bad)} not > 0)" if bad else ""))
    grid = load_grid(args.grid, data_root=args.data_root)
    grid = apply_filters(grid, task=args.task, prior=args.prior, solver=args.solver, lam=args.lam)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path("results") / f"tuned-{grid.name}.json"
    record = tune_grid(grid, out, device=device.type if device.index is None else str(device),
                       executor=make_executor(args, imports), factors=factors, n_images=args.images,
                       work_dir=args.work_dir, prior_dir=args.prior_dir, imports=imports, progress=not args.quiet,
                       isolate=not args.no_isolation)
    n = sum(len(p) for t in record["params"].values() for p in t.values())
    print(f"tuned {n} (solver, task, prior) combinations of grid {grid.name!r}; wrote {out} "
          f"(use: python -m bench run --grid {args.grid} --tuned {out})")
    return 0
