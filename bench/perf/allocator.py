"""Keep freed memory in the measuring process, so that a microbenchmark times kernels, not the C library's paging.

PyTorch's CPU tensors come from ``malloc``. glibc serves a request above its *mmap threshold* with a fresh ``mmap``
and returns the top of its heap to the kernel past a *trim threshold*; both thresholds adapt to what the process
did before. A timing loop that allocates and frees the same large output over and over (the reference convolution's
output is 16.8 MB) can therefore page-fault a fresh buffer on every call or on none, depending on what ran before it
in the process: on a 2-core AMD EPYC the same 3×3 convolution measured 103 GFLOP/s as the first measurement of a
process and 69 GFLOP/s after another one, and a realnvp-m pass at batch 240 587–630 or 709–716 image-passes/s.
A grid's worker does not need this: its passes ran at the same rate with it and without (in-round 678 and 675–686
image-passes/s on that machine), close to the microbenchmark with it.

:func:`retain_freed_memory` raises both thresholds with ``mallopt`` (glibc only; elsewhere it does nothing);
``bench perf`` calls it in its own process (a test calling ``run_perf`` changes its own process too) and in the
processes that measure the machine's convolution rate. Buffers over 32 MiB are still mapped and unmapped. A process
that keeps freed memory has its peak as its resident size: perf's own peak RSS went from 802 to 1,109 MB.
"""
from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
MMAP_THRESHOLD_MAX = 32 << 20  # the largest mmap threshold glibc accepts on 64-bit
TRIM_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (module docstring); True when they were set."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
