"""TensorFlow's oneDNN kernels: on when biomark is imported first, unless the user says no."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from biomark.onednn import ONEDNN_VARIABLE, default_to_onednn, onednn_setting
from biomark.provenance import environment


def test_unset_becomes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    assert default_to_onednn() is True
    assert os.environ[ONEDNN_VARIABLE] == "1"
    assert onednn_setting() == "1"
    assert environment()["tf_enable_onednn_opts"] == "1"


@pytest.mark.parametrize("value", ["0", "1"])
def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ONEDNN_VARIABLE, value)
    assert default_to_onednn() is False
    assert os.environ[ONEDNN_VARIABLE] == value
    assert environment()["tf_enable_onednn_opts"] == value


def test_tensorflow_imported_after_biomark_runs_its_onednn_kernels() -> None:
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = (
        "import biomark\n"
        "from tensorflow.python.util import _pywrap_util_port\n"
        "print(_pywrap_util_port.IsMklEnabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"
