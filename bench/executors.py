"""Executors: where work units run. The seam between the runner and an execution engine.

The runner hands an executor a list of unit specs (plain JSON-able dicts) and a function; the executor calls
``fn(spec, out_dir)`` for each — in this process, in worker processes, or on a cluster — and yields
``(spec, summary)`` pairs as units finish (any order). ``fn`` is :func:`bench.runner.execute_unit`, a top-level
function that loads everything it needs from names and writes its own part files, so every executor produces the
same rows. A unit whose call raises (it should not: ``execute_unit`` turns failures into rows) is yielded as
``(spec, exc)`` and the runner writes error rows for it.

To add an engine (issue 6: ``dask``, ``slurm``): put it in its own module ``bench/executor_<name>.py`` (found by
:func:`discover_executors`, so no edit here), subclass :class:`Executor`, register it with
``@EXECUTORS.register("name")``, declare its flags in ``add_arguments`` (they appear in ``run --help``) and build it
from the parsed arguments in ``from_args``. Import optional engines (dask, submitit) lazily, inside ``map``.
Workers must call :func:`init_worker` (threads, plugin imports) before their first unit.
"""
from __future__ import annotations

import importlib
import multiprocessing
import os
import pkgutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from bench.errors import UserError
from bench.registry import Registry

EXECUTORS = Registry("executor")


def init_worker(threads: int | None = None, imports: tuple = ()) -> None:
    """Prepare a worker process: torch thread count (unless OMP_NUM_THREADS is set) and plugin modules."""
    import torch

    if threads and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(threads))
    for mod in imports:
        importlib.import_module(mod)


class Executor:
    """Base class. ``map(fn, specs, out_dir)`` yields ``(spec, summary_or_exception)`` as units finish."""

    name = "?"

    def __init__(self, workers: int = 1, imports: tuple = ()):
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.imports = tuple(imports)

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Executor-specific CLI flags (none for ``local``)."""

    @classmethod
    def from_args(cls, args, imports: tuple = ()) -> "Executor":
        workers = getattr(args, "workers", None)
        return cls(workers=1 if workers is None else workers, imports=imports)

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"

    def map(self, fn, specs, out_dir):
        raise NotImplementedError


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """In-process serial execution (``--workers 1``), or a pool of N spawned worker processes.

    "spawn" (not fork) so that workers start clean on every OS and never inherit a half-initialised torch; each
    worker gets ``cpu_count // N`` torch threads unless ``OMP_NUM_THREADS`` is set. Units are submitted at most
    ``2N`` at a time so that an interrupt leaves little queued work.
    """

    def map(self, fn, specs, out_dir):
        specs = list(specs)
        if self.workers == 1 or len(specs) <= 1:
            init_worker(None, self.imports)
            for spec in specs:
                try:
                    yield spec, fn(spec, out_dir)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 -- isolated: becomes error rows
                    yield spec, e
            return
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(threads, self.imports))
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


_DISCOVERED = False


def discover_executors() -> list[str]:
    """Import every ``bench/executor_<name>.py`` module (each registers one executor); return the names."""
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        import bench

        for info in pkgutil.iter_modules(bench.__path__):
            if info.name.startswith("executor_"):
                importlib.import_module(f"bench.{info.name}")
    return EXECUTORS.names()


def add_arguments(parser) -> None:
    """``--executor`` / ``--workers`` and every registered executor's own flags."""
    discover_executors()
    parser.add_argument("--executor", default="local", choices=EXECUTORS.names(),
                        help="where work units run (default: local)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="parallel workers (local: spawned processes; default 1 = in-process)")
    for _, cls in EXECUTORS.items():
        cls.add_arguments(parser)


def make_executor(args, imports: tuple = ()) -> Executor:
    discover_executors()
    return EXECUTORS.get(getattr(args, "executor", "local") or "local").from_args(args, imports=imports)


discover_executors()  # register bench/executor_*.py (dask, slurm, ...) at import, so EXECUTORS is complete
