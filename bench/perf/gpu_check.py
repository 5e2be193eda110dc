"""``python -m bench.perf.gpu_check``: the prepared GPU readiness check (a few minutes of GPU time, never needed by CI).

1. Runs the smoke grid with ``--device cuda --deterministic`` (TF32 off, the default) and checks it against the committed CPU reference with the
   statistical tolerances (GPU kernels differ in the last bits; chaotic solvers are judged on their spread).
2. Measures one prior pass (forward + backward of log_prob w.r.t. x) of the paper-scale priors (RealNVP and Glow
   ``paper`` presets at 64×64×3, untrained weights: the cost does not depend on the weights) at batch 1, 64 and 256.
3. Prints a projection of the ``paper`` grid's GPU-hours from those rates: rows × budget passes for the
   budget-spending solvers, at the batch-256 rate.

Without a GPU it says so and exits 0.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import REPO_ROOT

CHECK_TOLERANCES = ["--fail-map-loss", "3se+1%", "--fail-psnr", "3se+0.2", "--fail-ssim", "3se+0.01"]


def pass_rate(model, batch: int, device, reps: int = 5) -> float:
    """Image-passes per second at ``batch`` (after one warm-up pass)."""
    import torch

    x = torch.rand((batch, *model.image_shape), device=device).clamp(0.02, 0.98)

    def once():
        xr = x.detach().requires_grad_(True)
        torch.autograd.grad(model.log_prob(xr).sum(), xr)

    from bench.core.device import clock

    once()
    t0 = clock(device)
    for _ in range(reps):
        once()
    return batch * reps / (clock(device) - t0)


def paper_image_passes() -> int:
    """Image-passes of the ``paper`` grid: rows of the solvers that spend the whole budget × the budget."""
    from bench.plan.grid import load_grid
    from bench.solvers.base import SOLVERS

    g = load_grid("paper")
    full_budget = [s for s in g.values("solvers") if SOLVERS.get(s.split("[")[0]).uses_prior
                   and not SOLVERS.get(s.split("[")[0]).lam_independent]
    images = {"id": g.images_per_split.get("id") or 200, "ood": g.images_per_split.get("ood") or 7}
    rows = sum(images[s] for s in g.values("splits")) * len(g.values("lams"))
    return rows * len(g.values("priors")) * len(g.values("tasks")) * len(full_budget) * max(g.budgets)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (this is not a failure)")
        return 0
    device = torch.device("cuda")
    print(f"gpu_check: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "smoke-cuda"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", "smoke", "--out", str(out), "--device",
                            "cuda", "--deterministic", "-q", "--no-report"], cwd=REPO_ROOT)
        print(f"smoke on cuda: exit {r.returncode}, {time.perf_counter() - t0:.1f} s")
        c = subprocess.run([sys.executable, "-m", "bench", "check", str(out), "--reference",
                            str(REPO_ROOT / "results" / "reference" / "smoke"), *CHECK_TOLERANCES], cwd=REPO_ROOT)
    from bench.priors.base import ARCHS

    rates = {}
    for arch in ("realnvp", "glow"):
        model = ARCHS.get(arch)(image_shape=(3, 64, 64), preset="paper").to(device).eval().requires_grad_(False)
        rates[arch] = {b: pass_rate(model, b, device) for b in (1, 64, 256)}
        print(f"{arch}-paper: " + ", ".join(f"batch {b}: {v:,.0f} img-passes/s" for b, v in rates[arch].items()))
        del model
        torch.cuda.empty_cache()
    n = paper_image_passes()
    hours = sum(n / 2 / rates[a][256] for a in rates) / 3600
    print(f"paper grid: {n:,} image-passes of the budget-spending solvers; at the batch-256 rates ≈ {hours:.1f} "
          f"GPU-hours on this GPU (MLE stage, scoring and latent-lbfgs not included)")
    return max(r.returncode, c.returncode)


if __name__ == "__main__":
    sys.exit(main())
