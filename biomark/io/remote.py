"""Folders at an fsspec URL (``s3://``, ``gs://``, ``ftp://``, ...): copy in, copy out, atomically.

biomark's jobs work on local files (Keras saves models to paths, the dataset
cache is a memory map). When the shared folder of a cluster run is a URL
instead of a mounted path, the data moves between the URL and a local copy:
this module does those copies with :mod:`fsspec`, the file-system layer Dask
itself uses, and nothing else (no file format knowledge).

* :class:`RemoteFolder` is one folder at a URL: list, read, and upload files.
* An upload goes to a temporary name next to the target and is renamed into
  place (:meth:`RemoteFolder.put_file`), so a reader sees the old file or the
  whole new one. Object stores (S3, GCS) rename by copy-then-delete, and a
  single object only appears once fully written, so they give the same
  guarantee per file.
* :meth:`RemoteFolder.put_tree` uploads a folder with chosen files (a fold's
  ``done.json``) last, so "that file exists" still means "everything before it
  is complete", as on a local disk.
* :meth:`RemoteFolder.get_tree` downloads what is missing or of another size.
* A dropped connection is re-opened and the operation retried
  (:data:`RETRY_DELAYS`): servers close connections left idle (pyftpdlib after
  300 s, as most FTP servers), and a folder object is typically idle while a
  fold trains. Every step is safe to repeat: uploads go to a fresh temporary
  name (the leftovers of a failed attempt are removed once a retry succeeds),
  folders that already exist are fine (another worker may create the same one
  at the same moment: FTP then answers ``550 File exists``), and "does it
  exist" is asked so that a broken connection is an error, never a "no".

Examples
--------
>>> is_url("s3://bucket/runs"), is_url("/mnt/shared/runs")
(True, False)
"""

from __future__ import annotations

import contextlib
import errno
import ftplib
import functools
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from biomark.exceptions import ConfigError, RemoteError

__all__ = [
    "RETRY_DELAYS",
    "RemoteFolder",
    "is_transient",
    "is_url",
    "local_cache_dir",
    "open_url",
    "redact",
    "url_key",
]

logger = logging.getLogger(__name__)

#: Seconds to wait before each retry of an operation whose connection failed (then it is an error).
#: The first retry is at once: a connection the server dropped while idle only needs re-opening.
RETRY_DELAYS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EPIPE,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EAGAIN,
    }
)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_CREDENTIALS_RE = re.compile(r"(://)([^/@:]+)(:[^/@]*)?@")


def is_url(location: str | os.PathLike[str] | None) -> bool:
    """Whether ``location`` is an fsspec URL (``protocol://...``) rather than a path."""
    return location is not None and bool(_URL_RE.match(os.fspath(location)))


def local_cache_dir() -> Path:
    """Where local copies of URL folders live: ``$BIOMARK_CACHE_DIR`` or ``~/.cache/biomark``."""
    return Path(
        os.environ.get("BIOMARK_CACHE_DIR") or Path.home() / ".cache" / "biomark"
    ).expanduser()


def url_key(url: str) -> str:
    """A short, stable folder name for ``url`` (credentials left out)."""
    import hashlib

    plain = _CREDENTIALS_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}@", url.rstrip("/"))
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()[:16]


