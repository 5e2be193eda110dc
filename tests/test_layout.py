"""The codebase's shape: no module over 400 lines, no import cycle between the project's modules (function-level
imports included), and no task name outside its own task file and the grid presets."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"bench": "bench", "bench.solvers": "solvers", "bench.tasks": "tasks", "bench.priors": "priors",
            "bench.datasets": "datasets", "bench.cli.commands": "bench/cli/commands"}
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
    long.update({f"tests.{p.stem}": len(p.read_text().splitlines()) for p in (REPO / "tests").glob("*.py")})
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
