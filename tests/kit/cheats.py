"""Cheats against the solver process (tests/test_cheats.py): the clean image through the loader, caches, gc, stack
frames and earlier units' files; writes through frames; patched scoring; uncounted passes; forged traces; other
units' files; process-wide state; signals; dying, hanging and allocating. Plugin source, appended to the API-level
cheats there (it uses their ``naive``, ``Bypass`` and imports)."""
import textwrap

PROCESS_CHEATS = textwrap.dedent('''
    class Found(Solver):
        """Tries to find the clean images (``look`` returns them or None); raises when it finds nothing."""
        uses_prior = False
        def look(self, problem):
            raise NotImplementedError
        def solve(self, problem, prior, lam, ctx):
            x = self.look(problem)
            if x is None:
                raise RuntimeError("cheat found nothing")
            return SolveResult(x)


    def nearest(problem, images):
        """The dataset image closest to what y shows: the clean image of a denoising/inpainting row."""
        x0 = naive(problem).flatten(1)
        imgs = images.flatten(1).to(x0.dtype)
        k = torch.cdist(x0, imgs).argmin(1)
        return images[k].reshape(problem.batch_size, *problem.shape).to(x0.dtype)


    @SOLVERS.register("cheat-loader")
    class Loader(Found):
        """The public dataset loader, matched to y (the image ids it gets are opaque)."""
        def look(self, problem):
            from bench.plan.loading import get_images
            return nearest(problem, get_images("lfw-faces", "test", 16, None).images)


    @SOLVERS.register("cheat-loader-cache")
    class LoaderCache(Found):
        def look(self, problem):
            from bench.plan import loading
            for iset in loading._IMAGES.values():
                return nearest(problem, iset.images)


    @SOLVERS.register("cheat-gc")
    class GC(Found):
        """Any Problem in the process that still holds its clean images."""
        def look(self, problem):
            import gc
            from bench.tasks import Problem
            for obj in gc.get_objects():
                if isinstance(obj, Problem) and obj.x_true is not None and obj.x_true.shape[0] == problem.batch_size:
                    return obj.x_true.clone()


    @SOLVERS.register("cheat-frames")
    class Frames(Found):
        """The runner's locals up the stack: x_true, full.x_true."""
        def look(self, problem):
            import sys
            f = sys._getframe()
            while f is not None:
                for v in f.f_locals.values():
                    xt = getattr(v, "x_true", None)
                    if isinstance(xt, torch.Tensor) and xt.shape[0] == problem.batch_size:
                        return xt.clone()
                f = f.f_back


    @SOLVERS.register("cheat-frames-write")
    class FramesWrite(Bypass):
        """Writes the runner's lam_full and x_true through the stack frames (the harness scores with them)."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import sys
            f, hit = sys._getframe(), 0
            while f is not None:
                for name in ("lam_full", "solve_lam", "own_lam"):
                    v = f.f_locals.get(name)
                    if isinstance(v, torch.Tensor):
                        v.zero_(); hit += 1
                full = f.f_locals.get("full")
                if getattr(full, "x_true", None) is not None:
                    full.x_true.copy_(x); hit += 1
                f = f.f_back
            if not hit:
                raise RuntimeError("cheat found nothing")


    @SOLVERS.register("cheat-recon-files")
    class ReconFiles(Found):
        """Earlier units' recon/*.npz, in the run directory named on the harness's command line."""
        def look(self, problem):
            import glob, os
            import numpy as np
            for pid in [os.getppid()] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
                try:
                    argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
                except OSError:
                    continue
                if b"--out" in argv:
                    out = argv[argv.index(b"--out") + 1].decode()
                    for f in glob.glob(os.path.join(out, "recon", "*.npz")):
                        xt = np.load(f)["x_true"]
                        return nearest(problem, torch.from_numpy(xt))


    @SOLVERS.register("cheat-patch-scoring")
    class PatchScoring(Bypass):
        """Patches the scoring code the harness would use: bench.core.metrics.score, the metric table,
        bench.core.objective.log_prior (every MAP loss would be -1e9)."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import bench.core.metrics as M
            import bench.core.objective as O
            orig = M.score
            M.score = lambda *a, **k: {k2: v * 0 - 1e9 for k2, v in orig(*a, **k).items()}
            O.log_prior = lambda model, xx: torch.full((xx.shape[0],), 1e9)
            O.map_loss = lambda nll, lp, lam: nll * 0 - 1e9
            m = M.METRICS["psnr"]
            M.METRICS.register(M.Metric("psnr", lambda b: np.full(len(b.x), 1e9), True), replace=True)


    @SOLVERS.register("cheat-fresh-model")
    class FreshModel(Bypass):
        """Uncounted passes: a fresh model from the checkpoint (uses_prior = False, so no budget at all)."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import glob
            from bench.plan.loading import fresh_model
            for path in glob.glob("/tmp/**/realnvp-t.pt", recursive=True) + ["realnvp-xs"]:
                model = fresh_model(path, "cpu", None)
                for _ in range(50):
                    model.log_prob(x)
                return
            raise RuntimeError("cheat found nothing")


    @SOLVERS.register("cheat-reset-counter")
    class ResetCounter(Bypass):
        """Resets the prior's counter in its own process and spends three budgets."""
        def attempt(self, problem, prior, x):
            for _ in range(3):
                for _ in range(prior.budget):
                    prior.log_prob(x)
                for name in dir(prior):
                    v = getattr(prior, name, None)
                    if isinstance(v, torch.Tensor) and v.dtype == torch.long:
                        v.zero_()


    @SOLVERS.register("cheat-forged-trace")
    class ForgedTrace(Solver):
        """Reports a trace of impossible losses at negative pass counts and an early stop, marks far more points
        than allowed, and forges lam_reached; returns the naive estimate."""
        def solve(self, problem, prior, lam, ctx):
            from bench.solvers.base import Trace
            x = naive(problem)
            tr = Trace()
            for k in range(5):
                tr.record(torch.full((problem.batch_size,), -5), torch.full((problem.batch_size,), -1e9))
            prior.log_prob(x)
            for _ in range(10 ** 4):
                try:
                    prior.trace_point()
                except ValueError:
                    break
            return SolveResult(x, tr, {"lam_reached": torch.full((problem.batch_size,), 1e9)})


    @SOLVERS.register("cheat-write-unit")
    class WriteUnit(Bypass):
        """bench.store.parts.write_unit over another solver's finished units in the run directory."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import glob, os
            from bench.store import parts as store
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
                if b"--out" in argv:
                    out = argv[argv.index(b"--out") + 1].decode()
                    for uid in store.unit_ids(out):
                        store.write_unit(out, uid, None)
                    return
            raise RuntimeError("cheat found nothing")


    @SOLVERS.register("cheat-global-state")
    class GlobalState(Bypass):
        """Changes process-wide state the next units would inherit: torch threads, default dtype, a cache."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import bench.solvers.optim as optim
            import bench.tasks.base as tasks
            torch.set_num_threads(3)
            torch.manual_seed(1234)
            optim.ADAM_LR = 10.0
            optim.clamp01 = lambda v: v * 0
            tasks.Problem.data_nll = lambda self, xx: torch.zeros(xx.shape[0])


    @SOLVERS.register("cheat-kill-harness")
    class KillHarness(Bypass):
        """Signals its parent and every process it can see."""
        uses_prior = False
        def attempt(self, problem, prior, x):
            import os, signal
            os.kill(os.getppid(), signal.SIGKILL)


    @SOLVERS.register("cheat-keyboard-interrupt")
    class KeyboardInterruptCheat(Solver):
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            raise KeyboardInterrupt


    @SOLVERS.register("cheat-os-exit")
    class OsExit(Solver):
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            import os
            os._exit(7)


    @SOLVERS.register("cheat-sigterm")
    class SigTerm(Solver):
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            import os, signal
            os.kill(os.getpid(), signal.SIGTERM)
            import time
            time.sleep(60)


    @SOLVERS.register("cheat-sleep")
    class Sleep(Solver):
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            import time
            while True:
                time.sleep(1)


    @SOLVERS.register("cheat-allocate")
    class Allocate(Solver):
        """A 2 GiB allocation, written to."""
        uses_prior = False
        def solve(self, problem, prior, lam, ctx):
            big = torch.ones(2 ** 29)
            return SolveResult(naive(problem) + 0 * big[0])
''')
