"""TensorFlow's oneDNN kernels for the report's passes: on in the block and its workers, unless the
user says no; the environment restored after."""

from __future__ import annotations

import os

import pytest

from biomark.features.worker_pool import worker_pool
from biomark.onednn import ONEDNN_VARIABLE, onednn_kernels, onednn_setting


def test_unset_is_on_in_the_block_and_unset_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    assert onednn_setting() == ""
    with onednn_kernels() as value:
        assert value == "1" and os.environ[ONEDNN_VARIABLE] == "1"
    assert ONEDNN_VARIABLE not in os.environ


def test_unset_again_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    with pytest.raises(RuntimeError), onednn_kernels():
        raise RuntimeError("a failed analysis")
    assert ONEDNN_VARIABLE not in os.environ


@pytest.mark.parametrize("value", ["0", "1"])
def test_a_value_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ONEDNN_VARIABLE, value)
    with onednn_kernels() as in_force:
        assert in_force == value and os.environ[ONEDNN_VARIABLE] == value
    assert os.environ[ONEDNN_VARIABLE] == value


def _tensorflow_kernels() -> tuple[str, bool]:
    """In a worker: the variable it inherited, and whether TensorFlow runs oneDNN."""
    from tensorflow.python.util import _pywrap_util_port

    return os.environ.get(ONEDNN_VARIABLE, ""), bool(_pywrap_util_port.IsMklEnabled())


def test_a_worker_started_in_the_block_runs_tensorflow_with_onednn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tensorflow")
    monkeypatch.delenv(ONEDNN_VARIABLE, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with onednn_kernels(), worker_pool(2) as pool:
        assert pool.submit(_tensorflow_kernels).result() == ("1", True)
