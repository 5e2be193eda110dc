"""Executors: where work units run. The seam between the runner and an execution engine.

The runner hands an executor a list of work items — batches of units (picklable
:class:`~bench.plan.batches.UnitBatch`, with a ``unit_id`` for task names and a ``device``) — and a function; the
executor calls ``fn(item, out_dir)`` for each — in this process, in worker processes, or on a cluster — and yields
``(item, result)`` pairs as items finish (any order). ``fn`` is :func:`bench.run.unit.execute_batch`, a top-level
function that loads everything it needs from names and writes its own part files, so every executor produces the
same rows. An item whose call raises (it should not: ``execute_batch`` turns failures into rows) is yielded as
``(item, exc)`` and the runner writes error rows for its units.

To add an engine (``dask``, ``slurm``): put it in its own module ``bench/run/executor_<name>.py`` (the registry's
discovery imports every such module, so no edit here) or in a ``--plugin`` module, subclass :class:`Executor`,
register it with ``@EXECUTORS.register("name")``, declare its flags in ``add_arguments`` (they appear in ``run
--help``) and build it from the parsed arguments in ``from_args``. Import optional engines (dask, submitit) lazily,
inside ``map``. Workers must call :func:`init_worker` (threads, plugin imports) before their first unit.

Threads: every unit runs with ``--threads`` torch threads (default 1) whatever the executor and the worker count.
Float summation order depends on the thread count, and chaotic solvers (latent-LBFGS on Glow) turn that into ~0.5 %
differences, so a fixed per-unit thread count is what makes ``--workers 1``, ``--workers 8``, Dask and Slurm write
the same numbers on the same CPU. Parallelism comes from workers (``--workers auto``: one per core on CPU, one on
a GPU); at 16×16 the passes are bound by per-op overhead, where a second thread in one process buys little and a
second process nearly doubles throughput.
"""
from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from bench.core.errors import UserError
from bench.core.registry import Registry

EXECUTORS = Registry("executor", "bench.run", "executor_")   # local (here) and bench/run/executor_*.py


def init_worker(threads: int | None = None, imports: tuple = ()) -> None:
    """Prepare a worker process: torch thread count (``None``: leave it) and plugin modules."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    for mod in imports:
        importlib.import_module(mod)


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: ask the kernel to SIGKILL this process when its parent dies, so that ``kill -9`` of a run also stops
    its pool workers instead of leaving orphans that go on writing part files (best effort elsewhere). The request
    only covers a parent alive when it is made: if ``parent_pid`` (the pid that started us) is already gone — the
    run was killed while this worker was starting — exit at once."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _init_pool_worker(threads, imports, parent_pid=None) -> None:
    die_with_parent(parent_pid)   # first, before the slow imports (torch, plugins)
    init_worker(threads, imports)


class Executor:
    """Base class. ``map(fn, items, out_dir)`` yields ``(item, result_or_exception)`` as items finish."""

    name = "?"

    def __init__(self, workers: int = 1, imports: tuple = (), threads: int = 1):
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        self.workers = int(workers)
        self.imports = tuple(imports)
        self.threads = int(threads)

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Executor-specific CLI flags (none for ``local``)."""

    @classmethod
    def from_args(cls, args, imports: tuple = ()) -> "Executor":
        return cls(workers=resolve_workers(args), imports=imports, threads=getattr(args, "threads", None) or 1)

    def describe(self) -> str:
        return (f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''} × "
                f"{self.threads} thread{'s' if self.threads != 1 else ''})")

    def map(self, fn, specs, out_dir):
        raise NotImplementedError


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """In-process serial execution (``--workers 1``), or a pool of N spawned worker processes.

    "spawn" (not fork) so that workers start clean on every OS and never inherit a half-initialised torch; each
    worker runs ``threads`` torch threads (in-process: set for the run, restored after). Units are submitted at
    most ``2N`` at a time so that an interrupt leaves little queued work.
    """

    def map(self, fn, specs, out_dir):
        specs = list(specs)
        if self.workers == 1 or len(specs) <= 1:
            import torch

            before = torch.get_num_threads()
            init_worker(self.threads, self.imports)
            try:
                for spec in specs:
                    try:
                        yield spec, fn(spec, out_dir)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:  # noqa: BLE001 -- isolated: becomes error rows
                        yield spec, e
            finally:
                torch.set_num_threads(before)
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(specs)), mp_context=ctx,
                                   initializer=_init_pool_worker,
                                   initargs=(self.threads, self.imports, os.getpid()))
        pending, queue = {}, list(reversed(specs))
        try:
            while queue or pending:
                while queue and len(pending) < 2 * self.workers:
                    s = queue.pop()
                    pending[pool.submit(fn, s, out_dir)] = s
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    s = pending.pop(fut)
                    try:
                        yield s, fut.result()
                    except BrokenProcessPool:
                        raise UserError("a worker process died (out of memory or killed); finished units are saved, "
                                        "rerun the same command to resume") from None
                    except Exception as e:  # noqa: BLE001
                        yield s, e
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


