"""``python -m bench list [tasks|datasets|priors|solvers|grids]``."""
from __future__ import annotations

from bench.cli.commands import COMMANDS

HELP = "list registered tasks, datasets, priors, solvers or grid presets"
WHAT = ("tasks", "datasets", "priors", "solvers", "grids")


def add_arguments(p):
    p.add_argument("what", nargs="?", choices=WHAT, help="what to list (default: everything)")


def _tasks():
    from bench.core.registry import defaults
    from bench.tasks import TASKS

    for name, cls in TASKS.items():
        params = ", ".join(f"{k}={v}" for k, v in defaults(cls.parameters).items())
        print(f"{name:10s} {cls.description}  [{params}]")


def _datasets():
    from bench.datasets.base import DATASETS

    for name, cls in DATASETS.items():
        root = " (needs --data-root)" if cls.needs_root else ""
        print(f"{name:14s} splits: {', '.join(cls.splits)}{root}  {cls.description}")



def _print_solvers():
    from bench.solvers.base import SOLVERS
    from bench.tasks import TASKS

    for name, cls in SOLVERS.items():
        print(f"{name}  {cls.description}")
        # per-task values of parameters declared None, from the tasks' solver_defaults
        task_defaults = {t: tcls.solver_defaults[name] for t, tcls in TASKS.items() if name in tcls.solver_defaults}
        for k, v in cls.defaults().items():
            decl = cls.parameters[k]
            tun = " (tunable)" if k in cls.tunable else ""
            doc = f"  — {decl.doc}" if decl.doc else ""
            if v is None and any(k in d for d in task_defaults.values()):
                per = ", ".join(f"{t}: {d[k]!r}" for t, d in task_defaults.items() if k in d)
                value = f"task default ({per})"
            else:
                value = repr(v)
            print(f"    {k}: {decl.type.__name__} = {value}{tun}{doc}")


def _priors():
    from bench.priors.catalog import print_shipped

    print_shipped()


def _grids():
    """One paragraph per preset (parsed without name validation)."""
    from bench.plan.grid import AXES, PRESET_DIR, SPLITS, preset_names, read_toml

    for name in preset_names():
        path = PRESET_DIR / f"{name}.toml"
        raw = read_toml(path)
        main = {a: raw.get(a) for a in AXES}
        ips = raw.get("images_per_split", 8)
        if isinstance(ips, dict):
            ips = " / ".join(f"{v} {k}" for k, v in ips.items())
        extra = raw.get("extra", [])
        print(f"{name:8s} {raw.get('description', '')}")
        print(f"         priors: {', '.join(main['priors'] or [])}; splits: {', '.join(main['splits'] or SPLITS)}; "
              f"{ips} images per split at {raw.get('image_size', 16)}x{raw.get('image_size', 16)}")
        print(f"         tasks: {', '.join(main['tasks'] or [])}; λ: {', '.join(str(x) for x in main['lams'] or [])}")
        solvers = main["solvers"]
        print(f"         solvers: {solvers if isinstance(solvers, str) else ', '.join(solvers)}; "
              f"seeds: {', '.join(str(s) for s in (main['seeds'] or [0]))}; budget {raw.get('budget')} passes/image "
              f"(MLE {raw.get('mle_steps')})" + (f"; + {len(extra)} extra block(s)" if extra else ""))


@COMMANDS.register("list")
def main(args) -> int:
    table = {"tasks": _tasks, "datasets": _datasets, "priors": _priors, "solvers": _print_solvers,
             "grids": _grids}
    for what in ([args.what] if args.what else WHAT):
        if not args.what:
            print(f"== {what}")
        table[what]()
    return 0
