"""The import graph of ``src/lesionq``: no cycles, and layers that only point down.

The graph is built statically: :mod:`ast` over every ``.py`` file under
``src/lesionq`` (nothing is imported), relative imports resolved against the
importing module. Each import of a lesionq module is an edge, recorded with where
it sits:

* ``module``: executed when the module is imported (module body, class bodies,
  ``try`` / ``if`` blocks at module level);
* ``function``: inside a function, method or lambda (executed on first call);
* imports under ``if TYPE_CHECKING:`` are not edges (never executed).

``from pkg import name`` is an edge to the submodule ``pkg.name`` when that is a
module, otherwise to ``pkg``. Importing ``a.b.c`` from outside ``a.b`` also runs
``a.b/__init__.py`` first, so it adds an edge to each package above the target
that the importer is not inside (a package importing its own submodules is the
normal shape of a package, not a cycle).

Rules
-----
1. No cycle among lesionq modules at module level.
2. No cycle either when the imports inside functions are counted too: a cycle
   hidden by an import inside a function is still a cycle (ARCHITECTURE.md,
   "One assembly per pipeline"). The only imports exempt are the documented lazy
   ones in :data:`LAZY_IMPORTS` (PEP 562 ``__getattr__`` of a package that keeps
   a heavy, rarely needed part out of ``import``).
3. Layers only point down (ARCHITECTURE.md, "The shape of the system"), counting
   module- and function-level imports alike. Each top-level part of the package
   is in one layer of :data:`LAYERS`; a module may import its own part and the
   parts listed for its layer in :data:`MAY_IMPORT`, nothing else:

   ============  ==========================================================
   layer         may import (besides itself)
   ============  ==========================================================
   errors        nothing (``_version`` neither)
   core          errors (numpy / scipy only: no types, io, config)
   config        errors
   types         core, errors
   io            core, config, types, errors, ``_version``
   registration  io and below
   preprocess    io and below
   store         io and below (never batch, review, qc)
   qc            io and below (pure rendering: never store, batch, review)
   testing       io and below (never imported by production code)
   steps         registration, preprocess, io and below (the package
                 ``lesionq.steps``: visit, gd, black_holes, longitudinal,
                 and the protocol registry)
   interfaces    steps and below
   workflows     interfaces and below
   batch         workflows, store, qc and below (never review, api, cli)
   api           batch and below
   review        store, qc, io and below, and batch **only** through
                 :data:`REVIEW_ENTRY_POINTS` (``lesionq.batch.tables``)
   cli           everything
   lesionq       (the package ``__init__``) ``_version``; ``api`` and
                 ``steps`` (``load_protocol``) lazily (:data:`LAZY_IMPORTS`)
   ============  ==========================================================

   ``lesionq._version`` (the version string) is a leaf every layer may import.
4. ``batch`` does not import ``review``: the reviewed counts that
   ``batch/tables.py`` and ``batch/status.py`` merge into ``visits.tsv``, the
   endpoints and ``lesionq status`` come from the review read model in ``store``
   (``lesionq.store.reviewed``, with the review tables and rules it applies:
   ``store.review_tables``, ``store.review_rules``, ``store.review_added``; issue
   16: "the reviewed-count queries move into ``store/``"), which the review app
   re-exports (:func:`test_batch_does_not_import_review`).
5. Imports go at the top of the module (issue 16). An import inside a function,
   method or lambda (any import, not only of lesionq modules; ``if
   TYPE_CHECKING:`` blocks aside) says why it is there with a ``# lazy: <reason>``
   comment on its first line: it keeps an optional dependency optional, loads
   nipype only after ``NIPYPE_NO_ET`` is set, keeps a heavy stack (nipype, dask,
   SimpleITK, torch, FastAPI) out of a light entry point (``import lesionq``, the
   command line's start-up), or breaks a cycle (``# lazy: cycle a -> b``).
   The Alembic revisions under ``store/migrations/versions`` are left out
   (:func:`test_imports_inside_functions_say_why`).

Running this file directly prints the cycles and the upward edges found::

    python tests/test_layering.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lesionq"

#: Function-level imports that are documented lazy loads, not cycle dodges:
#: (importer, imported) -> why.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("lesionq", "lesionq.api"): (
        "PEP 562: `import lesionq` has no side effects and does not load nipype, "
        "dask or SimpleITK; the API loads on first use"
    ),
    ("lesionq", "lesionq.steps.registry"): "PEP 562, as lesionq.api (load_protocol)",
    ("lesionq.review", "lesionq.review.app"): (
        "PEP 562: reviewed counts and the review rules do not load the FastAPI web stack"
    ),
}

#: Layer of each top-level part of the package (``lesionq.<part>``).
LAYERS: dict[str, str] = {
    "_version": "version",
    "errors": "errors",
    "core": "core",
    "config": "config",
    "types": "types",
    "io": "io",
    "registration": "registration",
    "preprocess": "preprocess",
    "store": "store",
    "qc": "qc",
    "testing": "testing",
    "steps": "steps",
    "interfaces": "interfaces",
    "workflows": "workflows",
    "batch": "batch",
    "api": "api",
    "review": "review",
    "cli": "cli",
    "": "lesionq",
}

_BASE = {"errors", "version"}
_IO = _BASE | {"io", "core", "config", "types"}
_STEPS = _IO | {"steps", "registration", "preprocess"}

#: Layers each layer may import (its own layer is always allowed).
MAY_IMPORT: dict[str, set[str]] = {
    "version": set(),
    "errors": set(),
    "core": {"errors"},
    "config": {"errors"},
    "types": {"core", "errors"},
    "io": _IO,
    "registration": _IO,
    "preprocess": _IO,
    "store": _IO,
    "qc": _IO,
    "testing": _IO,
    "steps": _STEPS,
    "interfaces": _STEPS,
    "workflows": _STEPS | {"interfaces"},
    "batch": _STEPS | {"interfaces", "workflows", "store", "qc"},
    "api": _STEPS | {"interfaces", "workflows", "store", "qc", "batch"},
    "review": _IO | {"store", "qc", "batch"},
    "cli": set(LAYERS.values()),
    "lesionq": {"version", "api", "steps"},
}

#: The batch modules the review app may import (it rewrites the tables after a review).
REVIEW_ENTRY_POINTS = frozenset({"lesionq.batch.tables"})

#: The marker an import inside a function carries on its first line (rule 5).
LAZY_MARKER = "# lazy:"

#: Alembic revisions: generated scripts, left as they are (rule 5).
MIGRATION_VERSIONS = f"{PACKAGE}.store.migrations.versions"


@dataclass(frozen=True)
class Edge:
    """One import of a lesionq module by another.

    Attributes
    ----------
    source, target : str
        Dotted names of the importing and the imported module.
    line : int
        Line of the import statement in ``source``.
    where : {"module", "function"}
        Executed on import of ``source``, or inside a function.
    implied : bool
        True for the edge to a package whose ``__init__`` runs first.
    """

    source: str
    target: str
    line: int
    where: str
    implied: bool = False

    def __str__(self) -> str:
        kind = f"{self.where}-level" + (", package __init__" if self.implied else "")
        return f"{self.source}:{self.line} -> {self.target} ({kind})"


def module_name(path: Path) -> str:
    """Dotted module name of a file under :data:`SRC` (``pkg/__init__.py`` -> ``pkg``)."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Import statements with ``module`` / ``function``, skipping ``if TYPE_CHECKING:``."""
    stack: list[tuple[ast.AST, str]] = [(tree, "module")]
    while stack:
        node, where = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.append((ast.Module(body=child.orelse, type_ignores=[]), where))
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, where
            inner = (
                "function"
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                else where
            )
            stack.append((child, inner))


