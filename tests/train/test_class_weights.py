"""Tests for biomark.train.class_weights and the training.class_weight grammar."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from biomark.config import Plan, TrainingSettings, parse_class_weight, plan_from_mapping
from biomark.exceptions import ConfigError, DataError
from biomark.train.class_weights import class_weights

# The issue-13 training set: 2,422 images in 7 classes, Edema (index 1) with 10.
ISSUE_COUNTS = [600, 10, 300, 300, 280, 600, 332]
ISSUE_LABELS = np.repeat(np.arange(7), ISSUE_COUNTS)


def test_balanced_matches_scikit_learn() -> None:
    labels = np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 3])
    weights = class_weights(labels, 5, "balanced")
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    np.testing.assert_allclose([weights[0], weights[1], weights[3]], expected)
    assert weights[2] == weights[4] == 1.0  # classes without training images
    assert sorted(weights) == [0, 1, 2, 3, 4]
    # the mean weight per training image is 1 under balanced
    assert np.mean([weights[c] for c in labels]) == pytest.approx(1.0)


def test_issue_example_tiny_class_is_not_flooded() -> None:
    balanced = class_weights(ISSUE_LABELS, 7, "balanced")
    sqrt = class_weights(ISSUE_LABELS, 7, "sqrt")
    capped = class_weights(ISSUE_LABELS, 7, "capped:10")
    assert balanced[1] == pytest.approx(34.6, abs=0.01)
    assert sqrt[1] == pytest.approx(5.88, abs=0.01)
    assert capped[1] == 10.0
    # sqrt halves the log imbalance; rare classes still weigh more than common ones
    ratio = lambda w: w[1] / w[0]  # noqa: E731
    assert np.log(ratio(sqrt)) == pytest.approx(np.log(ratio(balanced)) / 2)
    assert sqrt[1] > sqrt[4] > sqrt[0]
    # capped leaves classes under the cap as balanced
    assert {c: capped[c] for c in (0, 2, 3, 4, 5, 6)} == {
        c: balanced[c] for c in (0, 2, 3, 4, 5, 6)
    }


@pytest.mark.parametrize("mode", ["balanced", "sqrt", "capped:3"])
def test_balanced_data_gets_unit_weights(mode: str) -> None:
    weights = class_weights(np.repeat(np.arange(4), 25), 4, mode)
    assert weights == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0})


def test_none_gives_no_weighting() -> None:
    assert class_weights(ISSUE_LABELS, 7, "none") is None


def test_default_mode_is_sqrt() -> None:
    assert TrainingSettings().class_weight == "sqrt" and Plan().training.class_weight == "sqrt"
    assert class_weights(ISSUE_LABELS, 7) == class_weights(ISSUE_LABELS, 7, "sqrt")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("balanced", ("balanced", None)),
        (" SQRT ", ("sqrt", None)),
        ("none", ("none", None)),
        ("capped:10", ("capped", 10.0)),
        ("capped : 2.5", ("capped", 2.5)),
        ("capped:1", ("capped", 1.0)),
    ],
)
def test_grammar_accepts(text: str, expected: tuple) -> None:
    assert parse_class_weight(text) == expected
    assert plan_from_mapping({"training": {"class_weight": text}}).training.class_weight == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "inverse",
            r"training.class_weight='inverse' is not allowed: use 'balanced', 'sqrt' \(the "
            r"default\), 'none' or 'capped:N'",
        ),
        ("capped", "is not allowed"),
        ("capped:", "is not allowed"),
        ("capped:ten", "is not allowed"),
        ("capped:-3", "is not allowed"),
        ("capped:0.5", r"training.class_weight='capped:0.5': the cap N .* must be at least 1"),
    ],
)
def test_grammar_rejects(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_class_weight(text)
    with pytest.raises(ConfigError, match=match):
        plan_from_mapping({"training": {"class_weight": text}})
    with pytest.raises(ConfigError, match=match):
        class_weights(ISSUE_LABELS, 7, text)


def test_labels_outside_the_classes_are_an_error() -> None:
    with pytest.raises(DataError, match=r"labels span 0..7 but the model has 7 classes"):
        class_weights(np.arange(8), 7, "balanced")
