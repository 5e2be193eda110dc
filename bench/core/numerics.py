"""Portable CPU numerics: the same float results on every x86-64 CPU, not only on the machine that made them.

PyTorch's CPU kernels dispatch on the instruction set the CPU offers (oneDNN convolutions, ATen vector kernels and
MKL GEMMs each have AVX2 and AVX-512 code paths, and MKL picks different ones on Intel and AMD). The paths add in a
different order, so an AVX-512 machine and an AVX2 machine disagree in the last float bits — and chaotic solvers
(L-BFGS without a line search on a weak Glow) turn that into different answers: measured on the smoke grid, an
AVX-512 AMD EPYC moved 21 of 256 cells past 0.01 % of the reference made on an AVX2 AMD EPYC, one latent-lbfgs cell
from MAP loss −198 to +25. Capping all three libraries at AVX2 made the two machines agree bit for bit (every
MAP loss of the 512 smoke rows equal), at no measurable cost at these image sizes. The caps remove the largest
source, not every one: on the default grid the two machines still differed in one work unit of 128 (cell means by
≤ 0.04 %), so some kernel's order also depends on the machine (cache-size-dependent blocking is the likely one).

:func:`pin_portable_isa` sets those caps in the environment (``setdefault``: a value the user set wins) before any
kernel runs; ``bench/__init__.py`` calls it, so every entry point (the CLI, pool / Dask / Slurm workers, tests)
computes with the same kernels. ``FLOWBENCH_CPU_ISA=native`` switches it off (fastest kernels, machine-specific
last bits). Caps are read when each library first runs a kernel: in a Python session that already ran PyTorch
convolutions before importing ``bench``, set the variables yourself before importing torch.
"""
from __future__ import annotations

import os
import platform

PORTABLE_ISA = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
SWITCH = "FLOWBENCH_CPU_ISA"


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_portable_isa() -> None:
    """Cap oneDNN, ATen and MKL at AVX2 on x86-64 unless ``FLOWBENCH_CPU_ISA=native`` (see the module docstring)."""
    if is_x86() and os.environ.get(SWITCH, "portable").lower() != "native":
        for k, v in PORTABLE_ISA.items():
            os.environ.setdefault(k, v)


def describe() -> str:
    """The CPU code path results were computed with, for provenance: e.g. ``avx2 (onednn AVX2, mkl AVX2)``."""
    import torch

    caps = f"onednn {os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}, mkl {os.environ.get('MKL_CBWR', 'native')}"
    return f"{torch.backends.cpu.get_cpu_capability().lower()} ({caps})"