def _is_partial(name: str) -> bool:
    """Temporary names of atomic writes (ours and :mod:`biomark.io.atomic`'s)."""
    base = posixpath.basename(name)
    return ".tmp-" in base or (base.startswith(".") and base.endswith((".tmp", ".part")))


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and messages).

    Examples
    --------
    >>> redact("ftp://user:secret@host:21/runs")
    'ftp://user:***@host:21/runs'
    """
    return _CREDENTIALS_RE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{':***' if m.group(3) else ''}@", url
    )


def is_transient(err: BaseException) -> bool:
    """Whether a storage error is about the connection (worth re-opening it and retrying).

    Broken, reset, refused or timed-out connections, end of stream, and FTP's
    4xx replies ("try again later"). Permission, quota and "no such file"
    errors are not.
    """
    if isinstance(err, (ConnectionError, EOFError, TimeoutError, ftplib.error_temp)):
        return True
    return isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS


def open_url(url: str, what: str = "folder") -> tuple[Any, str]:
    """The fsspec file system and path of ``url``, or a clear error.

    Parameters
    ----------
    url : str
    what : str
        Its role, for messages (``"output folder"``).

    Returns
    -------
    (fsspec.AbstractFileSystem, str)

    Raises
    ------
    ConfigError
        fsspec is missing, the protocol is unknown, or its implementation
        package (``s3fs``, ``gcsfs``, ...) is not installed.
    """
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec comes with dask
        raise ConfigError(
            f"{what} {redact(url)}: URLs need fsspec; install `biomark[distributed]`"
        ) from err
    protocol = url.split("://", 1)[0].split("::")[-1]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError as err:
        raise ConfigError(
            f"{what} {redact(url)}: fsspec knows no protocol {protocol!r}; use a local path or a "
            "URL such as s3://, gs://, az://, ftp://, sftp://"
        ) from err
    except ImportError as err:
        raise ConfigError(
            f"{what} {redact(url)}: the {protocol}:// file system needs a package that is not "
            f"installed ({err}); install it (e.g. `pip install s3fs` for s3://) on this machine "
            "and on every worker"
        ) from err
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (OSError, ValueError, TypeError, EOFError, ftplib.Error) as err:
        raise ConfigError(
            f"{what} {redact(url)}: cannot open it ({type(err).__name__}: {err})"
        ) from err
    return fs, path.rstrip("/") or "/"


def _storage_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Retry ``method`` on a fresh connection when the connection failed; name any final failure.

    A connection-level error (:func:`is_transient`) re-opens the file system
    and repeats the whole operation after each of :attr:`RemoteFolder.retry_delays`.
    :class:`FileNotFoundError` passes through (callers ask about missing files
    on purpose). Anything else a file-system library raises (socket errors,
    ``ftplib`` replies, botocore's client errors) is not the user's to decode:
    it becomes one :class:`RemoteError` with the folder, the operation and
    what to do.
    """

    @functools.wraps(method)
    def wrapper(self: RemoteFolder, *args: Any, **kwargs: Any) -> Any:
        target = args[0] if args and isinstance(args[0], str) else ""
        what = f"{method.__name__.strip('_').removesuffix('_once').replace('_', ' ')} {target!r}"
        delays = list(self.retry_delays)
        while True:
            try:
                if self._broken or not self._alive():
                    self._reconnect()
                return method(self, *args, **kwargs)
            except (FileNotFoundError, RemoteError):
                raise
            except Exception as err:  # noqa: BLE001 - the storage boundary; the cause is chained
                if is_transient(err) and delays:
                    delay = delays.pop(0)
                    logger.info(
                        "%s %s: %s failed (%s: %s); re-opening the connection and retrying%s",
                        self.what,
                        redact(self.url),
                        what,
                        type(err).__name__,
                        err,
                        f" in {delay:g} s" if delay else "",
                    )
                    self._broken = True
                    time.sleep(delay)
                    continue
                retried = is_transient(err) and self.retry_delays
                raise RemoteError(
                    f"{self.what} {redact(self.url)}: {what} failed ({type(err).__name__}: {err})"
                    + (
                        f" after {len(self.retry_delays)} retries on a new connection"
                        if retried
                        else ""
                    )
                    + "; check the connection, the credentials and the space there. Finished work "
                    "is kept; re-run to resume"
                ) from err

    return wrapper


