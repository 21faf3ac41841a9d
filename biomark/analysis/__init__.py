"""biomark.analysis: representation comparison, embeddings and statistics.

Plain numpy/pandas/scipy/scikit-learn (no deep-learning import). Only the
light CKA functions are re-exported here; import the heavier modules
(:mod:`biomark.analysis.compare`, :mod:`biomark.analysis.embedding`) directly.
"""

from __future__ import annotations

from biomark.analysis.cka import linear_cka, rbf_cka

__all__ = ["linear_cka", "rbf_cka"]
