"""The package's modules import each other without circles.

Every import counts, also one inside a function (a lazy import is still a dependency); imports
under ``if TYPE_CHECKING:`` are annotations only and do not. ``from package import name``
depends on the module ``package.name`` when that is a module, else on ``package``.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import medrec

PACKAGE_ROOT = Path(medrec.__file__).parent


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, package: str) -> list[str]:
    """Absolute names imported anywhere in ``tree`` (``from x import y`` gives ``x.y``), outside TYPE_CHECKING."""
    found: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
            found.append(base)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """medrec module -> the medrec modules it imports."""
    modules = _module_files()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8")), package):
            if imported.split(".")[0] != "medrec":
                continue
            target = owner(imported)
            # "from pkg import module" names the module; the bare "pkg" entry of that statement adds
            # only the package's __init__, which every submodule import runs anyway
            if target is not None and target != name and not name.startswith(f"{target}."):
                targets.add(target)
        graph[name] = targets
    return graph


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medrec.planning import Plan\n"
                     "def f():\n    from medrec.score import scorer\n    import medrec.errors\n")
    assert set(_imports(tree, "medrec.x")) == {"typing.TYPE_CHECKING", "typing", "medrec.score.scorer",
                                               "medrec.score", "medrec.errors"}
    assert "medrec.models.aggregation" in import_graph()["medrec.models.registry"]


def test_no_import_cycles() -> None:
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        pytest.fail(f"import cycle: {cycle}; move what both need into a module below them")


# The pipeline's stages, lowest first: a module may import its own layer and those below it. Modules
# in no layer (errors, console, atomicio, hashing, device, thresholds, labels, manifest, budget,
# determinism, checkpoint) are the base that every stage may use; they import no stage.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("medrec.index", "medrec.annotations"),
    ("medrec.loader", "medrec.transforms", "medrec.planning"),
    ("medrec.split", "medrec.data"),
    ("medrec.models", "medrec.config"),
    ("medrec.rundir", "medrec.runinfo"),
    ("medrec.train",),
    ("medrec.score", "medrec.dicomout"),
    ("medrec.report",),
    ("medrec.evaluate", "medrec.workflow", "medrec.commands", "medrec.cli", "medrec.demo", "medrec.synth",
     "medrec.__main__"),
)


def _layer(module: str) -> int | None:
    for index, names in enumerate(LAYERS):
        if any(module == name or module.startswith(f"{name}.") for name in names):
            return index
    return None


def test_imports_flow_down_the_pipeline() -> None:
    upward = []
    for module, targets in sorted(import_graph().items()):
        own = _layer(module)
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs is not None and (own is None or theirs > own):
                upward.append(f"{module} -> {target}")
    assert not upward, f"imports that run back up the pipeline: {upward}; move the shared part down"
