"""The layering rules of ARCHITECTURE.md, read from the code's own imports (ast), so they stay true:

- the import graph of the four packages has no circle (imports inside functions count too);
- ``features``, ``ranking`` and ``generative`` import nothing of ``pipeline`` but its contract
  module (``rankpipe.pipeline.schema``), and the packages, with the contract as its own layer, have
  no circle between them either;
- every import of our code goes through the one root, ``rankpipe``;
- pyproject.toml installs every package folder.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "features", "ranking", "generative")
CONTRACT = "rankpipe.pipeline.schema"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return "rankpipe." + ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The rankpipe modules ``path`` imports, anywhere in the file (``from a import b`` counts ``a.b``
    when ``b`` is a module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rankpipe"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("rankpipe"):
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module → the rankpipe modules it imports (itself left out)."""
    sources = _sources()
    return {name: _imports(path, set(sources)) - {name} for name, path in sources.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _layer(module: str) -> str:
    return "contract" if module == CONTRACT else module.split(".")[1]


def test_the_module_import_graph_has_no_circle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_components_import_nothing_of_pipeline_but_the_contract():
    offenders = {(m, t) for m, targets in import_graph().items() if _layer(m) in ("features", "ranking", "generative")
                 for t in targets if _layer(t) == "pipeline"}
    assert not offenders, sorted(offenders)


def test_the_layers_have_no_circle():
    layers: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        layers.setdefault(_layer(module), set()).update(_layer(t) for t in targets if _layer(t) != _layer(module))
    assert layers["contract"] == set()
    assert find_cycle(layers) is None, " -> ".join(find_cycle(layers))


def test_every_import_of_our_code_goes_through_the_rankpipe_root():
    bare = []
    for folder in (*PACKAGES, "tests", "benchmarks", "dags"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                bare += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert not bare, bare


def test_pyproject_installs_every_package_folder():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"rankpipe"} | {_module_name(p) for package in PACKAGES for p in (REPO / package).rglob("__init__.py")}
    assert declared == on_disk


@pytest.mark.parametrize("graph, cycle", [({"a": {"b"}, "b": {"c"}, "c": set()}, False), ({"a": {"b"}, "b": {"a"}}, True),
                                          ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, True)])
def test_find_cycle_finds_a_circle_only_where_there_is_one(graph, cycle):
    found = find_cycle(graph)
    assert (found is not None) == cycle
    if found:
        assert found[0] == found[-1] and all(b in graph[a] for a, b in zip(found, found[1:]))
