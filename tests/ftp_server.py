"""A loopback FTP server: the tests' stand-in for storage at an fsspec URL.

``ftp://`` is a real network file system that fsspec speaks and that shares no
POSIX path with the client, so code that works through it works through any
URL (``s3://``, ``gs://``) in the same way, while the tests need nothing
beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

USER, PASSWORD = "biomark", "secret"


@contextlib.contextmanager
def ftp_server(root: Path, *, idle_timeout: float | None = 300) -> Iterator[str]:
    """Serve ``root`` over FTP on 127.0.0.1; yields ``ftp://USER:PASSWORD@127.0.0.1:PORT``.

    ``idle_timeout`` is pyftpdlib's ``FTPHandler.timeout``: a control
    connection idle that many seconds is closed by the server (300, its
    default, as a real server would; None never).
    """
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(root), perm="elradfmwMT")
    handler = type(
        "Handler",
        (FTPHandler,),
        {"authorizer": authorizer, "banner": "biomark test", "timeout": idle_timeout},
    )
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"ftp://{USER}:{PASSWORD}@127.0.0.1:{server.address[1]}"
    finally:
        server.close_all()
        thread.join(5)
