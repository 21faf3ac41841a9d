"""Provenance records (biomark/provenance.py) and progress bars."""

from __future__ import annotations

import hashlib
from pathlib import Path

from biomark.progress import progress
from biomark.provenance import (
    cpu_info,
    describe_cpu,
    environment,
    file_sha256,
    package_versions,
)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path, chunk_size=4096) == hashlib.sha256(data).hexdigest()


def test_environment_records_versions() -> None:
    env = environment()
    assert env["packages"]["numpy"]
    assert "python" in env and "keras_backend" in env
    assert "not-a-real-package-xyz" not in package_versions(["not-a-real-package-xyz"])


def test_cpu_info_reads_model_and_kernel_flags(tmp_path: Path) -> None:
    block = (
        "processor\t: {n}\nmodel name\t: Test CPU 9000\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f amx_tile ht\n\n"
    )
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1))
    assert cpu_info(cpuinfo) == {
        "model": "Test CPU 9000",
        "flags": ["avx2", "fma", "avx512f", "amx_tile"],
    }
    unknown = cpu_info(tmp_path / "missing")
    assert unknown["flags"] is None and isinstance(unknown["model"], str)
    assert set(environment()["cpu"]) == {"model", "flags"}


def test_describe_cpu_is_one_line_with_the_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma\n")
    assert describe_cpu(cpuinfo) == "Test CPU 9000 (avx2, fma)"
    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2\n")
    assert describe_cpu(cpuinfo) == "Old CPU (none of them)"
    assert describe_cpu(tmp_path / "missing").endswith("(flags unknown)")


def test_progress_can_be_forced_off(monkeypatch) -> None:
    monkeypatch.setenv("BIOMARK_PROGRESS", "0")
    bar = progress(range(3), desc="x")
    assert bar.disable
    assert list(bar) == [0, 1, 2]
