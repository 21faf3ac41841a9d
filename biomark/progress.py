"""Progress bars for long work, on standard error.

Library code wraps long loops in :func:`progress`; whether bars show is decided
by the caller: ``enabled=None`` (default) shows them only when standard error is
a terminal, and the environment variable ``BIOMARK_PROGRESS=0``/``1`` forces it
off/on (the CLI's ``--quiet`` sets it to 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def _disabled(enabled: bool | None) -> bool | None:
    env = os.environ.get("BIOMARK_PROGRESS")
    if enabled is not None:
        return not enabled
    if env is not None:
        return env.strip() in ("0", "false", "no", "")
    return None  # tqdm: disable when not a terminal


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool | None = None,
    **kwargs: Any,
):
    """Wrap ``iterable`` in a tqdm progress bar (or create a manual bar).

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; omit for a manual bar updated with ``.update(n)``.
    total : int, optional
        Number of items, when ``iterable`` has no ``len``.
    desc : str
        Label shown left of the bar (e.g. ``"scratch fold 3"``).
    unit : str
        Unit name; tqdm shows the rate in units per second.
    enabled : bool or None
        Force the bar on or off; None decides from the terminal/env.

    Returns
    -------
    tqdm.tqdm
    """
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=_disabled(enabled),
        dynamic_ncols=True,
        **kwargs,
    )
