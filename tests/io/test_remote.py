"""biomark.io.remote: folders at an fsspec URL, exercised over a loopback FTP server."""

from __future__ import annotations

import pytest

from biomark.exceptions import ConfigError
from biomark.io.remote import RemoteFolder, is_url, redact, url_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [("s3://bucket/runs", True), ("ftp://u:p@host:21/x", True), ("simplecache::s3://b/x", True),
     ("file:///tmp/x", True), ("/mnt/shared/runs", False), ("runs", False), ("C:/data", False)],
)
def test_is_url(text: str, expected: bool) -> None:
    assert is_url(text) is expected


def test_redact_and_key_leave_out_passwords() -> None:
    assert redact("ftp://user:secret@host:21/runs") == "ftp://user:***@host:21/runs"
    assert url_key("ftp://user:secret@host/runs") == url_key("ftp://user:other@host/runs/")
    assert url_key("ftp://user@host/runs") != url_key("ftp://user@host/runs2")


def test_unknown_protocol_and_missing_package_are_clear() -> None:
    with pytest.raises(ConfigError, match="output folder nosuch://x.*knows no protocol 'nosuch'"):
        RemoteFolder("nosuch://x/runs", "output folder")


def test_round_trip_through_ftp(ftp_storage, tmp_path) -> None:
    base, served = ftp_storage
    folder = RemoteFolder(f"{base}/runs/demo", "output folder")
    assert not folder.exists() and folder.files() == {}

    local = tmp_path / "local"
    (local / "scratch" / "fold_00").mkdir(parents=True)
    (local / "run.json").write_text('{"a": 1}')
    (local / "scratch" / "fold_00" / "features.parquet").write_bytes(b"x" * 1000)
    (local / "scratch" / "fold_00" / "done.json").write_text("{}")
    (local / "scratch" / "fold_00" / ".metrics.json.abc.tmp").write_text("partial")  # an atomic write's temp
    order = []
    original = folder.put_file
    folder.put_file = lambda src, rel: (order.append(rel), original(src, rel))[1]  # type: ignore[method-assign]
    assert folder.put_tree(local, last=["scratch/fold_00/done.json"]) == 3
    assert order[-1] == "scratch/fold_00/done.json", "the completion marker goes last"
    assert folder.files() == {"run.json": 8, "scratch/fold_00/features.parquet": 1000, "scratch/fold_00/done.json": 2}
    # What the URL holds is the server's folder: really written there.
    assert (served / "runs" / "demo" / "run.json").read_text() == '{"a": 1}'
    assert not [p for p in (served / "runs").rglob("*") if ".tmp-" in p.name], "no temporary names left"

    # Atomic overwrite, text round trip, download of what is missing only.
    folder.write_text("run.json", '{"a": 2}')
    assert folder.read_text("run.json") == '{"a": 2}'
    copy = tmp_path / "copy"
    assert folder.get_tree("", copy) == 3
    assert (copy / "scratch" / "fold_00" / "features.parquet").read_bytes() == b"x" * 1000
    assert folder.get_tree("", copy) == 0, "files of the right size are not downloaded again"
    assert folder.get_tree("scratch", tmp_path / "sub") == 2
    assert (tmp_path / "sub" / "fold_00" / "done.json").is_file()
    assert folder.put_tree(local, only_changed=True) == 0, "unchanged files are not uploaded again"

    folder.remove("scratch/fold_00/done.json")
    assert "scratch/fold_00/done.json" not in folder.files()
    folder.remove("scratch/fold_00")
    assert sorted(folder.files()) == ["run.json"]
    with pytest.raises(FileNotFoundError):
        folder.read_text("missing.json")


def test_storage_failure_is_named_not_raised_raw(tmp_path) -> None:
    """The server goes away mid-run: a RemoteError naming the folder (password hidden) and what to do."""
    from ftp_server import ftp_server

    from biomark.exceptions import RemoteError

    with ftp_server(tmp_path) as base:
        folder = RemoteFolder(f"{base}/runs", "output folder")
        folder.write_text("run.json", "{}")
    with pytest.raises(RemoteError, match=r"output folder ftp://biomark:\*\*\*@127\.0\.0\.1:\d+/runs: .* failed .*re-run to resume"):
        folder.write_text("run.json", "{}")
