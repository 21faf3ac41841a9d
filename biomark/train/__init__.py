"""Training: the cross-validation loop, the paper's metrics, checkpoints.

Importing this package does not import Keras; :mod:`biomark.train.metrics`
is numpy/scikit-learn only.
"""

from __future__ import annotations

__all__: list[str] = []
