"""``python -m bench perf``: batched speed-up, grid wall times and peak memory on this machine (see bench/perf/measure.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "measure batched speed-up, grid wall times and peak memory"
DESCRIPTION = """Measure, on this machine, in one run, and print markdown tables (for README):
  - image-steps per second of one prior pass (forward + backward of log_prob w.r.t. x) batched (batch 256 and
    the default grid's largest batch of units) vs a loop of batch-1 passes, and the ratio, per shipped prior;
    each batched pass's time / its FLOP bound, beside the time its convolution kernels alone take / the same bound
    (torch.profiler, CPU): how much of the gap is the kernels at these layer shapes and how much everything else;
  - wall time of the smoke and default grids (each run in a child process into a temporary directory);
  - peak RSS of each grid's process and of this one;
  - where the time goes: each timed grid's FLOP bound (planned image-passes x conv + matmul FLOPs per image-pass of
    their prior / this machine's 3x3-convolution rate on every usable core, or on the GPU) and wall time / bound.
    The full grid is not timed by default (about 30 minutes on 2 cores): --grids full times it.
Timing waits for the GPU's queued work (torch.cuda.synchronize) before every clock read; TF32 is off on CUDA.
Targets (2-core CPU): speed-up >= 10x at 16x16, smoke <= 60 s, default <= 12 min, peak RSS <= 4 GB, every timed
grid within 2.5x of its FLOP bound.
Prior passes are measured with --threads torch threads (default 1, what each work unit runs); grids run as
`python -m bench run` does by default (--workers auto: one worker per usable core).

examples:
  python -m bench perf --skip-default        # priors + smoke grid (about 2 minutes)
  python -m bench perf                       # everything (adds the default grid: up to 12 minutes)
  python -m bench perf --grids none --priors realnvp-s,glow-s
  python -m bench perf --grids none --compile   # torch.compile against eager for every shipped prior"""

DEFAULT_GRIDS = ("smoke", "default")


def add_arguments(p):
    p.add_argument("--grids", metavar="LIST", default=None,
                   help="comma list of grids to time (default: smoke,default; 'none' for no grid)")
    p.add_argument("--skip-default", action="store_true", help="do not time the default grid (minutes)")
    p.add_argument("--priors", metavar="LIST", default=None,
                   help="comma list of priors to measure (default: every shipped prior present; 'none' for none)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch threads for the prior passes and per grid work unit (default 1, as in `run`)")
    p.add_argument("--min-time", type=float, default=1.0, metavar="S",
                   help="seconds each throughput measurement runs at least (default 1)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile (inductor) against eager per prior and batch (minutes on a cold cache)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep each timed grid's results in DIR/<grid> (a new folder; "
                   "`bench report DIR/<grid>` writes its leaderboard) instead of a temporary folder")


def _list(value, default):
    if value is None:
        return list(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    return [] if items == ["none"] else items


@COMMANDS.register("perf")
def main(args) -> int:
    import json

    from bench.core.errors import UserError
    from bench.perf.measure import available_priors, run_perf
    from bench.plan.grid import grid_path
    from bench.priors.catalog import SHIPPED, shipped_names

    if args.min_time <= 0:
        raise UserError(f"--min-time must be > 0, got {args.min_time}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    grids = _list(args.grids, DEFAULT_GRIDS)
    if args.skip_default:
        grids = [g for g in grids if g != "default"]
    for g in grids:
        grid_path(g)
    if args.keep:
        from pathlib import Path

        taken = [str(Path(args.keep) / Path(g).stem) for g in grids if (Path(args.keep) / Path(g).stem).exists()]
        if taken:
            raise UserError(f"--keep {args.keep!r}: {', '.join(taken)} already exists; a timed grid runs into a new "
                            f"folder (every unit computed)")
    if args.priors is None:
        priors = shipped_names()
        if not priors:
            raise UserError(f"no shipped prior checkpoints found (expected {', '.join(SHIPPED)}); pass --priors "
                            f"PATH.pt or --priors none")
    else:
        priors = _list(args.priors, ())
        missing = [p for p in priors if p not in available_priors(priors)]
        if missing:
            raise UserError(f"--priors: {', '.join(missing)} not found (shipped present: "
                            f"{', '.join(shipped_names()) or 'none'}; or a path to a .pt checkpoint)")
    result = run_perf(grids, priors, device_name=args.device, min_time=args.min_time, threads=args.threads,
                      with_compile=args.compile, keep=args.keep)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0
