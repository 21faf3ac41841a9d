"""TensorFlow's oneDNN CPU kernels for the report's model passes.

TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512
VNNI, BF16 or AMX. Elsewhere (e.g. an AMD EPYC with AVX2) it runs its Eigen
kernels unless ``TF_ENABLE_ONEDNN_OPTS=1`` is set before it starts. The
biomarker report passes thousands of images through each fold's backbone with
its BatchNormalization folded into the convolutions
(:mod:`biomark.train.folded_batchnorm`), and with oneDNN TensorFlow fuses each
depthwise or plain convolution with its bias and ReLU6. Measured on the 2-core
AVX2 EPYC, one thread (``benchmarks/RESULTS.md``):

* the demo's folded backbone (alpha 0.35, 96 px), 256 images: 0.50 s -> 0.19 s;
* the demo report, strategies one after another in one thread: 111.6 -> 99.3 CPU s.

Training is left to TensorFlow's own choice: a training step gained 7 % in
``benchmarks/train_throughput.py`` (158 -> 169 images/s) and the demo's
scratch folds nothing measurable (158, 123, 122 s against 157, 128, 128 s),
while oneDNN's other rounding sends training down another path (the demo's
scratch folds reached 69.9, 66.3, 83.9 % against 77.6, 71.6, 83.7 %; one run
each, so no better or worse, only other networks than the same plan gives
on the same CPU without it).

:func:`onednn_kernels` sets the variable for a block and restores the
environment after; worker processes started in the block inherit it. A value
the user set is kept (``TF_ENABLE_ONEDNN_OPTS=0`` keeps the Eigen kernels).
Where TensorFlow already runs in this process (a notebook that trained first,
a test session), the block gets the kernels it runs with, so that a report's
passes in this process and in its workers agree to the digit. The report
records the value (``report.json``, ``environment``). The passes' results
differ from the Eigen kernels' in float32 rounding only (3e-6 on ``out_relu``
values up to 3.3).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["ONEDNN_VARIABLE", "onednn_kernels", "onednn_setting", "running_kernels"]

#: TensorFlow's switch for its oneDNN kernels, read when TensorFlow starts.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def onednn_setting() -> str:
    """The value TensorFlow would read now (``""`` when unset: TensorFlow's own choice for the
    CPU)."""
    return os.environ.get(ONEDNN_VARIABLE, "").strip()


def running_kernels() -> str:
    """``"1"`` or ``"0"``: whether the TensorFlow already started in this process runs its oneDNN
    kernels; ``""`` when TensorFlow has not been imported (or does not say)."""
    if "tensorflow" not in sys.modules:
        return ""
    try:  # TensorFlow's own test utilities ask the same (test_util.IsMklEnabled)
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return ""
    return "1" if _pywrap_util_port.IsMklEnabled() else "0"


@contextlib.contextmanager
def onednn_kernels() -> Iterator[str]:
    """``TF_ENABLE_ONEDNN_OPTS=1`` in the environment for the block, unless already set; where
    TensorFlow already runs in this process, the kernels it runs with.

    Yields
    ------
    str
        The value in force in the block (``"1"``, the user's own, or this
        process's TensorFlow's).

    Examples
    --------
    >>> import os
    >>> os.environ.pop(ONEDNN_VARIABLE, None) and None
    >>> with onednn_kernels() as value:
    ...     os.environ[ONEDNN_VARIABLE] == value != ""
    True
    >>> ONEDNN_VARIABLE in os.environ
    False
    """
    own = onednn_setting()
    if own:
        yield own
        return
    value = running_kernels() or "1"
    os.environ[ONEDNN_VARIABLE] = value
    try:
        yield value
    finally:
        os.environ.pop(ONEDNN_VARIABLE, None)
