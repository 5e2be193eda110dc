"""``inpaint``: y = M ⊙ (x + e), random blocks missing (AIPO §4.4). Missing pixels of ``y`` are 0, and the data
fit counts observed pixels only."""
from __future__ import annotations

from bench.core.errors import UserError
from bench.core.lazy import lazy_module
from bench.core.registry import Param
from bench.core.seeding import generator
from bench.tasks.base import TASKS, Problem, Task, sigma_param

torch = lazy_module("torch")


@TASKS.register("inpaint")
class Inpaint(Task):
    """y = M ⊙ (x + e) with M masking random ``block``×``block`` tiles until ``frac`` of pixels are missing;
    e ~ N(0, 0.02²I) (AIPO §4.4). Tiles lie on the block grid, so the missing fraction is exact when the image side
    is a multiple of the block. Projection (App. A): x ← M⊙y + (1 − M)⊙x, then the box clip.
    """

    parameters = {"frac": Param(float, 0.25, range="(0,1)", doc="fraction of the pixels missing"),
                  "block": Param(int, 4, range=">=1", doc="side of the square missing tiles, in pixels"),
                  "sigma": sigma_param(0.02)}
    per_row_state = ("mask",)
    description = "y = M*(x + e), random 4x4 blocks missing (25%), e ~ N(0, 0.02^2 I)"
    naive_text = "observed pixels with mean-filled holes"
    order = 2
    # GlowIP's settings (Asim App. A: 20 iterations, lr 1), γ = 0 (Asim §2)
    solver_defaults = {"latent-lbfgs": {"lr": 1.0, "steps": 20, "gamma": 0.0}}

    def check_shape(self, shape) -> None:
        _, H, W = shape
        b = self.params["block"]
        if H % b or W % b:
            raise UserError(f"task 'inpaint': image size {H}x{W} is not a multiple of block={b}; use a block that "
                            f"divides {H}")

    def mask(self, shape, image_id: str, seed: int) -> torch.Tensor:
        """1 = observed, 0 = missing; same mask for all channels."""
        C, H, W = shape
        b = self.params["block"]
        if H % b or W % b:
            raise UserError(f"task 'inpaint': image size {H}x{W} is not a multiple of block={b}")
        tiles = (H // b) * (W // b)
        k = max(1, int(round(self.params["frac"] * tiles)))
        order = torch.randperm(tiles, generator=generator("mask", self.identity(), (C, H, W), image_id, seed))
        grid = torch.ones(tiles)
        grid[order[:k]] = 0
        m = grid.view(H // b, W // b).repeat_interleave(b, 0).repeat_interleave(b, 1)
        return m.expand(C, H, W).contiguous()

    def _make(self, x, ids, seed):
        M = torch.stack([self.mask(x.shape[1:], i, seed) for i in ids]).to(x.device)
        e = torch.stack([self.noise(x.shape[1:], i, seed, x.device) for i in ids])
        return Problem(self, x, M * (x + e), ids, seed, {"mask": M})

    def forward(self, p, x):
        return p.state["mask"] * x

    def adjoint(self, p, r):
        return p.state["mask"] * r

    def project(self, p, x, iters):
        M = p.state["mask"]
        return (M * p.y + (1 - M) * x).clamp(0, 1)

    def least_norm(self, p):
        return p.state["mask"] * p.y

    def tangent(self, p, v):
        """The holes: (1 − M)⊙v."""
        return (1 - p.state["mask"]) * v

    def naive_estimate(self, p):
        """The observed pixels, each hole filled with the mean of that image's observed pixels (per channel)."""
        M = p.state["mask"]
        known = (M * p.y).sum((2, 3), keepdim=True) / M.sum((2, 3), keepdim=True).clamp(min=1)
        return (M * p.y + (1 - M) * known).clamp(0, 1)

    def operator_norm(self, p):
        return 1.0

    def observed_image(self, p):
        """y itself: the observed pixels, missing ones 0."""
        return p.y

    def observed_mask(self, p):
        return p.state["mask"]
