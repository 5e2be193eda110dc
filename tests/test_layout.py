"""The codebase's shape: no module over 400 lines, no import cycle between the project's modules (function-level
imports included), imports between the rooms of bench/ flowing one way (docs/ARCHITECTURE.md), and no task name
outside its own task file and the grid presets."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The rooms of bench/ in the order of the data path: a room imports only from rooms of a lower rank (or itself).
# core is the shared vocabulary; plan and store do not know each other; run and report do not know each other.
ROOMS = {"core": 0, "plan": 1, "store": 1, "run": 2, "report": 2, "verify": 3, "perf": 3, "cli": 4}
# The plugin folders (importable as bench.<folder>) sit on core: they import nothing of the other rooms.
PLUGINS = ("solvers", "tasks", "priors", "datasets")
PACKAGES = {"bench": "bench", **{f"bench.{r}": f"bench/{r}" for r in ROOMS}, "bench.cli.commands": "bench/cli/commands",
            **{f"bench.{p}": p for p in PLUGINS}}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in sorted((REPO / folder).glob("*.py")):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports_of(path: Path, name: str, known) -> set[str]:
    """Project modules that ``path`` imports anywhere (module level or inside functions)."""
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[:len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_module_over_400_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    long.update({f"tests.{p.stem}": len(p.read_text().splitlines()) for p in (REPO / "tests").rglob("*.py")})
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_no_import_cycle():
    mods = modules()
    # a package's __init__ is imported by every module under it; its own imports of submodules are not cycles
    graph = {n: {m for m in imports_of(p, n, mods) if not n.startswith(m + ".")} for n, p in mods.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):   # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def room_of(module: str) -> str:
    """The room (or plugin folder) a project module lives in: ``bench.run.unit`` -> ``run``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (parts[1] in ROOMS or parts[1] in PLUGINS) else "bench"


def test_bench_is_only_rooms():
    """Every module of bench/ lives in a room (the package's own ``__init__``/``__main__`` aside)."""
    loose = sorted(p.name for p in (REPO / "bench").glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    folders = sorted(p.name for p in (REPO / "bench").iterdir()
                     if p.is_dir() and (p / "__init__.py").exists() and p.name not in ROOMS)
    assert (loose, folders) == ([], [])


def test_rooms_import_one_way():
    """A room imports from itself and from rooms of a lower rank only; a plugin folder from core only."""
    mods = modules()
    rank = {**ROOMS, **{p: 0.5 for p in PLUGINS}}
    bad = []
    for name, path in mods.items():
        src = room_of(name)
        if src == "bench":
            continue
        for dep in imports_of(path, name, mods):
            dst = room_of(dep)
            if dst in (src, "bench"):
                continue
            if src in PLUGINS and dst in PLUGINS:
                continue
            if rank[dst] >= rank[src]:
                bad.append(f"{name} -> {dep}")
    assert bad == []


def test_direction_check_can_fail(tmp_path, monkeypatch):
    """The check above sees a function-level import from a lower room into a higher one."""
    mods = modules()
    fake = tmp_path / "unit.py"
    fake.write_text("def f():\n    from bench.report import tables\n")
    assert room_of("bench.report.tables") in {room_of(d) for d in imports_of(fake, "bench.store.parts", mods)}


def task_name_literals(path: Path, names) -> list[str]:
    """String literals in code (docstrings and comments aside) that are a task name or a task spec."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"{path.relative_to(REPO)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and any(n.value == t or n.value.startswith(t + "[") for t in names)]


def test_task_names_live_in_their_task_files():
    from bench.tasks import TASKS

    names = TASKS.names()
    allowed = {REPO / "tasks" / f"{n}.py" for n in names}   # and the grid presets (TOML files, not scanned)
    hits = [h for p in modules().values() if p not in allowed for h in task_name_literals(p, names)]
    assert hits == []


def test_architecture_map_names_every_module():
    """docs/ARCHITECTURE.md's module map names every module of every room (it is the map a newcomer reads)."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| ")]
    missing = [n for n, p in modules().items() if room_of(n) in ROOMS and n.count(".") == 2 and p.stem != "__init__"
               and not any(line.startswith(f"| {room_of(n)} |") and f"`{n.rsplit('.', 1)[1]}`" in line
                           for line in rows)]
    assert missing == []
