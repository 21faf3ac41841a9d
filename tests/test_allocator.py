"""The allocator settings the command, job and report worker processes make before TensorFlow
allocates."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from biomark.allocator import ENV_VAR, HEAP_ENV_VAR, keep_freed_memory, large_blocks_from_heap

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


@glibc_only
def test_glibc_serves_large_blocks_from_its_heap(tmp_path: Path) -> None:
    # In a process of its own: the setting lasts for the process, and a test worker lives on.
    # A 128 MiB block gets a mapping of its own before the setting, and lies in the heap (the
    # [heap] lines of /proc/self/maps) after it.
    script = (
        "import os\n"
        f"os.environ.pop({HEAP_ENV_VAR!r}, None)\n"
        "import numpy as np\n"
        "from biomark.allocator import large_blocks_from_heap\n"
        "def in_heap(block):\n"
        "    with open('/proc/self/maps') as maps:\n"
        "        spans = [line.split()[0].split('-') for line in maps if '[heap]' in line]\n"
        "    at = block.ctypes.data\n"
        "    return any(int(lo, 16) <= at < int(hi, 16) for lo, hi in spans)\n"
        "before = np.ones(16 * 1024 * 1024)\n"
        "accepted = large_blocks_from_heap()\n"
        "after = np.ones(16 * 1024 * 1024)\n"
        "print(in_heap(before), accepted, in_heap(after))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert done.stdout.split() == ["False", "True", "True"]


def test_zero_leaves_large_blocks_to_mmap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEAP_ENV_VAR, "0")
    assert large_blocks_from_heap() is False


def test_an_unreadable_heap_setting_is_named_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(HEAP_ENV_VAR, "false")
    with caplog.at_level(logging.WARNING, logger="biomark.allocator"):
        assert large_blocks_from_heap() is False
    assert f"{HEAP_ENV_VAR}='false' is neither 0 (off) nor 1 (on)" in caplog.text
