"""Tests for biomark.train.metrics against the paper's tables and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from biomark.exceptions import DataError
from biomark.train.metrics import (
    binary_confusion,
    confusion_notes,
    fold_metrics,
    paper_table,
    pooled_metrics,
    summarize_confusion,
)

LABELS = ["COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Pneumonia", "Normal"]

# Table 6 of the paper: rows PREDICTED, columns ACTUAL.
TABLE6 = np.array(
    [
        [443, 1, 4, 4, 7, 3, 1],
        [1, 232, 36, 34, 11, 0, 0],
        [2, 31, 161, 58, 37, 0, 0],
        [3, 12, 54, 156, 40, 0, 0],
        [3, 17, 56, 63, 184, 0, 0],
        [1, 0, 0, 0, 1, 907, 0],
        [2, 0, 0, 0, 0, 0, 1340],
    ]
)


def test_table6_gives_table5():
    cm = TABLE6.T  # scikit-learn orientation: rows true
    np.testing.assert_array_equal(cm.sum(axis=1), [455, 293, 311, 315, 280, 910, 1341])
    s = summarize_confusion(cm, LABELS)
    assert round(100 * s["accuracy"], 2) == 87.66
    assert round(100 * s["binary_accuracy"], 2) == 99.18
    assert round(100 * s["sensitivity"], 2) == 97.36
    assert round(100 * s["specificity"], 2) == 99.42


def test_table6_gives_table7():
    # Table 7 (rows predicted): [[443, 20], [12, 3430]] -> ours (rows true) is its transpose.
    np.testing.assert_array_equal(binary_confusion(TABLE6.T, LABELS), [[443, 12], [20, 3430]])


def test_transpose_pitfall():
    right = summarize_confusion(TABLE6.T, LABELS)
    wrong = summarize_confusion(TABLE6, LABELS)
    assert wrong["accuracy"] == right["accuracy"]  # the trace does not care
    assert round(100 * wrong["sensitivity"], 2) == round(100 * 443 / 463, 2) != 97.36
    assert wrong["sensitivity"] != right["sensitivity"]


def test_paper_table_round_trips_table6():
    table = paper_table(TABLE6.T, LABELS)
    np.testing.assert_array_equal(table.to_numpy(), TABLE6)
    assert table.index.name == "predicted" and table.columns.name == "actual"
    assert table.loc["Normal", "COVID-19"] == 2  # 2 COVID-19 images predicted Normal


@pytest.mark.parametrize(
    ("cm", "expected"),
    [
        # 2 classes: TP=8, FN=2, FP=1, TN=9
        (
            [[8, 2], [1, 9]],
            dict(accuracy=17 / 20, binary_accuracy=17 / 20, sensitivity=0.8, specificity=0.9),
        ),
        # 3 classes: confusion among negatives counts as correct in the binary task
        (
            [[5, 1, 0], [2, 3, 1], [0, 4, 4]],
            dict(
                accuracy=12 / 20,
                binary_accuracy=(5 + 12) / 20,
                sensitivity=5 / 6,
                specificity=12 / 14,
            ),
        ),
    ],
)
def test_hand_computed(cm, expected):
    labels = ["COVID-19", "Normal", "Other"][: len(cm)]
    assert summarize_confusion(np.array(cm), labels) == pytest.approx(expected)


def test_no_positive_images_gives_nan_and_a_note():
    cm = np.array([[0, 0], [3, 7]])
    s = summarize_confusion(cm, ["COVID-19", "Normal"])
    assert math.isnan(s["sensitivity"])
    assert s["specificity"] == pytest.approx(0.7)
    assert any(
        "sensitivity is undefined" in note for note in confusion_notes(cm, ["COVID-19", "Normal"])
    )


def test_empty_matrix_is_all_nan():
    s = summarize_confusion(np.zeros((2, 2), int), ["COVID-19", "Normal"])
    assert all(math.isnan(v) for v in s.values())


@pytest.mark.parametrize(
    ("cm", "labels", "positive", "match"),
    [
        (np.eye(2), ["COVID-19", "Normal"], "Covid", "positive class 'Covid' is not among"),
        (np.eye(3), ["COVID-19", "Normal"], "COVID-19", "does not fit 2 labels"),
        (-np.eye(2), ["COVID-19", "Normal"], "COVID-19", "negative counts"),
    ],
)
def test_confusion_errors(cm, labels, positive, match):
    with pytest.raises(DataError, match=match):
        summarize_confusion(cm, labels, positive)


@pytest.fixture
def predictions():
    """200 random predictions over 4 classes, ~70% correct."""
    rng = np.random.default_rng(1)
    n, k = 200, 4
    y_true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y_true] += 1.5
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, prob.argmax(axis=1), prob, ["COVID-19", "Normal", "Pneumonia", "Edema"]


def test_fold_metrics_agrees_with_sklearn(predictions):
    y_true, y_pred, prob, classes = predictions
    m = fold_metrics(y_true, y_pred, prob, classes)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y_true == 0, y_pred == 0))
    assert m["specificity"] == pytest.approx(recall_score(y_true != 0, y_pred != 0))
    assert m["binary_accuracy"] == pytest.approx(accuracy_score(y_true == 0, y_pred == 0))
    assert m["macro_auc"] == pytest.approx(
        roc_auc_score(y_true, prob, multi_class="ovr", average="macro")
    )
    assert m["covid_auc"] == pytest.approx(roc_auc_score(y_true == 0, prob[:, 0]))
    precision = precision_score(y_true, y_pred, average=None)
    f1 = f1_score(y_true, y_pred, average=None)
    for i, c in enumerate(classes):
        assert m["per_class"][c]["precision"] == pytest.approx(precision[i])
        assert m["per_class"][c]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][c]["support"] == int((y_true == i).sum())
    assert np.array(m["confusion"]).sum() == len(y_true)
    assert m["notes"] == [] and m["absent_classes"] == []
    json.dumps(m)  # plain types


def test_fold_metrics_accepts_class_names(predictions):
    y_true, y_pred, prob, classes = predictions
    names = np.array(classes)
    by_name = fold_metrics(names[y_true], names[y_pred], prob, classes)
    assert by_name == fold_metrics(y_true, y_pred, prob, classes)


def test_absent_class_is_reported_and_auc_stays_finite(predictions):
    y_true, y_pred, prob, classes = predictions
    keep = y_true != 3  # no Edema in this fold
    m = fold_metrics(y_true[keep], y_pred[keep], prob[keep], classes)
    assert m["absent_classes"] == ["Edema"]
    assert m["auc_classes"] == ["COVID-19", "Normal", "Pneumonia"]
    assert math.isfinite(m["macro_auc"])
    assert math.isnan(m["per_class"]["Edema"]["auc"])
    assert any("Edema" in note for note in m["notes"])
    expected = np.mean([roc_auc_score(y_true[keep] == i, prob[keep, i]) for i in range(3)])
    assert m["macro_auc"] == pytest.approx(expected)
    assert len(m["confusion"]) == 4


def test_fold_without_positives(predictions):
    y_true, y_pred, prob, classes = predictions
    keep = y_true != 0
    m = fold_metrics(y_true[keep], y_pred[keep], prob[keep], classes)
    assert math.isnan(m["sensitivity"]) and math.isnan(m["covid_auc"])
    assert any("sensitivity is undefined" in note for note in m["notes"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t, p, pr: (t[:-1], p, pr), "disagree"),
        (lambda t, p, pr: (t, p, pr[:, :3]), "disagree"),
        (lambda t, p, pr: (t + 10, p, pr), "class indices must lie"),
        (lambda t, p, pr: (np.array(["x"] * len(t)), p, pr), "not among the classes"),
    ],
)
def test_fold_metrics_errors(predictions, change, match):
    y_true, y_pred, prob, classes = predictions
    with pytest.raises(DataError, match=match):
        fold_metrics(*change(y_true, y_pred, prob), classes)


def _split(predictions, k=5):
    y_true, y_pred, prob, classes = predictions
    parts = np.array_split(np.arange(len(y_true)), k)
    return [fold_metrics(y_true[i], y_pred[i], prob[i], classes) for i in parts]


def test_pooled_means_and_sums(predictions):
    y_true, y_pred, prob, classes = predictions
    folds = _split(predictions)
    pooled = pooled_metrics(folds, n_bootstrap=0)
    accs = [f["accuracy"] for f in folds]
    assert pooled["mean"]["accuracy"] == pytest.approx(np.mean(accs))
    assert pooled["std"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    whole = fold_metrics(y_true, y_pred, prob, classes)
    assert pooled["confusion"] == whole["confusion"]
    assert pooled["binary_confusion"] == whole["binary_confusion"]
    assert pooled["pooled"]["accuracy"] == pytest.approx(whole["accuracy"])
    assert pooled["bootstrap"] is None


def test_bootstrap_contains_estimate_and_is_seeded(predictions):
    y_true, y_pred, prob, _ = predictions
    folds = _split(predictions)
    kwargs = dict(y_true=y_true, y_pred=y_pred, probabilities=prob, n_bootstrap=1000)
    a = pooled_metrics(folds, seed=3, **kwargs)
    b = pooled_metrics(folds, seed=3, **kwargs)
    c = pooled_metrics(folds, seed=4, **kwargs)
    assert a["bootstrap"] == b["bootstrap"]
    assert a["bootstrap"] != c["bootstrap"]
    for name, interval in a["bootstrap"].items():
        assert interval["low"] <= interval["estimate"] <= interval["high"], name
        assert interval["low"] < interval["high"], name
    assert a["bootstrap"]["accuracy"]["estimate"] == pytest.approx(a["pooled"]["accuracy"])
    json.dumps(a)


def test_rank_auc_equals_sklearn(predictions):
    from biomark.train.metrics import _ovr_aucs_by_rank

    y_true, _, prob, _ = predictions
    tied = np.round(prob, 1)  # many ties
    for p in (prob, tied):
        fast = _ovr_aucs_by_rank(y_true, p, 4)
        slow = [roc_auc_score(y_true == i, p[:, i]) for i in range(4)]
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert np.isnan(_ovr_aucs_by_rank(y_true[y_true != 2], prob[y_true != 2], 4)[2])


def test_pooled_notes_nan_folds(predictions):
    y_true, y_pred, prob, classes = predictions
    folds = _split(predictions)
    keep = y_true != 0
    folds.append(fold_metrics(y_true[keep][:20], y_pred[keep][:20], prob[keep][:20], classes))
    pooled = pooled_metrics(folds, n_bootstrap=0)
    assert pooled["n_folds_used"]["sensitivity"] == 5
    assert math.isfinite(pooled["mean"]["sensitivity"])
    assert any(note.startswith("sensitivity: undefined in 1 of 6") for note in pooled["notes"])


def test_pooled_errors(predictions):
    with pytest.raises(DataError, match="no folds given"):
        pooled_metrics([])
    y_true, _, _, _ = predictions
    with pytest.raises(DataError, match="together"):
        pooled_metrics(_split(predictions), y_true=y_true)
