"""Keep freed memory in the process instead of handing it back to the system after every tensor.

TensorFlow on CPU allocates every intermediate tensor with ``malloc`` and
frees it at once; a MobileNetV2 pass over a batch of 256 images at 96 px
allocates and frees hundreds of megabytes. Once TensorFlow reads a Keras
``PyDataset`` (its generator dataset sets glibc's ``M_TRIM_THRESHOLD`` to
128 kB), glibc gives the freed top of each heap back to the system almost
at once, so the next batch touches fresh pages and pays a page fault for
each.

:func:`keep_freed_memory` raises glibc's ``M_TOP_PAD`` (the memory kept,
and asked for beyond each request, at the top of a heap) with ``mallopt``.
Measured on the 2-core AVX2-only development VM (``benchmarks/allocator.py``,
the report's pass of 2,048 images, medians of 3 alternating runs): wall
8.6 s -> 5.2 s, system time 6.9 s -> 3.0 s, page faults 1.67 M -> 0.77 M,
peak resident memory +159 MB; the demo report 176 s -> 125.5 s. It helps
only when set before TensorFlow first allocates (set afterwards, the same
call changed nothing), so the command line, each job's process, the
benchmarks and the test suite call it first thing. It is a plain glibc
setting: results do not change, and it is a no-op where the C library is
not glibc.

:func:`large_blocks_from_heap` goes further, for short-lived processes that
mostly run forward passes (the report's worker processes): it stops glibc
from giving blocks of 128 kB and more their own ``mmap``
(``M_MMAP_MAX`` = 0). Setting ``M_TOP_PAD`` fixes glibc's mmap threshold
at 128 kB, and a batch's activations are megabytes each, so without it every
activation is a fresh mapping whose pages the kernel zeroes on first touch.
Measured on the 2-core AVX2-only VM (``benchmarks/report.py --run
runs/quick``, three report workers side by side): see
``benchmarks/RESULTS.md``. It is not used for training, which it slowed
(124 vs 149-168 img/s, twenty-sixth session), nor in a long-lived process,
whose heap it would only let grow.

No library does this: each is one ``mallopt`` call through :mod:`ctypes`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = [
    "DEFAULT_TOP_PAD",
    "ENV_VAR",
    "HEAP_ENV_VAR",
    "keep_freed_memory",
    "large_blocks_from_heap",
]

logger = logging.getLogger(__name__)

#: glibc's ``M_TOP_PAD`` parameter number (``malloc.h``).
_M_TOP_PAD = -2
#: Bytes kept at the top of a heap: 256 MiB (64 MiB already gave most of the gain; 16 MiB a third).
DEFAULT_TOP_PAD = 256 * 1024 * 1024
#: Environment variable: bytes to keep instead (0 turns the setting off).
ENV_VAR = "BIOMARK_MALLOC_TOP_PAD"
#: glibc's ``M_MMAP_MAX`` parameter number (``malloc.h``).
_M_MMAP_MAX = -4
#: Environment variable: 0 leaves large blocks to ``mmap`` in the report's workers.
HEAP_ENV_VAR = "BIOMARK_MALLOC_LARGE_FROM_HEAP"


def keep_freed_memory(pad_bytes: int | None = None) -> bool:
    """Ask glibc to keep ``pad_bytes`` of freed memory at the top of its heaps.

    Parameters
    ----------
    pad_bytes : int, optional
        Default: the environment variable ``BIOMARK_MALLOC_TOP_PAD`` if set
        (0 turns it off), else :data:`DEFAULT_TOP_PAD`.

    Returns
    -------
    bool
        True when glibc accepted the setting; False elsewhere (not Linux,
        another C library, turned off, or an unreadable value, which is
        logged).
    """
    if pad_bytes is None:
        raw = os.environ.get(ENV_VAR, "").strip()
        try:
            pad_bytes = int(raw) if raw else DEFAULT_TOP_PAD
        except ValueError:
            logger.warning(
                "%s=%r is not a whole number of bytes; the allocator is left as it is", ENV_VAR, raw
            )
            return False
    if pad_bytes <= 0:
        return False
    return _mallopt(_M_TOP_PAD, min(int(pad_bytes), 2**31 - 1))


def large_blocks_from_heap() -> bool:
    """Ask glibc to serve every block from its heaps, none from a mapping of its own.

    For a short-lived process of forward passes only (see the module's
    docstring); call it before TensorFlow allocates. The environment variable
    ``BIOMARK_MALLOC_LARGE_FROM_HEAP=0`` turns it off (1 or unset: on).

    Returns
    -------
    bool
        True when glibc accepted the setting; False elsewhere (not Linux,
        another C library, turned off, or an unreadable value, which is
        logged).
    """
    raw = os.environ.get(HEAP_ENV_VAR, "").strip()
    if raw not in ("", "0", "1"):
        logger.warning(
            "%s=%r is neither 0 (off) nor 1 (on); the allocator is left as it is", HEAP_ENV_VAR, raw
        )
        return False
    if raw == "0":
        return False
    return _mallopt(_M_MMAP_MAX, 0)


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False where there is none (not Linux, musl, ...)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, value))
