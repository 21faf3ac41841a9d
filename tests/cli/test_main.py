"""The command line frame: help without heavy imports, errors as messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from biomark.cli import build_parser, main

HEAVY = ("tensorflow", "keras", "radiomics", "SimpleITK", "shap", "umap", "jax", "torch")

COMMANDS = [[], ["data"], ["data", "build"], ["data", "phantom"], ["extract"], ["compare"], ["radiomics"], ["report"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "biomark")
def test_help_does_not_import_heavy_dependencies(command: list[str]) -> None:
    code = (
        "import sys\n"
        "from biomark.cli import main\n"
        "try:\n"
        f"    main({command + ['--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    assert "HEAVY []" in out.stdout


def test_every_command_is_registered() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"data", "extract", "compare", "radiomics"} <= set(sub.choices)


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_biomark_errors_become_messages(tmp_path, capsys) -> None:
    status = main(["extract", "--plan", str(tmp_path / "missing.yaml")])
    assert status == 1
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err