def imports_without_reason(modules: dict[str, Path] | None = None) -> dict[str, list[int]]:
    """Imports inside functions whose first line lacks :data:`LAZY_MARKER` (rule 5).

    Parameters
    ----------
    modules : dict, optional
        Dotted name -> file; default :func:`package_modules`. The Alembic
        revisions (:data:`MIGRATION_VERSIONS`) are left out.

    Returns
    -------
    dict of str to list of int
        Dotted module name -> the lines of its offending import statements.
    """
    modules = package_modules() if modules is None else modules
    found: dict[str, list[int]] = {}
    for name, path in modules.items():
        if name == MIGRATION_VERSIONS or name.startswith(MIGRATION_VERSIONS + "."):
            continue
        text = path.read_text()
        lines = text.splitlines()
        bad = sorted(
            node.lineno
            for node, where in _imports(ast.parse(text, filename=str(path)))
            if where == "function" and LAZY_MARKER not in lines[node.lineno - 1]
        )
        if bad:
            found[name] = bad
    return found


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The module ``name`` lives in (``lesionq.io.nifti.load`` -> ``lesionq.io.nifti``)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_edges(modules: dict[str, Path] | None = None) -> list[Edge]:
    """All edges between lesionq modules (see the module docstring).

    Parameters
    ----------
    modules : dict, optional
        Dotted name -> file; default :func:`package_modules`.

    Returns
    -------
    list of Edge
        Self-imports left out; the implied edges to packages included.
    """
    modules = package_modules() if modules is None else modules
    edges: list[Edge] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, where in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    targets.append(sub if sub in modules else origin)
            for target in targets:
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                target = _owner(target, modules)
                if target != name:
                    edges.append(Edge(name, target, node.lineno, where))
                # the packages above the target that the importer is not inside run first
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent == name or name.startswith(parent + "."):
                        continue
                    edges.append(Edge(name, parent, node.lineno, where, implied=True))
    return list(dict.fromkeys(edges))


