"""The command's log: libraries' banners and chatter hidden by default, back with -v/-vv.

``configure_logging`` changes process-wide state (logger levels, environment,
an import hook), so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from biomark.cli.logs import TF_BANNERS, filtered_native_stderr

REPO = Path(__file__).resolve().parents[2]


def run_python(
    code: str, *, path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "DASK_LOGGING__DISTRIBUTED")
    }
    environment["PYTHONPATH"] = os.pathsep.join(([str(path)] if path else []) + [str(REPO)])
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=REPO,
    )


def test_native_banners_are_dropped_and_other_lines_kept(capfd: pytest.CaptureFixture) -> None:
    with filtered_native_stderr():
        os.write(2, f"W0000 port.cc:153] {TF_BANNERS[1]}. You may see...\n".encode())
        os.write(2, b"E0000 something real went wrong\n")
        print("python-level line", file=sys.stderr)
    err = capfd.readouterr().err
    assert TF_BANNERS[1] not in err
    assert "something real went wrong" in err and "python-level line" in err


@pytest.fixture
def fake_tensorflow(tmp_path: Path) -> Path:
    """A stand-in ``tensorflow`` whose import writes TensorFlow's real banners to descriptor 2, as
    its C++ does."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\n"
        f"os.write(2, b'WARNING: {TF_BANNERS[0]}\\n')\n"
        f"os.write(2, b'I0000 00:00:1.0 1 port.cc:153] {TF_BANNERS[1]}. You may see slightly "
        "different results\\n')\nos.write(2, b'E0000 a real import problem\\n')\n"
    )
    return tmp_path


IMPORT_AFTER_CONFIG = """
    from biomark.cli.logs import configure_logging
    configure_logging({verbose}, False)
    import tensorflow
    print("imported", tensorflow.__file__)
"""


def test_tensorflow_banners_hidden_by_default(fake_tensorflow: Path) -> None:
    done = run_python(IMPORT_AFTER_CONFIG.format(verbose=0), path=fake_tensorflow)
    assert done.returncode == 0, done.stderr
    assert str(fake_tensorflow) in done.stdout, "the stand-in was imported"
    assert "absl::InitializeLog" not in done.stderr and "oneDNN" not in done.stderr
    assert "a real import problem" in done.stderr


def test_tensorflow_banners_shown_with_vv(fake_tensorflow: Path) -> None:
    done = run_python(IMPORT_AFTER_CONFIG.format(verbose=2), path=fake_tensorflow)
    assert done.returncode == 0, done.stderr
    assert "absl::InitializeLog" in done.stderr and "oneDNN" in done.stderr


LEVELS = """
    import logging, os
    from biomark.cli.logs import configure_logging
    configure_logging({verbose}, False)
    import distributed
    print(*(logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in ("tensorflow", "distributed", "biomark")))
    print(os.environ["DASK_LOGGING__DISTRIBUTED"])
"""  # noqa: E501


@pytest.mark.parametrize(
    ("verbose", "expected"), [(0, "ERROR WARNING INFO\nwarning"), (1, "WARNING INFO INFO\ninfo")]
)
def test_library_levels_survive_their_import(verbose: int, expected: str) -> None:
    """distributed sets its loggers to INFO when imported; the environment variable keeps ours."""
    done = run_python(LEVELS.format(verbose=verbose))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_a_users_dask_setting_is_kept() -> None:
    done = run_python(LEVELS.format(verbose=0), env={"DASK_LOGGING__DISTRIBUTED": "debug"})
    assert done.stdout.strip().splitlines() == ["ERROR DEBUG INFO", "debug"]
