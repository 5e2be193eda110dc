"""Device selection (``auto`` uses CUDA when present, else CPU) and the device-side facts of timing and numerics.

- :func:`clock`: ``time.perf_counter()`` after waiting for the device (``torch.cuda.synchronize``) when it is a
  CUDA device, so every timed path measures work, not kernel launches. The one helper every timer uses.
- :func:`numerics_mode`: TF32 pinned off on CUDA unless asked for (``--tf32``), and the ``--deterministic`` switch
  (deterministic algorithms, cuDNN deterministic and not benchmarking, ``CUBLAS_WORKSPACE_CONFIG``). Applied in the
  process that computes (each worker, each unit) and restored afterwards. On CPU, TF32 does not exist: the flag is
  recorded as False and changes nothing.
- :func:`device_facts`: GPU name, compute capability, CUDA and cuDNN versions for the rows (empty on CPU).
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

from bench.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
CUBLAS_WORKSPACE = ":4096:8"   # what cuBLAS needs to be deterministic (CUDA >= 10.2)


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------- timing
def as_device(device) -> torch.device:
    """A torch.device from a torch.device, a name like ``"cuda:0"`` or a tensor (its device)."""
    return device.device if isinstance(device, torch.Tensor) else torch.device(device)


def is_cuda(device) -> bool:
    """Whether ``device`` (a torch.device, a name like ``"cuda:0"``, or a tensor) is a CUDA device: the one device
    query of the timing and numerics helpers."""
    return as_device(device).type == "cuda"


def synchronize(device) -> None:
    """Wait for every queued kernel of ``device`` when it is a CUDA device; nothing on CPU."""
    if is_cuda(device):
        torch.cuda.synchronize(as_device(device))


def clock(device) -> float:
    """``time.perf_counter()`` once ``device`` has finished its queued work: read it before and after the timed
    code (CUDA calls return when the kernels are queued, not when they are done)."""
    synchronize(device)
    return time.perf_counter()


# ----------------------------------------------------------------------------------------------- numerics
def tf32_allowed(device, tf32: bool) -> bool:
    """What a row records for TF32: the request on CUDA, always False on CPU."""
    return bool(tf32) and is_cuda(device)


@contextlib.contextmanager
def numerics_mode(device, *, tf32: bool = False, deterministic: bool = False):
    """Run the block with TF32 pinned (on CUDA: off unless ``tf32``; CPU untouched) and, with ``deterministic``,
    deterministic algorithms (an op without a deterministic implementation raises), cuDNN deterministic and not
    benchmarking, and ``CUBLAS_WORKSPACE_CONFIG`` set (if unset) before CUDA work starts in this process. The
    previous settings are restored on exit, so an in-process unit leaves the process as it found it."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
            torch.use_deterministic_algorithms(True, warn_only=False)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        if is_cuda(device):
            on = bool(tf32)
            torch.backends.cuda.matmul.allow_tf32 = on
            torch.backends.cudnn.allow_tf32 = on
            torch.set_float32_matmul_precision("high" if on else "highest")
        yield
    finally:
        det, warn_only, cudnn_det, bench_, mm_tf32, cudnn_tf32, precision, cublas = saved
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, bench_
        if is_cuda(device):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = mm_tf32, cudnn_tf32
            torch.set_float32_matmul_precision(precision)
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


# -------------------------------------------------------------------------------------------------- facts
def device_facts(device) -> dict:
    """``gpu_name``, ``gpu_capability`` ("9.0"), ``cuda_version``, ``cudnn_version`` of a CUDA device; empty
    strings on CPU (strings throughout, so part files of CPU and GPU units share a schema)."""
    empty = {"gpu_name": "", "gpu_capability": "", "cuda_version": "", "cudnn_version": ""}
    if not is_cuda(device):
        return empty
    try:
        device = as_device(device)
        major, minor = torch.cuda.get_device_capability(device)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001 -- error rows of a unit whose CUDA failed still get written
        return empty
    return {"gpu_name": torch.cuda.get_device_name(device), "gpu_capability": f"{major}.{minor}",
            "cuda_version": str(torch.version.cuda or ""), "cudnn_version": "" if cudnn is None else str(cudnn)}


def reset_peak_memory(device) -> None:
    """Start a unit's peak GPU memory count (nothing on CPU)."""
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(as_device(device))


def peak_memory_mb(device) -> float:
    """Peak GPU memory allocated since :func:`reset_peak_memory`, in MB; NaN on CPU."""
    if not is_cuda(device):
        return float("nan")
    return torch.cuda.max_memory_allocated(as_device(device)) / 2 ** 20
