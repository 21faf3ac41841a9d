"""What the command line prints while it works: biomark's log, and quiet third parties.

At the default verbosity a user sees biomark's own INFO lines and every
warning about *their* run; the start-up banners and internal chatter of the
libraries underneath are hidden. ``-v`` lets the libraries' warnings and
INFO lines through, ``-vv`` is debug output from everything, ``-q`` leaves
only warnings (and no progress bars).

What is quietened, and how:

TensorFlow's native start-up banners
    Importing TensorFlow 2.16+ writes ``WARNING: All log messages before
    absl::InitializeLog() ...`` and ``oneDNN custom operations are on ...``
    from C++ straight to file descriptor 2; ``TF_CPP_MIN_LOG_LEVEL`` no longer
    reaches them (tensorflow/tensorflow#100442). There is no setting, so
    :class:`_QuietTensorFlowImport` runs that one import with descriptor 2
    sent to a temporary file and writes back every line that is not a known
    banner (a real error during the import still shows).
TensorFlow's and absl's Python loggers
    ``tf.function`` retracing notices are WARNINGs of the ``tensorflow``
    logger: raised to ERROR unless ``-v``.
Dask
    ``distributed`` sets its own loggers to INFO when it is imported (about
    30 lines per local cluster, in this process and in every worker). The
    ``DASK_LOGGING__DISTRIBUTED`` environment variable is Dask's documented
    way to change that level before the import, and worker processes inherit
    it: WARNING unless ``-v``. A value the user set is kept.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = ["configure_logging", "TF_BANNERS"]

#: Lines TensorFlow (and the XLA/CUDA stubs it loads) print at import that say nothing about the
#: run.
TF_BANNERS: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "TF-TRT Warning",
)
_BANNER_RE = re.compile("|".join(re.escape(b) for b in TF_BANNERS))
# Python loggers of libraries: level at the default verbosity, and with -v.
_THIRD_PARTY: dict[str, tuple[int, int]] = {
    "tensorflow": (logging.ERROR, logging.WARNING),
    "absl": (logging.ERROR, logging.WARNING),
    "jax": (logging.ERROR, logging.WARNING),
    "distributed": (logging.WARNING, logging.INFO),
    "numba": (logging.WARNING, logging.INFO),
    "PIL": (logging.WARNING, logging.INFO),
    "matplotlib": (logging.WARNING, logging.INFO),
    "radiomics": (logging.WARNING, logging.INFO),
    "h5py": (logging.WARNING, logging.INFO),
    "fsspec": (logging.WARNING, logging.INFO),
    "pyftpdlib": (logging.WARNING, logging.INFO),
}


def configure_logging(verbose: int, quiet: bool) -> None:
    """Set up the command's log output (see the module notes).

    Parameters
    ----------
    verbose : int
        Number of ``-v`` flags (0: default, 1: libraries' INFO and warnings, 2+: debug).
    quiet : bool
        ``-q``: warnings and errors only, no progress bars.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if quiet:
        os.environ["BIOMARK_PROGRESS"] = "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose >= 2 else "2")
    if verbose >= 2:
        return
    for name, (default, more) in _THIRD_PARTY.items():
        logging.getLogger(name).setLevel(more if verbose else default)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbose else "warning")
    if not verbose:
        install_quiet_tensorflow_import()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import ``tensorflow`` (once, whenever something first imports it) without its native
    banners."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # one import only; the real finders do the finding
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        real_exec = loader.exec_module

        def exec_module(module: ModuleType) -> Any:
            with filtered_native_stderr():
                return real_exec(module)

        loader.exec_module = exec_module  # this loader object serves this one module
        return spec


def install_quiet_tensorflow_import() -> None:
    """Have the first ``import tensorflow`` of this process hide TensorFlow's start-up banners."""
    if "tensorflow" in sys.modules or any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextlib.contextmanager
def filtered_native_stderr(pattern: re.Pattern[str] = _BANNER_RE) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block; then write back the lines not
    matching ``pattern``.

    Native libraries write to the descriptor, not to :data:`sys.stderr`, so
    only a descriptor-level redirection reaches them.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not pattern.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
