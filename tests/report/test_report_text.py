"""The report's sentences: the model-level source audit in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.analysis.audit import source_predictability
from biomark.report.report_text import audit_clauses


def _audit(planted: float) -> pd.DataFrame:
    """Two classes of 40 patients x 2 films; the source shifts feature 0 by ``planted`` in class A
    only."""
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(80), 2)
    labels = np.where(patients < 40, "A", "B")
    sources = np.where(rng.random(80) < 0.5, "s1", "s2")[patients]
    X = rng.normal(size=(160, 5))
    X[:, 0] += planted * ((sources == "s2") & (labels == "A"))
    return source_predictability(
        X, labels, sources, patient_ids=patients, n_permutations=199, seed=0
    )


def test_a_flagged_class_is_named_with_its_auc_and_the_chance_of_a_false_flag() -> None:
    clauses = audit_clauses(_audit(planted=1.5))
    text = "; ".join(clauses)
    assert clauses[0].startswith("pooled over the classes, source is")  # the pooled test first
    assert "recoverable within A (AUC " in text and "within B" not in text
    assert "about 1 run in 20 is flagged somewhere by chance" in text


def test_no_flag_no_chance_sentence() -> None:
    clauses = audit_clauses(_audit(planted=0.0))
    assert len(clauses) == 1 and "not recoverable" in clauses[0]
    assert audit_clauses(None) == []
