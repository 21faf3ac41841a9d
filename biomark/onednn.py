"""TensorFlow's oneDNN CPU kernels, on by default before TensorFlow is imported.

TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512
VNNI, BF16 or AMX. Elsewhere (e.g. an AMD EPYC with AVX2) it runs its Eigen
kernels unless ``TF_ENABLE_ONEDNN_OPTS=1`` is set before it starts. The
report's passes go through a backbone whose BatchNormalization is folded into
its convolutions (:mod:`biomark.train.folded_batchnorm`), and with oneDNN
TensorFlow fuses each depthwise or plain convolution with its bias and ReLU6.
Measured on the 2-core AVX2 EPYC, one thread (``benchmarks/RESULTS.md``):

* the demo's folded backbone (alpha 0.35, 96 px), 256 images: 0.50 s -> 0.19 s;
* the demo report, strategies one after another in one thread: 111.6 -> 99.3 CPU s;
* a training step (batch 32, ``benchmarks/train_throughput.py``): 158 -> 169
  images/s; ``predict``: 582 -> 724 images/s.

Results differ from the Eigen kernels' in float32 rounding only (3e-6 on
``out_relu`` values up to 3.3).

:func:`default_to_onednn` runs when :mod:`biomark` is imported, so it
precedes the first TensorFlow import of every biomark process and of the
worker processes they start (which inherit the environment). A value the user
set is kept: ``TF_ENABLE_ONEDNN_OPTS=0`` turns the kernels off. It has no
effect once TensorFlow is imported, nor with another Keras backend. Runs
record the value (:func:`biomark.provenance.environment`).
"""

from __future__ import annotations

import os

__all__ = ["ONEDNN_VARIABLE", "default_to_onednn", "onednn_setting"]

#: TensorFlow's switch for its oneDNN kernels, read when TensorFlow starts.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def default_to_onednn() -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` unless the environment already sets it.

    Returns
    -------
    bool
        True when this call set it.
    """
    if os.environ.get(ONEDNN_VARIABLE, "").strip():
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


def onednn_setting() -> str:
    """The value TensorFlow reads (``""`` when unset: TensorFlow's own choice for the CPU)."""
    return os.environ.get(ONEDNN_VARIABLE, "").strip()