class RemoteFolder:
    """One folder at an fsspec URL.

    Parameters
    ----------
    url : str
        ``protocol://.../folder``; credentials and options as fsspec takes them
        (in the URL, environment variables, or the protocol's config files).
    what : str
        Its role, for messages.

    Raises
    ------
    ConfigError
        See :func:`open_url`.
    """

    #: Waits before the retries of an operation whose connection failed (:data:`RETRY_DELAYS`).
    retry_delays: tuple[float, ...] = RETRY_DELAYS

    def __init__(self, url: str, what: str = "folder") -> None:
        self.url = url.rstrip("/")
        self.what = what
        self.fs, self.root = open_url(self.url, what)
        self._broken = False

    def _reconnect(self) -> None:
        """Replace the file-system object (and its connection) with a new one.

        Errors are raised as the library gives them (a refused connection is
        transient: :func:`_storage_errors` retries it).
        """
        import fsspec

        with contextlib.suppress(Exception):  # the old connection is gone; closing it may fail
            getattr(getattr(self.fs, "ftp", None), "close", lambda: None)()
        self.fs, path = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)
        self.root = path.rstrip("/") or "/"
        self._broken = False

    def _alive(self) -> bool:
        """False when an FTP control connection is known dead (one ``NOOP`` round trip).

        fsspec's FTP file system reads the server's "421 timed out" reply to
        a listing as "no such folder", so the connection is checked before it
        is trusted. Other protocols' clients (HTTP sessions of s3fs, gcsfs)
        re-open their own connections.
        """
        ftp = getattr(self.fs, "ftp", None)
        if not isinstance(ftp, ftplib.FTP):
            return True
        try:
            ftp.voidcmd("NOOP")
        except ftplib.all_errors:
            return False
        return True

    def _info_type(self, path: str) -> str | None:
        """``"file"``, ``"directory"`` or None when ``path`` does not exist.

        fsspec's own ``exists`` and ``isdir`` answer False on *any* error, so
        a broken connection would read as "missing"; here it raises.
        """
        try:
            return str(self.fs.info(path).get("type", "file"))
        except FileNotFoundError:
            return None

    def _makedirs(self, path: str) -> None:
        """Create folder ``path`` and its parents; fine if it exists, or appears meanwhile."""
        for attempt in range(3):
            try:
                self.fs.makedirs(path, exist_ok=True)
                return
            except Exception as err:
                if is_transient(err):
                    raise
                # Another writer created it (or a parent) between the check and the create:
                # FTP answers "550 File exists". Look again, without cached listings.
                self._forget_listings()
                if self._info_type(path) == "directory":
                    return
                if attempt == 2:
                    raise

    def __repr__(self) -> str:
        return f"RemoteFolder({redact(self.url)!r})"

    def child(self, *parts: str) -> RemoteFolder:
        """The sub-folder ``parts`` (not created)."""
        return RemoteFolder(posixpath.join(self.url, *parts), self.what)

    def path(self, relative: str = "") -> str:
        """The file system path of ``relative`` (POSIX separators) inside the folder."""
        return posixpath.join(self.root, relative) if relative else self.root

    @_storage_errors
    def exists(self, relative: str = "") -> bool:
        """Whether ``relative`` exists (asked of the storage, not a cached listing)."""
        self._forget_listings()
        return self._info_type(self.path(relative)) is not None

    def _forget_listings(self) -> None:
        # fsspec caches directory listings per process; other machines write
        # into the same folders (workers finish folds), so a cached listing
        # would hide their files. Every question goes to the storage.
        self.fs.invalidate_cache()

    @_storage_errors
    def read_bytes(self, relative: str) -> bytes:
        """The content of ``relative``."""
        return bytes(self.fs.cat_file(self.path(relative)))

    def read_text(self, relative: str) -> str:
        """The content of ``relative`` as UTF-8."""
        return self.read_bytes(relative).decode("utf-8")

    @_storage_errors
    def files(self, relative: str = "") -> dict[str, int]:
        """Every file under ``relative`` (recursively): relative POSIX path to size."""
        base = self.path(relative)
        self._forget_listings()
        if self._info_type(base) is None:
            return {}
        found = self.fs.find(base, detail=True)
        strip = self.fs._strip_protocol(base).rstrip("/") + "/"
        out = {}
        for name, info in found.items():
            name = self.fs._strip_protocol(name)
            if info.get("type", "file") != "file" or not name.startswith(strip):
                continue
            out[
                posixpath.join(relative, name[len(strip) :]) if relative else name[len(strip) :]
            ] = int(info.get("size") or 0)
        return out

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` to ``relative`` atomically (temporary name, then rename)."""

        def write(tmp: str) -> None:
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)

        self._upload(relative, write)

    def write_text(self, relative: str, text: str) -> None:
        """Write UTF-8 ``text`` to ``relative`` atomically."""
        self.write_bytes(relative, text.encode("utf-8"))

    def put_file(self, local: str | os.PathLike[str], relative: str) -> None:
        """Upload a local file to ``relative`` atomically (temporary name, then rename)."""
        self._upload(relative, lambda tmp: self.fs.put_file(os.fspath(local), tmp))

    def _upload(self, relative: str, write: Callable[[str], None]) -> None:
        """``write(tmp)`` a temporary file next to ``relative``, then move it into place.

        Retried whole on a new connection (:func:`_storage_errors`); the
        temporary files of failed attempts are removed once one succeeds.
        """
        leftovers: list[str] = []
        self._upload_once(relative, write, leftovers)
        for tmp in leftovers:
            with contextlib.suppress(Exception):  # best effort: partial names are never read
                if self._info_type(tmp) is not None:
                    self.fs.rm_file(tmp)

    @_storage_errors
    def _upload_once(
        self, relative: str, write: Callable[[str], None], leftovers: list[str]
    ) -> None:
        target = self.path(relative)
        self._makedirs(posixpath.dirname(target))
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
        leftovers.append(tmp)
        try:
            write(tmp)
            self._replace(tmp, target)
            leftovers.remove(tmp)
        except BaseException:
            with contextlib.suppress(Exception):  # the connection may be what failed
                self.fs.rm_file(tmp)
                leftovers.remove(tmp)
            raise

    def _replace(self, tmp: str, target: str) -> None:
        # Not every file system renames over an existing file (FTP, Windows
        # shares refuse), so remove the old one first; a reader in between
        # sees the file missing, never half-written.
        if self._info_type(target) is not None:
            try:
                self.fs.rm_file(target)
            except Exception as err:
                if is_transient(err) or self._info_type(target) is not None:
                    raise
        self.fs.mv(tmp, target)

    def put_tree(
        self,
        local: str | os.PathLike[str],
        relative: str = "",
        *,
        last: Iterable[str] = (),
        skip: Callable[[str], bool] | None = None,
        only_changed: bool = False,
    ) -> int:
        """Upload every file under a local folder, the ``last`` names after all others.

        Parameters
        ----------
        local : path
            Local folder.
        relative : str
            Destination inside this folder.
        last : iterable of str
            File names (relative to ``local``) uploaded after all the others,
            e.g. a completion marker.
        skip : callable, optional
            ``skip(relative_name)`` true: not uploaded.
        only_changed : bool, default False
            Skip files already there with the same size (for content-addressed
            files such as cache entries, whose name fixes the content).

        Returns
        -------
        int
            Files uploaded.
        """
        local = Path(local)
        final = set(last)
        names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        names = [n for n in names if not (skip and skip(n)) and not _is_partial(n)]
        if only_changed:
            there = self.files(relative)
            names = [
                n
                for n in names
                if n in final
                or there.get(posixpath.join(relative, n) if relative else n)
                != (local / n).stat().st_size
            ]
        ordered = [n for n in names if n not in final] + [n for n in names if n in final]
        for name in ordered:
            self.put_file(local / name, posixpath.join(relative, name) if relative else name)
        return len(ordered)

    def get_tree(
        self,
        relative: str,
        local: str | os.PathLike[str],
        *,
        skip: Callable[[str], bool] | None = None,
    ) -> int:
        """Download the files under ``relative`` that are missing locally or of another size.

        Each file is written to a temporary local name and renamed, so a local
        copy is never half a file.

        Parameters
        ----------
        relative : str
            Folder inside this folder (``""``: all of it).
        local : path
            Local destination folder (created).
        skip : callable, optional
            ``skip(relative_name)`` true: not downloaded (names relative to ``relative``).

        Returns
        -------
        int
            Files downloaded.
        """
        local = Path(local)
        count = 0
        prefix = f"{relative.rstrip('/')}/" if relative else ""
        for name, size in sorted(self.files(relative).items()):
            inner = name[len(prefix) :]
            if (skip and skip(inner)) or _is_partial(inner):
                continue
            target = local / inner
            if target.is_file() and target.stat().st_size == size:
                continue
            self.get_file(name, target)
            count += 1
        return count

    @_storage_errors
    def get_file(self, relative: str, local: str | os.PathLike[str]) -> Path:
        """Download ``relative`` to the local path ``local`` atomically."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.fs.get_file(self.path(relative), os.fspath(tmp))
            os.replace(tmp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return local

    @_storage_errors
    def remove(self, relative: str) -> None:
        """Delete ``relative`` (a file or a whole folder), if present."""
        target = self.path(relative)
        self._forget_listings()
        kind = self._info_type(target)
        if kind is None:
            return
        if kind == "directory":
            self.fs.rm(target, recursive=True)
        else:
            self.fs.rm_file(target)
