"""Every example in the package's docstrings runs and shows what it prints.

The house style asks for runnable examples in public docstrings, so that a user
can learn the API from them; running them here keeps them true.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import biomark

#: Every module of the package; ``biomark.__main__`` runs the CLI when imported.
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(biomark.__path__, "biomark.")
    if not info.name.endswith("__main__")
)


def test_every_module_is_listed() -> None:
    """The walk found the package's modules, so an empty list cannot pass silently."""
    assert {"biomark.analysis.alignment", "biomark.analysis.cka", "biomark.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False
    )
    failures = capsys.readouterr().out
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring example(s) in {name} failed:\n{failures}"
    )
