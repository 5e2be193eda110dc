"""``--executor slurm``: run work units as a Slurm job array through submitit.

One array task per work unit (``executor.map_array``), ``--slurm-array-parallelism`` of them at once; results
are yielded as jobs finish (polling), and a job that fails on the cluster (time limit, node failure, out of memory)
becomes ``(spec, exception)``, i.e. error rows that ``--retry-failed`` recomputes. Flags pass through to sbatch:
``--slurm-partition``, ``--slurm-time`` (minutes), ``--slurm-gpus-per-node`` (default 1 when the device is CUDA),
``--slurm-cpus-per-task``, ``--slurm-mem-gb``. Logs and pickled jobs go to ``--slurm-folder`` (default
``DIR/slurm-logs``); the results directory must be on a file system the compute nodes share.

``--slurm-cluster local`` (submitit's local executor: one subprocess per unit, ``--workers`` at a time) and
``--slurm-cluster debug`` (in this process, one after another) run the same code path without Slurm; the tests use
them. ``submitit`` is imported only when this executor runs: ``pip install 'flowprior-bench[slurm]'``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.core.errors import UserError
from bench.run.executors import EXECUTORS, Executor, init_worker, resolve_workers

INSTALL_HINT = "pip install 'flowprior-bench[slurm]'"
CLUSTERS = ("slurm", "local", "debug")


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    return submitit


class UnitFailed(RuntimeError):
    """A unit raised inside a job (returned, not raised, so that submitit's debug executor never opens pdb)."""


def run_job(fn, spec, out_dir, threads, imports):
    """What one array task runs: prepare the process (threads, plugin imports), run the unit. An exception is
    returned as its one-line text (a tuple), and turned back into an exception by the driver."""
    try:
        init_worker(threads, imports)
        return fn(spec, out_dir)
    except Exception as e:  # noqa: BLE001
        return ("__unit_failed__", f"{type(e).__name__}: {e}")


@EXECUTORS.register("slurm")
class SlurmExecutor(Executor):
    """Slurm job arrays via submitit (or its ``local`` / ``debug`` executors for testing)."""

    name = "slurm"

    def __init__(self, workers: int = 1, imports: tuple = (), partition: str | None = None,
                 time_min: int | None = None, gpus_per_node: int | None = None, cpus_per_task: int | None = None,
                 mem_gb: float | None = None, folder: str | None = None, cluster: str = "slurm",
                 array_parallelism: int = 256, poll_s: float | None = None, threads: int = 1):
        super().__init__(workers=workers, imports=imports, threads=threads)
        cpus_per_task = self.threads if cpus_per_task is None else cpus_per_task
        if cluster not in CLUSTERS:
            raise UserError(f"--slurm-cluster {cluster!r} is unknown; valid: {', '.join(CLUSTERS)}")
        for flag, v in (("--slurm-time", time_min), ("--slurm-cpus-per-task", cpus_per_task),
                        ("--slurm-array-parallelism", array_parallelism)):
            if v is not None and v < 1:
                raise UserError(f"{flag} must be >= 1, got {v}")
        if gpus_per_node is not None and gpus_per_node < 0:
            raise UserError(f"--slurm-gpus-per-node must be >= 0, got {gpus_per_node}")
        if mem_gb is not None and mem_gb <= 0:
            raise UserError(f"--slurm-mem-gb must be > 0, got {mem_gb}")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm: sbatch is not on PATH (no Slurm here); run on a Slurm login node, or "
                            "use --slurm-cluster local to test without Slurm")
        self.partition, self.time_min, self.gpus_per_node = partition, time_min, gpus_per_node
        self.cpus_per_task, self.mem_gb, self.folder, self.cluster = cpus_per_task, mem_gb, folder, cluster
        self.array_parallelism = array_parallelism
        self.poll_s = poll_s if poll_s is not None else (10.0 if cluster == "slurm" else 0.2)

    @classmethod
    def add_arguments(cls, parser) -> None:
        g = parser.add_argument_group("slurm executor (--executor slurm, via submitit)")
        g.add_argument("--slurm-partition", metavar="NAME", help="partition to submit to (sbatch --partition)")
        g.add_argument("--slurm-time", type=int, metavar="MIN", help="time limit per unit job, minutes")
        g.add_argument("--slurm-gpus-per-node", type=int, metavar="N", help="GPUs per job (default 1 on cuda, else 0)")
        g.add_argument("--slurm-cpus-per-task", type=int, metavar="N",
                       help="CPUs per job (default: --threads, the torch threads each unit runs)")
        g.add_argument("--slurm-mem-gb", type=float, metavar="GB", help="memory per job")
        g.add_argument("--slurm-array-parallelism", type=int, default=256, metavar="N",
                       help="array tasks running at once (default 256)")
        g.add_argument("--slurm-folder", metavar="DIR", help="submitit logs and job files (default: OUT/slurm-logs)")
        g.add_argument("--slurm-cluster", default="slurm", choices=CLUSTERS,
                       help="slurm, or submitit's local/debug executors for testing without Slurm")

    @classmethod
    def from_args(cls, args, imports: tuple = ()) -> "SlurmExecutor":
        g = lambda k, d=None: getattr(args, k, d)  # noqa: E731
        return cls(workers=resolve_workers(args), imports=imports, threads=g("threads") or 1,
                   partition=g("slurm_partition"), time_min=g("slurm_time"), gpus_per_node=g("slurm_gpus_per_node"),
                   cpus_per_task=g("slurm_cpus_per_task"), mem_gb=g("slurm_mem_gb"),
                   folder=g("slurm_folder"), cluster=g("slurm_cluster", "slurm") or "slurm",
                   array_parallelism=256 if g("slurm_array_parallelism") is None else g("slurm_array_parallelism"))

    def describe(self) -> str:
        if self.cluster == "slurm":
            part = f", partition {self.partition}" if self.partition else ""
            return f"slurm (job arrays{part})"
        return f"slurm (submitit {self.cluster} executor)"

    def _executor(self, out_dir, cuda: bool):
        submitit = _import_submitit()
        folder = Path(self.folder) if self.folder else Path(out_dir) / "slurm-logs"
        try:
            ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        except RuntimeError as e:  # e.g. sbatch not found
            raise UserError(f"--executor slurm: cannot start the submitit {self.cluster!r} executor ({e}); "
                            f"use --slurm-cluster local to test without Slurm") from None
        params = {"name": "flowprior-bench", "cpus_per_task": self.cpus_per_task, "tasks_per_node": 1, "nodes": 1}
        gpus = self.gpus_per_node if self.gpus_per_node is not None else (1 if cuda else 0)
        if gpus:
            params["gpus_per_node"] = gpus
        if self.time_min:
            params["timeout_min"] = self.time_min
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        params["slurm_array_parallelism"] = self.array_parallelism
        ex.update_parameters(**params)
        return ex

    def map(self, fn, specs, out_dir):
        specs = list(specs)
        if not specs:
            return
        cuda = any(str(s.device).startswith("cuda") for s in specs)
        ex = self._executor(out_dir, cuda)
        threads = self.threads
        # Slurm queues the whole array (its array parallelism throttles it); the local executor would start one
        # process per job at once, so it gets rolling chunks of --workers jobs.
        chunk = len(specs) if self.cluster == "slurm" else max(1, self.workers)
        queue = list(specs)
        pending: list = []
        try:
            while queue or pending:
                if queue and len(pending) < chunk:
                    batch, queue = queue[:chunk - len(pending)], queue[chunk - len(pending):]
                    jobs = ex.map_array(run_job, [fn] * len(batch), batch, [str(out_dir)] * len(batch),
                                        [threads] * len(batch), [self.imports] * len(batch))
                    pending += list(zip(jobs, batch))
                finished = [(j, s) for j, s in pending if j.done()]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for j, s in finished:
                    pending.remove((j, s))
                    try:
                        res = j.result()
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as e:  # noqa: BLE001 -- the job failed on the cluster
                        yield s, e
                        continue
                    if isinstance(res, tuple) and len(res) == 2 and res[0] == "__unit_failed__":
                        yield s, UnitFailed(res[1])
                    else:
                        yield s, res
        finally:
            for j, _ in pending:
                try:
                    j.cancel(check=False)
                except Exception:  # noqa: BLE001
                    pass
