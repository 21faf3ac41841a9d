"""The allocator setting the command and job processes make before TensorFlow allocates."""

from __future__ import annotations

import logging
import sys

import pytest

from biomark.allocator import ENV_VAR, keep_freed_memory

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


@glibc_only
def test_glibc_accepts_the_top_pad(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert keep_freed_memory() is True
    assert keep_freed_memory(64 * 1024 * 1024) is True


def test_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "0")
    assert keep_freed_memory() is False
    assert keep_freed_memory(0) is False


def test_an_unreadable_setting_is_named_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_VAR, "lots")
    with caplog.at_level(logging.WARNING, logger="biomark.allocator"):
        assert keep_freed_memory() is False
    assert f"{ENV_VAR}='lots' is not a whole number of bytes" in caplog.text
