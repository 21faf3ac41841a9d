"""TensorFlow's oneDNN kernels for the report's passes: on in the block and its workers, unless the
user says no or TensorFlow already runs here with other kernels; the environment restored after."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from biomark import onednn
from biomark.features.worker_pool import worker_pool
from biomark.onednn import ONEDNN_VARIABLE, onednn_kernels, onednn_setting


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user setting, and no TensorFlow running in this process."""
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    monkeypatch.setattr(onednn, "running_kernels", lambda: "")


@pytest.mark.usefixtures("no_setting")
def test_unset_is_on_in_the_block_and_unset_after() -> None:
    assert onednn_setting() == ""
    with onednn_kernels() as value:
        assert value == "1" and os.environ[ONEDNN_VARIABLE] == "1"
    assert ONEDNN_VARIABLE not in os.environ


@pytest.mark.usefixtures("no_setting")
def test_unset_again_after_an_error() -> None:
    with pytest.raises(RuntimeError), onednn_kernels():
        raise RuntimeError("a failed analysis")
    assert ONEDNN_VARIABLE not in os.environ


@pytest.mark.usefixtures("no_setting")
def test_a_tensorflow_running_here_passes_its_kernels_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onednn, "running_kernels", lambda: "0")
    with onednn_kernels() as value:
        assert value == "0" and os.environ[ONEDNN_VARIABLE] == "0"
    assert ONEDNN_VARIABLE not in os.environ


@pytest.mark.parametrize("value", ["0", "1"])
def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ONEDNN_VARIABLE, value)
    monkeypatch.setattr(onednn, "running_kernels", lambda: "0" if value == "1" else "1")
    with onednn_kernels() as in_force:
        assert in_force == value and os.environ[ONEDNN_VARIABLE] == value
    assert os.environ[ONEDNN_VARIABLE] == value


def _tensorflow_kernels() -> tuple[str, bool]:
    """In a worker: the variable it inherited, and whether TensorFlow runs oneDNN."""
    from tensorflow.python.util import _pywrap_util_port

    return os.environ.get(ONEDNN_VARIABLE, ""), bool(_pywrap_util_port.IsMklEnabled())


@pytest.mark.usefixtures("no_setting")
def test_a_worker_started_in_the_block_runs_tensorflow_with_onednn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with onednn_kernels(), worker_pool(2) as pool:
        assert pool.submit(_tensorflow_kernels).result() == ("1", True)


def test_the_kernels_of_a_tensorflow_started_without_onednn_are_read() -> None:
    """TensorFlow started with its Eigen kernels, the variable dropped: the block keeps them."""
    pytest.importorskip("tensorflow")
    code = (
        "import os\n"
        "import tensorflow\n"
        "from biomark.onednn import ONEDNN_VARIABLE, onednn_kernels, running_kernels\n"
        "del os.environ[ONEDNN_VARIABLE]\n"
        "with onednn_kernels() as value:\n"
        "    print(running_kernels(), value, os.environ[ONEDNN_VARIABLE])\n"
    )
    env = {**os.environ, ONEDNN_VARIABLE: "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "0"]