MAX_WORKERS_PER_CORE = 4


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _workers_arg(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or 'auto', got {value!r}") from None


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1 (``--threads``, ``--batch-rows``)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return n


MAX_REMOTE_THREADS = 1024   # --threads on cluster nodes, whose cores this machine cannot count


def check_threads(args) -> None:
    """``--threads``: at most 4 × this machine's usable cores when units run here (``local``, or Dask without
    ``--scheduler``), at most 1,024 on a cluster; UserError before anything starts."""
    threads = getattr(args, "threads", None) or 1
    executor = getattr(args, "executor", "local") or "local"
    if executor == "local" or (executor == "dask" and not getattr(args, "scheduler", None)):
        cap = MAX_WORKERS_PER_CORE * usable_cpus()
        if threads > cap:
            raise UserError(f"--threads {threads} is more than {MAX_WORKERS_PER_CORE} x the {usable_cpus()} usable "
                            f"CPU cores of this machine (at most {cap})")
    elif threads > MAX_REMOTE_THREADS:
        raise UserError(f"--threads {threads} is more than {MAX_REMOTE_THREADS} torch threads per work unit")


def resolve_workers(args) -> int:
    """``--workers auto``: 1 on a GPU (one device, one unit at a time), else usable cores // ``--threads``.
    Checks ``--threads`` too (:func:`check_threads`)."""
    check_threads(args)
    workers = getattr(args, "workers", None)
    if workers in (None, "auto"):
        from bench.core.device import resolve_device

        if resolve_device(getattr(args, "device", None) or "auto").type == "cuda":
            return 1
        return max(1, usable_cpus() // (getattr(args, "threads", None) or 1))
    cap = MAX_WORKERS_PER_CORE * usable_cpus()
    if getattr(args, "executor", "local") == "local" and isinstance(workers, int) and workers > cap:
        raise UserError(f"--workers {workers} is more than {MAX_WORKERS_PER_CORE} x the {usable_cpus()} usable CPU "
                        f"cores of this machine (at most {cap}); use --workers auto")
    return workers


def add_arguments(parser) -> None:
    """``--executor`` / ``--workers`` / ``--threads`` and every registered executor's own flags."""
    parser.add_argument("--executor", default="local", choices=EXECUTORS.names(),
                        help="where work units run (default: local)")
    parser.add_argument("--workers", type=_workers_arg, default="auto", metavar="N|auto",
                        help="parallel workers (local: spawned processes, 1 = in-process; default auto: one per "
                             "usable CPU core, 1 on a GPU)")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N",
                        help="torch threads per work unit (default 1; results depend on it through float summation "
                             "order, not on --workers)")
    for _, cls in EXECUTORS.items():
        cls.add_arguments(parser)


def make_executor(args, imports: tuple = ()) -> Executor:
    """The executor ``--executor`` names, built from the parsed arguments (``imports``: plugin modules)."""
    return EXECUTORS.get(getattr(args, "executor", "local") or "local").from_args(args, imports=imports)
