"""hwlat's import layering, read from the source with `ast` (every import, function-level ones
included): no cycle between the pairs of packages, and of modules, that must not have one."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hwlat"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of `known` that the file imports anywhere in it (module level, inside
    functions, under TYPE_CHECKING): `from a import b` counts a.b where that is a module, else a."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a name inside a module
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    return out


def module_edges(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imported(path, name, known) - {name} for name, path in mods.items()}


def package_of(module: str, depth: int = 2) -> str:
    """`hwlat.lowering.custom` -> `hwlat.lowering` (depth 2)."""
    return ".".join(module.split(".")[:depth])


def package_edges(edges: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """The import graph between packages (module edges lifted, each package's own dropped)."""
    out: dict[str, set[str]] = {}
    for src, dsts in edges.items():
        p = package_of(src, depth)
        out.setdefault(p, set()).update(package_of(d, depth) for d in dsts if package_of(d, depth) != p)
    return out


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path start -> ... -> goal in the graph, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == goal:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*path, nxt])
    return None


def cycle_between(graph: dict[str, set[str]], a: str, b: str) -> list[str] | None:
    """A cycle through both a and b (a -> ... -> b -> ... -> a), or None."""
    there, back = reaches(graph, a, b), reaches(graph, b, a)
    return there + back[1:] if there and back else None


EDGES = module_edges()
# the package root is a facade over every layer (`hwlat.load`, `hwlat.export`, `hwlat.predict` &
# co., each imported on first use): no layer imports the root (a test below), so its edges are no
# layering; leaves like hwlat.paths and hwlat.version hold what every layer shares
EDGES["hwlat"] = set()
PACKAGES = package_edges(EDGES)

# package pairs with no cycle between them, directly or through other packages (devices/ is a
# leaf and the runners that import lowering live in runners/, so devices <-> lowering is one)
ACYCLIC_PACKAGE_PAIRS = [
    ("hwlat.lowering", "hwlat.kernels"),
    ("hwlat.devices", "hwlat.lowering"),
    ("hwlat.devices", "hwlat.runners"),
    ("hwlat.lut", "hwlat.runners"),
]
# modules with no import cycle between them, directly or through others (one may import the
# other)
ACYCLIC_MODULE_PAIRS = [
    ("hwlat.lowering.pipelines", "hwlat.lowering.tuning"),
]


def test_the_import_graph_is_read():
    assert "hwlat.kernels.registry" in EDGES["hwlat.lowering.pipelines"]  # a function-level import
    assert "hwlat.lowering.custom" in EDGES["hwlat.lowering.support"]
    assert "hwlat.kernels" in PACKAGES["hwlat.lowering"]


@pytest.mark.parametrize(("a", "b"), ACYCLIC_PACKAGE_PAIRS)
def test_no_package_cycle(a, b):
    assert a in PACKAGES and b in PACKAGES
    cycle = cycle_between(PACKAGES, a, b)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(("a", "b"), ACYCLIC_MODULE_PAIRS)
def test_no_module_cycle(a, b):
    assert a in EDGES and b in EDGES
    cycle = cycle_between(EDGES, a, b)
    assert cycle is None, " -> ".join(cycle)


def test_kernels_import_nothing_of_lowering():
    offenders = {m: sorted(d for d in dsts if package_of(d) == "hwlat.lowering")
                 for m, dsts in EDGES.items() if package_of(m) == "hwlat.kernels"}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_helpers_find_cycles(tmp_path):
    pkg = tmp_path / "hwlat"
    for p in ("a", "b", "c"):
        (pkg / p).mkdir(parents=True)
        (pkg / p / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from hwlat.b import y\n")
    (pkg / "b" / "y.py").write_text("def f():\n    from hwlat.c.z import g\n")
    (pkg / "c" / "z.py").write_text("from ..a import x\n\ndef g(): ...\n")
    edges = module_edges(pkg)
    assert edges["hwlat.a.x"] == {"hwlat.b.y"} and edges["hwlat.b.y"] == {"hwlat.c.z"}
    assert edges["hwlat.c.z"] == {"hwlat.a.x"}
    packages = package_edges(edges)
    assert cycle_between(packages, "hwlat.a", "hwlat.b") == ["hwlat.a", "hwlat.b", "hwlat.c", "hwlat.a"]
    (pkg / "c" / "z.py").write_text("def g(): ...\n")
    assert all(cycle_between(package_edges(module_edges(pkg)), a, b) is None
               for a, b in itertools.combinations(["hwlat.a", "hwlat.b", "hwlat.c"], 2))


def test_no_layer_imports_the_package_root():
    importers = sorted(m for m, deps in module_edges().items() if "hwlat" in deps and m != "hwlat")
    assert importers == [], importers
