"""Imports point one way: every import of the package, function-level ones included, goes to a lower layer
of the order below (the README's code layout) or stays inside its own package, and no modules import each
other in a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "selfmedmae"

# Bottom to top. A unit is a sub-package or a top-level module of selfmedmae; units on one line are siblings
# that must not import each other.
LAYERS = [
    ("errors",),
    ("outputs", "runtime", "extras"),
    ("config",),
    ("models", "data"),
    ("preflight",),
    ("inference",),
    ("metrics",),
    ("figures",),
    ("tasks",),
    ("train", "eval", "export"),
    ("experiments",),
    ("cli",),
    ("__main__", PACKAGE),  # the package root re-exports load_model
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str, known: set) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the package in the file, at any depth of the code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = resolve(target)
                if resolved and resolved != name:
                    found.append((node.lineno, resolved))
    return found


def import_graph(src: Path = SRC) -> dict[str, list[tuple[int, str]]]:
    paths = {module_name(p, src): p for p in (src / PACKAGE).rglob("*.py")}
    return {name: imports_of(path, name, set(paths)) for name, path in paths.items()}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def upward_edges(graph: dict) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        a = unit_of(module)
        for line, target in edges:
            b = unit_of(target)
            if a not in RANK or b not in RANK:
                bad.append(f"{module}:{line} imports {target}: add {a if a not in RANK else b!r} to LAYERS")
            elif a != b and RANK[b] >= RANK[a]:
                bad.append(f"{module}:{line} imports {target} ({b} is not below {a})")
    return bad


def cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for _, w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down_the_layers():
    assert upward_edges(import_graph()) == []


def test_no_modules_import_each_other_in_a_cycle():
    assert cycles(import_graph()) == []


def test_the_walker_sees_an_upward_function_level_import_and_a_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    for sub in ("data", "train", "models"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "reader.py").write_text("def f():\n    from selfmedmae.train.loop import g\n")
    (pkg / "train" / "loop.py").write_text("from selfmedmae.data import reader\n")
    (pkg / "models" / "a.py").write_text("from . import b\n")
    (pkg / "models" / "b.py").write_text("from selfmedmae.models.a import x\n")
    graph = import_graph(tmp_path)
    assert upward_edges(graph) == ["selfmedmae.data.reader:2 imports selfmedmae.train.loop (train is not below data)"]
    assert sorted(map(tuple, cycles(graph))) == [("selfmedmae.data.reader", "selfmedmae.train.loop"),
                                                 ("selfmedmae.models.a", "selfmedmae.models.b")]


@pytest.mark.parametrize("units", LAYERS)
def test_every_layer_unit_exists(units):
    for unit in units:
        assert unit == PACKAGE or (SRC / PACKAGE / unit).is_dir() or (SRC / PACKAGE / f"{unit}.py").is_file(), unit
