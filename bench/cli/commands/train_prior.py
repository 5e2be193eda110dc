"""``python -m bench train-prior``: fit a flow prior by maximum likelihood (see priors/training.py)."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "train a normalizing-flow prior"
DESCRIPTION = """Train a normalizing-flow prior on a dataset's train split (augmented, dequantised), keep the
checkpoint with the best validation bits/dim (early stopping) and report test bits/dim.

Writes OUT/<name>.pt (state dict + config, loadable with torch.load(weights_only=True)) and OUT/<name>.json
(provenance: config, dataset, steps, seed, train/val/test bits/dim, git commit, sha256 of the weights).

example: python -m bench train-prior --prior glow --dataset lfw-faces --size 16 --preset s --minutes 10"""


def add_arguments(p):
    p.add_argument("--prior", required=True, help="architecture: realnvp, glow, ... (`list priors` names them)")
    p.add_argument("--dataset", default="lfw-faces", help="dataset with train/val/test splits (default lfw-faces)")
    p.add_argument("--data-root", default=None, help="dataset folder (needed by celeba and image-folder)")
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    p.add_argument("--eval-images", type=int, default=None,
                   help="use only the first N val and test images for bits/dim (default: all)")
    p.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    p.add_argument("--preset", default="s", help="size preset: xs, s, m or paper (default s)")
    p.add_argument("--steps", type=int, default=10000,
                   help="maximum optimiser steps (default 10000; early stopping usually ends sooner)")
    p.add_argument("--minutes", type=float, default=None, help="wall-time limit in minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of init, batches, augmentation and noise (default 0)")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--name", default=None, help="checkpoint name (default <prior>-<preset>)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--eval-every", type=int, default=25, help="validation interval in steps (default 25)")
    p.add_argument("--patience", type=int, default=40,
                   help="stop after this many evaluations without a new best validation bits/dim (default 40)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--init", default=None, help="continue from this checkpoint (same architecture, preset, shape)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import MODULE first (it may register a prior architecture or a dataset); repeatable")


@COMMANDS.register("train-prior")
def main(args) -> int:
    import math

    from bench.core.errors import UserError
    from bench.core.registry import import_plugins
    from bench.priors.training import train_prior

    import_plugins(args.plugin)
    for flag, v, lo in (("--lr", args.lr, 0.0), ("--minutes", args.minutes, 0.0)):
        if v is not None and (not math.isfinite(v) or v <= lo):
            raise UserError(f"{flag} must be a finite number > {lo:g}, got {v}")
    for flag, v in (("--train-images", args.train_images), ("--eval-images", args.eval_images),
                    ("--steps", args.steps), ("--batch", args.batch), ("--eval-every", args.eval_every),
                    ("--patience", args.patience), ("--size", args.size)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be >= 1, got {v}")

    prov = train_prior(args.prior, dataset=args.dataset, size=args.size, preset=args.preset, steps=args.steps,
                       minutes=args.minutes, seed=args.seed, out=args.out, batch=args.batch, lr=args.lr,
                       device=args.device, name=args.name, eval_every=args.eval_every, patience=args.patience,
                       progress=not args.no_progress, data_root=args.data_root,
                       train_images=args.train_images, eval_images=args.eval_images, init=args.init)
    print(f"{prov['name']}: best step {prov['best_step']}/{prov['steps_run']} ({prov['stop_reason']}), "
          f"bits/dim train {prov['train_bpd']:.3f} val {prov['val_bpd']:.3f} test {prov['test_bpd']:.3f} "
          f"(per-pixel Gaussian test {prov['gaussian_baseline_test_bpd']:.3f}), {prov['wall_time_s']:.0f} s")
    print(f"wrote {args.out}/{prov['name']}.pt and .json")
    return 0
