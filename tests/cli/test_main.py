"""The command line frame: help without heavy imports, errors as messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from biomark.cli import build_parser, main

HEAVY = ("tensorflow", "keras", "radiomics", "SimpleITK", "shap", "umap", "jax", "torch")

COMMANDS = [
    [],
    ["data"],
    ["data", "build"],
    ["data", "phantom"],
    ["extract"],
    ["compare"],
    ["radiomics"],
    ["report"],
]


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


# --------------------------------------------------------------------------- -v / -q in both places


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["compare", "--run", "r"], 0, False),
        (["-q", "compare", "--run", "r"], 0, True),
        (["compare", "--run", "r", "-q"], 0, True),
        (["compare", "-q", "--run", "r"], 0, True),
        (["-v", "compare", "--run", "r"], 1, False),
        (["compare", "--run", "r", "-v"], 1, False),
        (["-v", "compare", "--run", "r", "-v"], 2, False),
        (["data", "build", "--out", "x", "--quiet"], 0, True),
        (["data", "-q", "phantom", "--out", "x"], 0, True),
        (["extract", "--plan", "p.yaml", "-vv"], 2, False),
        (["report", "--run", "r", "-q"], 0, True),
        (["radiomics", "--data", "d", "--verbose"], 1, False),
    ],
)
def test_verbosity_before_or_after_the_command(argv: list[str], verbose: int, quiet: bool) -> None:
    args = build_parser().parse_args(argv)
    assert args.verbose + getattr(args, "verbose_after", 0) == verbose
    assert args.quiet is quiet


def test_quiet_after_the_command_reaches_main(tmp_path, capsys, monkeypatch) -> None:
    """`biomark compare ... -q` used to stop at "unrecognized arguments: -q"."""
    seen = {}
    monkeypatch.setattr(
        "biomark.cli.configure_logging", lambda verbose, quiet: seen.update(v=verbose, q=quiet)
    )
    assert main(["compare", "--run", str(tmp_path / "none"), "--a", "x", "--b", "y", "-q"]) == 1
    assert "run folder not found" in capsys.readouterr().err
    assert seen == {"v": 0, "q": True}


# -------------------------------------------------------------------------- disk errors as messages


def test_os_errors_about_space_and_permissions_become_messages(monkeypatch, capsys) -> None:
    import errno
    import os

    from biomark.cli import compare

    def full(args) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/file.bin")

    monkeypatch.setattr(compare, "run", full)
    assert main(["-q", "compare", "--run", "r", "--a", "x", "--b", "y"]) == 1
    err = capsys.readouterr().err
    assert (
        "biomark compare: error: /data/out/file.bin: no space left on device" in err
        and "Traceback" not in err
    )

    def other(args) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(compare, "run", other)
    with pytest.raises(OSError, match="Input/output error"):  # no file to name: a real fault
        main(["-q", "compare", "--run", "r"])


def test_os_errors_that_name_a_file_become_messages(monkeypatch, capsys) -> None:
    import errno
    import os

    from biomark.cli import compare

    def missing(args) -> int:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/proc/x")

    monkeypatch.setattr(compare, "run", missing)
    assert main(["-q", "compare", "--run", "r", "--a", "x", "--b", "y"]) == 1
    err = capsys.readouterr().err
    assert "biomark compare: error: /proc/x: No such file or directory; check the path" in err
    assert "Traceback" not in err
    assert main(["-v", "compare", "--run", "r", "--a", "x", "--b", "y"]) == 1
    assert "Traceback" in capsys.readouterr().err  # -v shows where it happened


def test_read_only_out_is_named_before_any_work(tmp_path, capsys) -> None:
    from tmpfs import mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)

    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as folder:
        assert (
            main(["-q", "data", "phantom", "--out", str(folder / "ph"), "--n-per-class", "2"]) == 1
        )
        err = capsys.readouterr().err
        assert f"--out {folder / 'ph'}: cannot write in {folder} (Read-only file system)" in err
        assert "Traceback" not in err