def _graph(edges: Iterable[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.source].add(e.target)
    return graph


def find_cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan).

    Parameters
    ----------
    edges : iterable of Edge

    Returns
    -------
    list of list of str
        Each cycle as ``[a, b, ..., a]``; empty when the graph is acyclic.
    """
    graph = _graph(edges)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, g) for g in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the smallest name of a strongly connected group (BFS)."""
    start = min(group)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def _describe(cycles: list[list[str]], edges: list[Edge]) -> str:
    where = {(e.source, e.target): e for e in edges}
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        lines += [f"    {where[a, b]}" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "\n".join(lines)


def layer_of(module: str) -> str:
    """Layer (:data:`LAYERS`) of a dotted module name."""
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else ""
    try:
        return LAYERS[part]
    except KeyError:
        raise AssertionError(
            f"{module}: new top-level part {part!r}; give it a layer in LAYERS"
        ) from None


def upward_edges(edges: Iterable[Edge]) -> list[Edge]:
    """The edges that break :data:`MAY_IMPORT` or :data:`REVIEW_ENTRY_POINTS`.

    Parameters
    ----------
    edges : iterable of Edge

    Returns
    -------
    list of Edge
        Not counting :data:`LAZY_IMPORTS`.
    """
    bad = []
    for e in edges:
        if (e.source, e.target) in LAZY_IMPORTS:
            continue
        src, dst = layer_of(e.source), layer_of(e.target)
        if src == dst:
            continue
        if dst not in MAY_IMPORT[src]:
            bad.append(e)
        elif src == "review" and dst == "batch" and not e.implied:
            if e.target not in REVIEW_ENTRY_POINTS:
                bad.append(e)
    return bad


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges()


def test_graph_is_read(edges):
    modules = package_modules()
    assert len(modules) > 50
    pairs = {(e.source, e.target, e.where) for e in edges}
    assert ("lesionq.batch.executor", "lesionq.batch.subject", "module") in pairs
    # relative imports resolve: `from ..io.bids import VisitInputs` in lesionq.batch.runner
    assert ("lesionq.batch.runner", "lesionq.io.bids", "module") in pairs
    # `from . import api` inside __getattr__ is a function-level edge to the submodule
    assert ("lesionq", "lesionq.api", "function") in pairs
    # importing lesionq.store.models from outside runs lesionq/store/__init__.py first
    assert any(e.implied and e.target == "lesionq.store" for e in edges)


def test_edges_of_a_small_tree(tmp_path):
    src = tmp_path / "lesionq"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "sub" / "__init__.py").write_text("")
    (src / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n"
        "    from ..c import C\n"
        "else:\n"
        "    from ..c import D\n"
        "def f():\n"
        "    import lesionq.c\n"
    )
    (src / "sub" / "b.py").write_text("")
    (src / "c.py").write_text("from .sub.a import f\n")
    modules = {
        name: tmp_path / path
        for name, path in {
            "lesionq": "lesionq/__init__.py",
            "lesionq.sub": "lesionq/sub/__init__.py",
            "lesionq.sub.a": "lesionq/sub/a.py",
            "lesionq.sub.b": "lesionq/sub/b.py",
            "lesionq.c": "lesionq/c.py",
        }.items()
    }
    got = {(e.source, e.target, e.where, e.implied) for e in import_edges(modules)}
    assert got == {
        ("lesionq.sub.a", "lesionq.sub.b", "module", False),
        ("lesionq.sub.a", "lesionq.c", "module", False),  # the else branch only
        ("lesionq.sub.a", "lesionq.c", "function", False),
        ("lesionq.c", "lesionq.sub.a", "module", False),
        ("lesionq.c", "lesionq.sub", "module", True),
    }
    assert find_cycles(import_edges(modules)) == [["lesionq.c", "lesionq.sub.a", "lesionq.c"]]


def test_cycle_finder_reports_a_cycle():
    fake = [Edge("a", "b", 1, "module"), Edge("b", "c", 1, "module"), Edge("c", "a", 1, "module")]
    assert find_cycles(fake) == [["a", "b", "c", "a"]]
    assert find_cycles(fake[:2]) == []


def test_no_cycles_at_module_level(edges):
    module_level = [e for e in edges if e.where == "module"]
    cycles = find_cycles(module_level)
    assert not cycles, "import cycles at module level:\n" + _describe(cycles, module_level)


