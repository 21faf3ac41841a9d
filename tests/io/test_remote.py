"""biomark.io.remote: folders at an fsspec URL, exercised over a loopback FTP server."""

from __future__ import annotations

import pytest

from biomark.exceptions import ConfigError
from biomark.io.remote import RemoteFolder, is_url, redact, url_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/runs", True),
        ("ftp://u:p@host:21/x", True),
        ("simplecache::s3://b/x", True),
        ("file:///tmp/x", True),
        ("/mnt/shared/runs", False),
        ("runs", False),
        ("C:/data", False),
    ],
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
    (local / "scratch" / "fold_00" / ".metrics.json.abc.tmp").write_text(
        "partial"
    )  # an atomic write's temp
    order = []
    original = folder.put_file
    folder.put_file = lambda src, rel: (order.append(rel), original(src, rel))[1]  # type: ignore[method-assign]
    assert folder.put_tree(local, last=["scratch/fold_00/done.json"]) == 3
    assert order[-1] == "scratch/fold_00/done.json", "the completion marker goes last"
    assert folder.files() == {
        "run.json": 8,
        "scratch/fold_00/features.parquet": 1000,
        "scratch/fold_00/done.json": 2,
    }
    # What the URL holds is the server's folder: really written there.
    assert (served / "runs" / "demo" / "run.json").read_text() == '{"a": 1}'
    assert not [p for p in (served / "runs").rglob("*") if ".tmp-" in p.name], (
        "no temporary names left"
    )

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


def test_storage_failure_is_named_not_raised_raw(tmp_path, monkeypatch) -> None:
    """The server goes away mid-run: after the retries, a RemoteError naming the folder (password
    hidden)."""
    from biomark.exceptions import RemoteError

    from ftp_server import ftp_server

    monkeypatch.setattr(RemoteFolder, "retry_delays", (0.0, 0.0))
    with ftp_server(tmp_path) as base:
        folder = RemoteFolder(f"{base}/runs", "output folder")
        folder.write_text("run.json", "{}")
    with pytest.raises(
        RemoteError,
        match=r"output folder ftp://biomark:\*\*\*@127\.0\.0\.1:\d+/runs: .* failed "
        r".*after 2 retries on a new connection.*re-run to resume",
    ):
        folder.write_text("run.json", "{}")


# --------------------------------------------------------------------------- dropped connections


def wait_for_server_to_hang_up(folder: RemoteFolder, limit: float = 30.0) -> None:
    """Block until the server has closed the folder's idle FTP control connection (its 421 reply is
    waiting)."""
    import select

    readable, _, _ = select.select([folder.fs.ftp.sock], [], [], limit)
    assert readable, f"the server did not drop the idle connection within {limit} s"


def test_a_connection_the_server_dropped_while_idle_is_reopened(tmp_path) -> None:
    """pyftpdlib (like most FTP servers) closes a control connection idle for 300 s; a fold trains
    longer.

    Before: the next upload failed with BrokenPipeError, and exists()/files() answered "missing"
    (fsspec's exists swallows every error), so a finished fold looked unfinished.
    """
    from ftp_server import ftp_server

    with ftp_server(tmp_path, idle_timeout=0.5) as base:
        folder = RemoteFolder(f"{base}/runs", "run folder")
        folder.write_text("fold_00/done.json", "{}")
        wait_for_server_to_hang_up(folder)
        assert folder.exists("fold_00/done.json"), "a broken connection is not a missing file"
        wait_for_server_to_hang_up(folder)
        assert folder.files() == {"fold_00/done.json": 2}
        wait_for_server_to_hang_up(folder)
        folder.write_text("fold_01/done.json", "{}")
        wait_for_server_to_hang_up(folder)
        assert folder.read_text("fold_01/done.json") == "{}"
        assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == [
            "done.json",
            "done.json",
            "fold_00",
            "fold_01",
        ]


def fold_folder(local) -> None:
    (local / "backup").mkdir(parents=True)
    for name in ("model.keras", "history.csv", "features.parquet", "metrics.json"):
        (local / name).write_bytes(name.encode() * 200)
    (local / "done.json").write_text("{}")


def cut_after(folder: RemoteFolder, uploads: int) -> None:
    """Make ``folder``'s connection break (as a server hanging up would) during its
    ``uploads + 1``-th upload."""
    import socket

    real, count = folder.fs.put_file, [0]

    def put_file(local, remote, **kwargs):
        count[0] += 1
        if count[0] == uploads + 1:
            real(local, remote, **kwargs)  # the temporary file is written...
            folder.fs.ftp.sock.shutdown(
                socket.SHUT_RDWR
            )  # ...and the connection dies before the rename
            raise BrokenPipeError(32, "Broken pipe")
        return real(local, remote, **kwargs)

    folder.fs.put_file = put_file


def test_retry_after_a_half_finished_upload(ftp_storage, tmp_path, monkeypatch) -> None:
    """A job's upload dies half-way; its retry (a new attempt, as Dask makes) must succeed and leave
    no debris."""
    from biomark.exceptions import RemoteError

    base, served = ftp_storage
    local = tmp_path / "fold"
    fold_folder(local)
    names = {
        f"scratch/fold_00/{n}"
        for n in ("model.keras", "history.csv", "features.parquet", "metrics.json", "done.json")
    }

    first = RemoteFolder(f"{base}/runs/half", "run folder")
    monkeypatch.setattr(
        first, "retry_delays", ()
    )  # this attempt gives up at the first broken connection
    cut_after(first, 2)
    with pytest.raises(RemoteError, match="BrokenPipeError"):
        first.put_tree(local, "scratch/fold_00", last=["done.json"])
    served_fold = served / "runs" / "half" / "scratch" / "fold_00"
    assert len(list(served_fold.iterdir())) == 3 and not (served_fold / "done.json").exists(), (
        "half uploaded"
    )

    retry = RemoteFolder(
        f"{base}/runs/half", "run folder"
    )  # what remote_job does on its next attempt
    retry.remove("scratch/fold_00")
    assert retry.put_tree(local, "scratch/fold_00", last=["done.json"]) == 5
    assert set(retry.files()) == names and not [
        p for p in served_fold.iterdir() if ".tmp-" in p.name
    ]

    # The same folder object retries by itself on a new connection, and removes its attempt's
    # temporary file.
    again = RemoteFolder(f"{base}/runs/again", "run folder")
    cut_after(again, 1)
    assert again.put_tree(local, "scratch/fold_00", last=["done.json"]) == 5
    assert set(again.files()) == names
    assert not [p for p in (served / "runs" / "again").rglob("*") if ".tmp-" in p.name]


def test_workers_creating_the_same_folder_at_once(ftp_storage) -> None:
    """Two workers starting jobs at the same moment: FTP's "550 File exists" for one of them."""
    import threading

    base, served = ftp_storage
    errors = []

    def attempt(k: int) -> None:
        try:
            RemoteFolder(f"{base}/runs/race", "run folder").write_text(
                f".cluster/attempts/job{k}.json", "{}"
            )
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list((served / "runs" / "race" / ".cluster" / "attempts").iterdir())) == 6
