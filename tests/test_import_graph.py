"""stylesift's modules import in one direction only, through a table of layers, and never in a cycle.

Layers, left to right: ``stylesift.cli`` → ``stylesift.review`` → ``stylesift.classifiers`` →
``stylesift.featurizer`` → core (the top-level ``stylesift`` modules). A module may import its own
layer and the layers to its right, never one to its left. Function-level imports count too, and
every sub-package is walked.
"""

from __future__ import annotations

import ast

from helpers.modules import source_files

LAYERS = ["stylesift.cli", "stylesift.review", "stylesift.classifiers", "stylesift.featurizer", "core"]
# Modules that sit above every layer: the programs that start the command line.
ENTRY_POINTS = {"stylesift.__main__": "`python -m stylesift` runs the command line (stylesift.cli.main)"}


def layer_of(module: str) -> int:
    """Index in LAYERS of a ``stylesift`` module name (-1 for an entry point); lower is further left."""
    if module in ENTRY_POINTS:
        return -1
    for i, prefix in enumerate(LAYERS[:-1]):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return len(LAYERS) - 1


def imported(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``stylesift`` name imported anywhere in ``source``, function bodies included.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a module or a name in ``a.b``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names if a.name != "*")]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets if t == "stylesift" or t.startswith("stylesift.")]
    return found


def layer_violations(sources: dict[str, str]) -> list[str]:
    """``"module:line imports target (layer → layer)"`` for every import of a layer to the left."""
    out = []
    for name, source in sources.items():
        mine = layer_of(name)
        for line, target in imported(source):
            theirs = layer_of(target)
            if target != "stylesift" and theirs < mine:  # `import stylesift` alone is the lazy facade: any layer may
                out.append(f"{name}:{line} imports {target} ({LAYERS[mine]} may not import {LAYERS[theirs]})")
    return sorted(set(out))


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module → the stylesift modules it imports.

    ``from p import x`` is an edge to ``p.x`` when that is a module, and to ``p`` (its ``__init__``)
    unless ``p`` is a package the importing module lives in: that one is always imported first.
    """
    graph = {name: set() for name in sources}
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in sources:
                package, names = node.module, [a.name for a in node.names]
                submodules = {f"{package}.{n}" for n in names if f"{package}.{n}" in sources}
                graph[name] |= submodules
                if len(submodules) < len(names) or not name.startswith(package + "."):
                    graph[name].add(package)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in sources}
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def checkout_sources() -> dict[str, str]:
    return {name: file.read_text() for name, file in source_files().items()}


def test_the_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_the_graph_sees_function_level_imports_and_a_package_only_through_its_init():
    sources = {
        "stylesift.featurizer.store": "from stylesift.featurizer.store.files import Layout\n",
        "stylesift.featurizer.store.files": "def later():\n    from stylesift.featurizer.store import FeatureStore\n",
        "stylesift.featurizer.store.reader": "from stylesift.featurizer.store import files\n",  # its own package: not an edge
    }
    graph = import_graph(sources)
    assert graph == {"stylesift.featurizer.store": {"stylesift.featurizer.store.files"},
                     "stylesift.featurizer.store.files": {"stylesift.featurizer.store"},
                     "stylesift.featurizer.store.reader": {"stylesift.featurizer.store.files"}}
    assert cycles(graph) == [["stylesift.featurizer.store", "stylesift.featurizer.store.files"]]


def test_no_module_imports_itself_back():
    graph = import_graph(checkout_sources())
    assert len(graph) > 40
    assert cycles(graph) == []


def test_the_layer_table():
    assert layer_of("stylesift.cli.main") == 0 and layer_of("stylesift.review.round") == 1
    assert layer_of("stylesift.classifiers.bundle") == 2 and layer_of("stylesift.featurizer.store.files") == 3
    assert layer_of("stylesift.errors") == layer_of("stylesift.atomic") == 4
    assert layer_of("stylesift.reviewer") == 4  # a prefix of a name is not its layer


def test_the_checker_reports_an_import_to_the_left_even_inside_a_function():
    sources = {
        "stylesift.classifiers.fake": "import numpy\n\n\ndef later():\n    from stylesift.review import x\n",
        "stylesift.featurizer.store.fake": "import stylesift.cli.main\nfrom stylesift.errors import StylesiftError\n",
        "stylesift.errors": "from stylesift.featurizer import images\n",
        "stylesift.review.fine": "from stylesift.classifiers.bundle import Bundle\nfrom stylesift.review import labels\n",
    }
    assert layer_violations(sources) == [
        "stylesift.classifiers.fake:5 imports stylesift.review (stylesift.classifiers may not import stylesift.review)",
        "stylesift.classifiers.fake:5 imports stylesift.review.x (stylesift.classifiers may not import stylesift.review)",
        "stylesift.errors:1 imports stylesift.featurizer (core may not import stylesift.featurizer)",
        "stylesift.errors:1 imports stylesift.featurizer.images (core may not import stylesift.featurizer)",
        "stylesift.featurizer.store.fake:1 imports stylesift.cli.main (stylesift.featurizer may not import stylesift.cli)",
    ]


def test_every_module_imports_only_its_layer_and_those_to_its_right():
    sources = checkout_sources()
    # Every layer, sub-packages included, is really walked.
    assert {"stylesift.errors", "stylesift.featurizer.images", "stylesift.featurizer.store", "stylesift.classifiers.train",
            "stylesift.review.report", "stylesift.cli.main"} <= set(sources)
    assert any(name.count(".") >= 3 for name in sources)  # e.g. stylesift.featurizer.store.files
    assert layer_violations(sources) == []
