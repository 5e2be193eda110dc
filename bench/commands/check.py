"""``python -m bench check DIR --reference REF_DIR``: regression check, cell by cell (see bench/check.py)."""
from __future__ import annotations

# Default tolerances (bench/check.py explains the rule): tight, for reruns on one machine's code path.
DEFAULTS = {"map_loss": "3se+0.01%", "psnr": "3se+0.05", "ssim": "3se+0.002"}

HELP = "compare a run against a reference run (regression check)"
DESCRIPTION = f"""Compare run DIR against REF_DIR cell by cell (task, prior, split, λ, solver; samples matched on
seed and image). Fails (exit 1, table of what moved) when a metric moves beyond its tolerance, when cells or rows
are missing on either side, when a row's status changes, when the winner (lowest mean MAP loss) of a
(task, prior, split, λ) row changes significantly, or when either directory is incomplete or inconsistent
(missing units, damaged or stray files); prints "check passed: N cells compared" otherwise.

A metric is judged on the paired per-image differences (current − reference) of a cell: |mean| must stay within
k standard errors of those differences plus a floor. Tolerances: <k>se+<x>% (floor relative to |reference
mean|), <k>se+<x> (absolute floor), <k>se, <x>% or a plain number. Solvers declared chaotic (latent-lbfgs) are
judged against k standard errors of the reference cell instead (README, Regression check). Defaults: map-loss
{DEFAULTS['map_loss']}, psnr {DEFAULTS['psnr']} dB, ssim {DEFAULTS['ssim']}. --exact instead requires every value
to be identical: the bit-for-bit self-check of two runs on one machine."""


def add_arguments(p):
    p.add_argument("dir", metavar="DIR", help="run directory to check")
    p.add_argument("--reference", metavar="REF_DIR", required=True, help="reference run directory")
    p.add_argument("--fail-map-loss", metavar="TOL", default=DEFAULTS["map_loss"],
                   help=f"tolerance for MAP loss: <k>se+<x>%%, <k>se, <x>%% or absolute (default "
                        f"{DEFAULTS['map_loss'].replace('%', '%%')})")
    p.add_argument("--fail-psnr", metavar="TOL", default=DEFAULTS["psnr"],
                   help=f"tolerance for PSNR cell means in dB (default {DEFAULTS['psnr'].replace('%', '%%')})")
    p.add_argument("--max-lines", metavar="N", type=int, default=60,
                   help="print at most N problem lines (default 60; 0 = all)")
    p.add_argument("--fail-ssim", metavar="TOL", default=DEFAULTS["ssim"],
                   help=f"tolerance for SSIM cell means (default {DEFAULTS['ssim'].replace('%', '%%')})")
    p.add_argument("--exact", action="store_true",
                   help="require bit-identical values in every row (the same run twice on one machine)")


def main(args) -> int:
    from tabulate import tabulate

    from bench.check import HEADERS, compare, exact_problems, parse_tolerance, provenance_notes
    from bench.report import load_run

    tols = {"map_loss": parse_tolerance(args.fail_map_loss, "--fail-map-loss"),
            "psnr": parse_tolerance(args.fail_psnr, "--fail-psnr"),
            "ssim": parse_tolerance(args.fail_ssim, "--fail-ssim")}
    from bench.integrity import run_problems

    ref, _ = load_run(args.reference)
    cur, _ = load_run(args.dir)
    broken = [(d, p) for d in (args.dir, args.reference) for p in run_problems(d)]
    for d, p in broken:
        print(f"{d}: {p}")
    if args.exact:
        problems, n = exact_problems(cur, ref), len(ref.groupby(["task", "prior", "split", "lam", "solver"]))
    else:
        problems, n = compare(cur, ref, tols)
    if broken and not problems:
        print(f"check failed: {len(broken)} problems with the run directories themselves (above)")
        return 1
    if problems:
        shown = problems if args.max_lines <= 0 else problems[:args.max_lines]
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
        return 1
    how = ("bit-identical" if args.exact else
           f"map_loss {tols['map_loss'].text}, psnr {tols['psnr'].text}, ssim {tols['ssim'].text}")
    print(f"check passed: {n} cells compared against {args.reference} ({how})")
    return 0
