"""Imports flow one way through the package's rooms (STYLE.md, house rule 1).

``exceptions/config`` <- ``io`` <- ``data`` <- ``models`` <- ``train`` <-
``features`` <- ``analysis`` <- ``report`` <- ``pipelines`` <- ``cli``: every
``import biomark...`` of every module is parsed with :mod:`ast` (module level,
inside functions, and under ``if TYPE_CHECKING:``), its room looked up, and an
import of a room to the right fails. A typing-only import may point anywhere
as long as it closes no cycle of imports between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "biomark"

#: Rank of every room; a module may import its own room and rooms of lower rank.
RANKS: dict[str, int] = {
    "exceptions": 0,
    "config": 0,
    "provenance": 0,
    "progress": 0,
    "allocator": 0,
    "onednn": 0,  # the base: no biomark imports but these (provenance imports onednn)
    "io": 1,
    "cluster": 1,  # reaching files, URLs and clusters (cluster.py imports io.remote only)
    "data": 2,
    "models": 3,
    "train": 4,
    "features": 5,
    "analysis": 6,
    "report": 7,
    "pipelines": 8,
    "cli": 9,
    "__main__": 9,
}

#: Typing-only cycles that exist today (each must still exist: the list only shrinks). The last one,
#: report_models <-> report_strategy, went when the report's dataclasses moved to
#: report/strategy_report.py.
KNOWN_TYPING_CYCLES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``typing`` when only under
    ``if TYPE_CHECKING:``."""

    source: str
    target: str
    line: int
    typing: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    """``biomark.features.deep`` -> ``features``; the package itself has no room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, typing: bool) -> Iterator[tuple[str, int, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield from _imports_of(inner, True)
                yield from _imports(inner, True)
            for inner in child.orelse:
                yield from _imports_of(inner, typing)
                yield from _imports(inner, typing)
            continue
        yield from _imports_of(child, typing)
        yield from _imports(child, typing)


def _imports_of(node: ast.AST, typing: bool) -> Iterator[tuple[str, int, bool]]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "biomark" or alias.name.startswith("biomark."):
                yield alias.name, node.lineno, typing
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "biomark" or node.module.startswith("biomark."):
            for alias in node.names:  # `from biomark.features import deep` imports the module deep
                sub = f"{node.module}.{alias.name}"
                yield (
                    (
                        sub
                        if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file()
                        else node.module
                    ),
                    node.lineno,
                    typing,
                )


def edges() -> list[Edge]:
    """Every import of a biomark module by a biomark module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        source = module_name(path)
        found.extend(
            Edge(source, target, line, typing) for target, line, typing in _imports(tree, False)
        )
    return found


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return False


def test_every_room_is_ranked() -> None:
    rooms = {room(module_name(p)) for p in PACKAGE.rglob("*.py")} - {None}
    assert rooms <= set(RANKS), f"rooms without a rank: {sorted(rooms - set(RANKS))}"


def test_no_module_imports_a_room_to_its_right() -> None:
    upward = [
        e
        for e in edges()
        if not e.typing
        and room(e.source)
        and room(e.target)
        and RANKS[room(e.target)] > RANKS[room(e.source)]
    ]  # type: ignore[index]
    assert not upward, "imports against the flow:\n" + "\n".join(
        f"  {e.source}:{e.line} imports {e.target}" for e in upward
    )


def test_typing_only_imports_close_no_cycle() -> None:
    all_edges = edges()
    graph: dict[str, set[str]] = {}
    for e in all_edges:
        graph.setdefault(e.source, set()).add(e.target)
    cycles = {
        tuple(sorted((e.source, e.target)))
        for e in all_edges
        if e.typing and _reaches(graph, e.target, e.source)
    }
    assert cycles <= KNOWN_TYPING_CYCLES, (
        f"typing-only imports that close a cycle: {sorted(cycles - KNOWN_TYPING_CYCLES)}"
    )
    assert KNOWN_TYPING_CYCLES <= cycles, (
        f"fixed, remove from KNOWN_TYPING_CYCLES: {sorted(KNOWN_TYPING_CYCLES - cycles)}"
    )


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [
        ("biomark.features.deep", "biomark.io.atomic", False),
        ("biomark.analysis.compare", "biomark.pipelines.compare", True),
        ("biomark.cli.extract", "biomark.pipelines.extract", False),
    ],
)
def test_the_rule_itself(source: str, target: str, upward: bool) -> None:
    assert (RANKS[room(target)] > RANKS[room(source)]) is upward  # type: ignore[index]


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    """The parser sees imports inside functions and under TYPE_CHECKING, and tells them apart."""
    code = (
        "from typing import TYPE_CHECKING\nimport biomark.io\nif TYPE_CHECKING:\n"
        "    from biomark.report.page import Page\ndef f():\n    from biomark.pipelines import "
        "extract\n"
    )
    found = sorted((t, line, typing) for t, line, typing in _imports(ast.parse(code), False))
    assert found == [
        ("biomark.io", 2, False),
        ("biomark.pipelines.extract", 6, False),
        ("biomark.report.page", 4, True),
    ]
