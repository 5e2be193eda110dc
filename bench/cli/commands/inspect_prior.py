"""``python -m bench inspect-prior NAME_OR_PATH``: config, provenance and test bits/dim of a checkpoint."""
from __future__ import annotations

import json

from bench.cli.commands import COMMANDS

HELP = "print a prior checkpoint's config and provenance"


def add_arguments(p):
    p.add_argument("prior", help="shipped prior name (see `list priors`) or path to a .pt checkpoint")
    p.add_argument("--history", action="store_true", help="also print the training curve (train/val bits/dim)")


@COMMANDS.register("inspect-prior")
def main(args) -> int:
    from bench.priors.base import n_params
    from bench.priors.catalog import load_prior

    lp = load_prior(args.prior, "cpu")
    prov = dict(lp.provenance)
    history = prov.pop("history", [])
    print(f"prior:   {lp.name}")
    print(f"file:    {lp.path}")
    print(f"sha256:  {lp.sha256}")
    if prov.get("sha256") and prov["sha256"] != lp.sha256:
        print("warning: the provenance sha256 does not match the weights file")
    print(f"params:  {n_params(lp.model)}")
    print("config:  " + json.dumps(lp.model.config, sort_keys=True))
    if not prov:
        print("provenance: none (no .json beside the checkpoint)")
        return 0
    print("provenance:")
    for k, v in prov.items():
        if k != "config":
            print(f"  {k}: {v}")
    if "test_bpd" in prov:
        print(f"test bits/dim: {prov['test_bpd']} (per-pixel Gaussian baseline: "
              f"{prov.get('gaussian_baseline_test_bpd', '?')})")
    if args.history:
        for h in history:
            print(f"  step {h['step']:6d}  train {h['train_bpd']:.4f}  val {h['val_bpd']:.4f}")
    return 0
