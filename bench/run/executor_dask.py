"""``--executor dask``: run work units on a Dask distributed cluster.

- ``--scheduler tcp://host:port``: submit to an existing cluster (its workers must have flowprior-bench installed
  and see ``--out`` at the same path, e.g. a shared file system).
- no ``--scheduler``: start a ``LocalCluster`` on loopback — ``--workers`` processes, one task at a time each, no
  dashboard, quiet logs — and close it at the end.

Either way each unit runs with ``--threads`` torch threads (default 1), as under ``local``.

Each unit is one task ``execute_unit(spec, out_dir)`` (``pure=False``: never deduplicated or cached by Dask),
yielded as it completes. Units whose device is CUDA request the worker resource ``GPU=1``, so a worker runs one
GPU unit at a time (start GPU workers with ``dask worker ... --resources GPU=1``; the LocalCluster declares one
GPU per worker itself). Since units write their own part files, the rows are the same as under ``local``.

``dask`` is imported only when this executor runs: install it with ``pip install 'flowprior-bench[dask]'``.
"""
from __future__ import annotations

import asyncio
import logging
import os

from bench.core.errors import UserError, one_line
from bench.run.executors import EXECUTORS, Executor, init_worker, resolve_workers

INSTALL_HINT = "pip install 'flowprior-bench[dask]'"


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(f"--executor dask needs dask.distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """UserError (one line) unless a TCP connection to the scheduler's ``[tcp|tls://]host:port`` opens within
    ``timeout`` seconds: checked before the run creates its folder, lock or run.json. Other transports (``ucx://``,
    ``inproc://``) are left to Dask."""
    import socket

    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in ("tcp", "tls"):
        return
    host, _, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--scheduler {address!r} is not an address like tcp://host:8786")
    hint = "start it (dask scheduler) or leave --scheduler out for a LocalCluster"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = f"no answer in {timeout:g} s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
        raise UserError(f"cannot reach Dask scheduler {address!r}: {why}; {hint}") from None
    try:   # something listens there: is it a Dask scheduler?
        kind = asyncio.run(_identity(address, timeout)).get("type")
    except Exception as e:  # noqa: BLE001 -- whatever the other end does, it is one line
        kind = f"no Dask answer ({type(e).__name__})"
    if kind != "Scheduler":
        raise UserError(f"{address!r} is not a Dask scheduler: {kind}; {hint}")


async def _identity(address: str, timeout: float) -> dict:
    """The ``identity`` reply of a Dask server (type, id, workers...), within ``timeout`` seconds."""
    from distributed.core import rpc

    async def ask():
        async with rpc(address, timeout=timeout) as r:
            return await r.identity()

    return await asyncio.wait_for(ask(), timeout)


def run_on_worker(fn, spec, out_dir, threads, imports):
    """What a Dask task runs: prepare the worker (threads, plugin imports; idempotent) then the unit."""
    init_worker(threads, imports)
    return fn(spec, out_dir)


def _is_cuda(spec: dict) -> bool:
    return str(spec.device).startswith("cuda")


@EXECUTORS.register("dask")
class DaskExecutor(Executor):
    """Dask distributed executor (existing scheduler or a LocalCluster of ``workers`` processes)."""

    name = "dask"

    def __init__(self, workers: int = 1, imports: tuple = (), scheduler: str | None = None, threads: int = 1):
        super().__init__(workers=workers, imports=imports, threads=threads)
        if scheduler is not None and not str(scheduler).strip():
            raise UserError("--scheduler is empty; give an address like tcp://host:8786 or leave it out")
        self.scheduler = scheduler

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("dask executor (--executor dask)")
        g.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running Dask scheduler (tcp://host:port); default: start a LocalCluster "
                            "of --workers processes on loopback")

    @classmethod
    def from_args(cls, args, imports: tuple = ()) -> "DaskExecutor":
        ex = cls(workers=resolve_workers(args), imports=imports, scheduler=getattr(args, "scheduler", None),
                 threads=getattr(args, "threads", None) or 1)
        _import_distributed()
        if ex.scheduler:
            check_reachable(ex.scheduler)
        return ex

    def describe(self) -> str:
        if self.scheduler:
            return f"dask (scheduler {self.scheduler})"
        return f"dask (LocalCluster, {self.workers} worker{'s' if self.workers != 1 else ''})"

    def _connect(self, gpu: bool):
        distributed = _import_distributed()
        if self.scheduler:
            try:
                client = distributed.Client(self.scheduler, timeout="30s", set_as_default=False)
            except Exception as e:  # noqa: BLE001 -- whatever the other end does, it is one line
                raise UserError(f"cannot connect to Dask scheduler {self.scheduler!r}: {one_line(e)}") from None
            return client, None
        kwargs = dict(n_workers=self.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR)
        if gpu:
            kwargs["resources"] = {"GPU": 1}
        cluster = distributed.LocalCluster(**kwargs)
        try:
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    def map(self, fn, specs, out_dir):
        specs = list(specs)
        if not specs:
            return
        distributed = _import_distributed()
        client, cluster = self._connect(any(_is_cuda(s) for s in specs))
        futures = {}
        try:
            for s in specs:
                res = {"GPU": 1} if _is_cuda(s) else None
                fut = client.submit(run_on_worker, fn, s, str(out_dir), self.threads, self.imports, pure=False,
                                    key=f"unit-{s.unit_id}-{os.getpid()}-{len(futures)}", resources=res)
                futures[fut.key] = (fut, s)
            for fut in distributed.as_completed([f for f, _ in futures.values()], loop=client.loop):
                _, s = futures.pop(fut.key)
                try:
                    yield s, fut.result()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 -- a unit that died on a worker: error rows
                    yield s, e
                finally:
                    fut.release()
        finally:
            for fut, _ in futures.values():
                fut.cancel()
            client.close()
            if cluster is not None:
                cluster.close()