def test_no_cycles_hidden_inside_functions(edges):
    counted = [e for e in edges if (e.source, e.target) not in LAZY_IMPORTS]
    cycles = find_cycles(counted)
    assert not cycles, "import cycles (imports inside functions counted):\n" + _describe(
        cycles, counted
    )


def test_lazy_imports_are_still_there(edges):
    """Each exemption names a real function-level import (no stale entries)."""
    pairs = {(e.source, e.target) for e in edges if e.where == "function"}
    assert set(LAZY_IMPORTS) <= pairs


def test_every_part_has_a_layer():
    for name in package_modules():
        assert layer_of(name) in MAY_IMPORT


def test_layers_only_point_down(edges):
    bad = upward_edges(edges)
    assert not bad, "imports against the layers (see this module's docstring):\n" + "\n".join(
        f"  {e}  [{layer_of(e.source)} -> {layer_of(e.target)}]" for e in bad
    )


def test_the_rules_catch_an_upward_import():
    assert upward_edges([Edge("lesionq.core.units", "lesionq.io.nifti", 1, "function")])
    assert upward_edges([Edge("lesionq.store.db", "lesionq.review.state", 1, "module")])
    assert upward_edges([Edge("lesionq.review.app", "lesionq.batch.runner", 1, "module")])
    assert upward_edges([Edge("lesionq.batch.tables", "lesionq.review.app", 1, "function")])
    assert upward_edges([Edge("lesionq.batch.status", "lesionq.review.state", 1, "module")])
    assert not upward_edges([Edge("lesionq.batch.status", "lesionq.store.reviewed", 1, "module")])
    assert not upward_edges([Edge("lesionq.review.app", "lesionq.batch.tables", 1, "module")])
    assert not upward_edges([Edge("lesionq.batch.runner", "lesionq.store.db", 1, "module")])


def test_batch_does_not_import_review(edges):
    """Rule 4: batch reads the reviewed counts from ``lesionq.store.reviewed``."""
    bad = [
        str(e) for e in edges if layer_of(e.source) == "batch" and layer_of(e.target) == "review"
    ]
    assert not bad, "\n".join(bad)


def test_imports_inside_functions_say_why():
    """Rule 5: an import inside a function carries ``# lazy: <reason>``."""
    modules = package_modules()
    found = imports_without_reason(modules)
    assert not found, (
        "imports inside functions without a `# lazy: <reason>` comment (move them to the top "
        "of the module, or say why they stay; see rule 5 of this module's docstring):\n"
        + "\n".join(
            f"  {modules[name].relative_to(SRC)}:{line}"
            for name, lines in sorted(found.items())
            for line in lines
        )
    )


def test_the_lazy_rule_on_a_small_tree(tmp_path):
    src = tmp_path / "lesionq"
    (src / "store" / "migrations" / "versions").mkdir(parents=True)
    (src / "a.py").write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "def f():\n"
        "    import json\n"
        "    from csv import (  # lazy: a reason\n"
        "        reader,\n"
        "    )\n"
        "    if TYPE_CHECKING:\n"
        "        import numpy\n"
        "    g = lambda: __import__('x')\n"
        "class C:\n"
        "    def m(self):\n"
        "        from . import b\n"
    )
    (src / "store" / "migrations" / "versions" / "v1.py").write_text(
        "def upgrade():\n    import json\n"
    )
    modules = {
        "lesionq.a": src / "a.py",
        f"{MIGRATION_VERSIONS}.v1": src / "store" / "migrations" / "versions" / "v1.py",
    }
    assert imports_without_reason(modules) == {"lesionq.a": [4, 13]}


if __name__ == "__main__":  # pragma: no cover - a report for people
    found = import_edges()
    for kind in ("module", "function"):
        n = sum(1 for e in found if e.where == kind and not e.implied)
        print(f"{kind}-level imports of lesionq modules: {n}")
    level = [e for e in found if e.where == "module"]
    print("cycles at module level:\n" + (_describe(find_cycles(level), level) or "  none"))
    counted = [e for e in found if (e.source, e.target) not in LAZY_IMPORTS]
    print("cycles counting imports inside functions:")
    print(_describe(find_cycles(counted), counted) or "  none")
    print("imports against the layers:")
    for e in upward_edges(found):
        print(f"  {e}  [{layer_of(e.source)} -> {layer_of(e.target)}]")
    print("imports inside functions without a `# lazy:` reason (rule 5):")
    for name, lines in sorted(imports_without_reason().items()):
        print(f"  {name}: lines {', '.join(map(str, lines))}")
    sys.exit(0)
