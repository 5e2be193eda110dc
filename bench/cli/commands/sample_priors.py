"""``python -m bench sample-priors``: one PNG per shipped prior, samples at temperature T beside real test faces."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "write sample-grid PNGs of the shipped priors"


def add_arguments(p):
    p.add_argument("--out", default=None, help="output folder (default: priors/checkpoints)")
    p.add_argument("--priors", default=None, help="comma-separated prior names or paths (default: all shipped)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--n", type=int, default=16, help="samples per prior (default 16)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def write_sample_grid(lp, path, temperature=0.7, n=16, seed=0):
    """Save a figure: n samples at ``temperature`` (left) beside n real test images of the training dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from bench.core.seeding import generator
    from bench.datasets.base import load_dataset

    prov = lp.provenance
    c, h, w = lp.model.image_shape
    samples = lp.model.sample(n, temperature, generator=generator("sample-priors", lp.name, seed)).cpu()
    real = load_dataset(prov.get("dataset", "lfw-faces"), "test", prov.get("size", h), limit=n).images
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 2 * cols + 1, figsize=(2 * cols + 1, rows + 0.6))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, col = divmod(i, cols)
        for imgs, off in ((samples, 0), (real, cols + 1)):
            if i < len(imgs):
                img = imgs[i].permute(1, 2, 0).numpy()
                axes[r, col + off].imshow(img[..., 0] if c == 1 else img, cmap="gray" if c == 1 else None,
                                          vmin=0, vmax=1, interpolation="nearest")
    axes[0, cols // 2].set_title(f"{lp.name} samples, T={temperature}", fontsize=8, loc="center")
    axes[0, cols + 1 + cols // 2].set_title("real test images", fontsize=8)
    bpd = prov.get("test_bpd")
    fig.suptitle(f"{lp.name}: test {bpd} bits/dim" if bpd is not None else lp.name, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    del torch


@COMMANDS.register("sample-priors")
def main(args) -> int:
    from pathlib import Path

    from bench.core.errors import UserError
    from bench.priors.catalog import CHECKPOINT_DIR, load_prior, shipped_names

    names = args.priors.split(",") if args.priors else shipped_names()
    if not names:
        raise UserError(f"no shipped priors in {CHECKPOINT_DIR}; train some with `python -m bench train-prior`")
    out = Path(args.out) if args.out else CHECKPOINT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        lp = load_prior(name.strip(), "cpu")
        path = out / f"{lp.name}.png"
        write_sample_grid(lp, path, args.temperature, args.n, args.seed)
        print(f"wrote {path}")
    return 0
