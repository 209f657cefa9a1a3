"""The package layout's two import rules (docs/design.md, "The tree"), checked on the source.

1. No import cycles anywhere in ``src/``.
2. The engine (``sources/``, ``scheduling/``, ``executors/``, ``store/``, ``observability/``)
   never imports the views or the command line (``web/``, ``authors/``, ``commands/``,
   ``cli.py``), not even through a top-level module such as ``settings.py``.

Every ``import`` statement counts, wherever it is: at the top, inside a function (the
command line imports lazily to start fast; a lazy import still ties the two modules
together), and under ``if TYPE_CHECKING:`` (it never runs, but a reader follows it like any
other import, and a type-only cycle is the same tangle to a reader). A module's edges are
the modules its statements name: ``from .store import Store`` is an edge to the package
``store`` (its ``__init__``), ``from . import dialect`` one to ``store.dialect``. Importing
``a.b.c`` also runs ``a`` and ``a.b``'s ``__init__``; those implicit edges are not counted, so
a package's ``__init__`` may re-export its own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ENGINE = ("sources", "scheduling", "executors", "store", "observability")
VIEWS = ("web", "authors", "commands", "cli")


def module_files(src: Path, package: str = "peach_tasks") -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module under src/package."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph(src: Path, package: str = "peach_tasks") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` its import statements name (all of them, see above)."""
    modules = module_files(src, package)

    def known(name: str) -> str | None:  # a module, or the module a name inside it belongs to
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            edges.update(t for target in targets if target.startswith(package) and (t := known(target)))
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (module by module, back to the first) per group of modules that import each
    other (Tarjan's strongly connected components, then a path through each group)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # recursive: the graph has a few hundred modules at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_around(graph, group) for group in groups]


def _path_around(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                todo.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def engine_reaching_views(graph: dict[str, set[str]], package: str = "peach_tasks") -> list[list[str]]:
    """For each engine module that reaches a view module through imports: the chain, module by module."""

    def inside(name: str, parts: tuple[str, ...]) -> bool:
        return any(name == f"{package}.{p}" or name.startswith(f"{package}.{p}.") for p in parts)

    found = []
    for name in sorted(graph):
        if not inside(name, ENGINE):
            continue
        chains = {name: [name]}
        todo = [name]
        while todo:
            node = todo.pop(0)
            for nxt in sorted(graph[node]):
                if nxt in chains:
                    continue
                chains[nxt] = chains[node] + [nxt]
                if inside(nxt, VIEWS):
                    found.append(chains[nxt])
                else:
                    todo.append(nxt)
    return found


def shown(chains: list[list[str]], most: int = 10) -> str:
    """The shortest chains first (the offending import ends the first one), ``most`` of them."""
    ordered = sorted(chains, key=len)
    lines = [" -> ".join(chain) for chain in ordered[:most]]
    if len(ordered) > most:
        lines.append(f"... and {len(ordered) - most} more")
    return "\n".join(lines)


def test_no_import_cycles_in_src() -> None:
    found = cycles(import_graph(SRC))
    assert not found, f"import cycles (each module imports the next):\n{shown(found)}"


def test_the_engine_never_imports_the_views_or_the_command_line() -> None:
    graph = import_graph(SRC)
    assert any(name.startswith("peach_tasks.scheduling.") for name in graph)  # the walk saw the engine
    found = engine_reaching_views(graph)
    assert not found, f"the engine imports the views or the command line:\n{shown(found)}"


def test_both_rules_find_what_they_are_for(tmp_path: Path) -> None:
    """The two checks above, on a small tree with one of each violation planted: a cycle
    through a lazy import and a type-only import, and a store module that reaches the web
    through a top-level module."""
    package = tmp_path / "peach_tasks"
    files = {
        "__init__.py": "",
        "settings.py": "from .web.hosts import check\n",
        "store/__init__.py": "from .store import Store\n",
        "store/store.py": "from . import logs\nfrom ..settings import Settings\n",
        "store/logs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .views import View\n",
        "store/views.py": "def rows():\n    from peach_tasks.store.store import Store\n",
        "web/__init__.py": "",
        "web/hosts.py": "import os\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["peach_tasks.store"] == {"peach_tasks.store.store"}
    assert cycles(graph) == [["peach_tasks.store.logs", "peach_tasks.store.views", "peach_tasks.store.store",
                              "peach_tasks.store.logs"]]
    assert ["peach_tasks.store.store", "peach_tasks.settings", "peach_tasks.web.hosts"] in engine_reaching_views(graph)
