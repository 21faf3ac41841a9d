"""Is the network learning? A check early in training.

A network that cannot fit the images it trains on (wrong learning rate,
augmentation too strong for its capacity) learns nothing worth explaining, and
every later step would analyse noise. Nor does one that fits its training
images but nothing that carries over to other images (labels unrelated to the
images; far too few images): it has memorised them. :func:`fit_check`
compares the accuracy on a fixed sample of training images -- predicted
without augmentation or dropout, as test images are -- and on the validation
images to their majority rates with one-sided exact binomial tests, and
:func:`confirm_fit` reads the same sample again after the last epoch: a
network can still be at its majority rate after the early check and fit its
images well by the end. numpy/scipy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = ["FIT_SAMPLE", "confirm_fit", "fit_check", "fit_sample_rows"]

#: Training images predicted for the check (a fixed, seeded sample).
FIT_SAMPLE = 256


def fit_sample_rows(n_train: int, seed: int, size: int = FIT_SAMPLE) -> np.ndarray:
    """Positions (into the training rows) of the fixed sample the check predicts.

    Examples
    --------
    >>> fit_sample_rows(5, seed=0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(fit_sample_rows(1000, seed=0))
    256
    """
    if n_train <= size:
        return np.arange(n_train)
    return np.sort(np.random.default_rng([seed, 7]).choice(n_train, size=size, replace=False))


def _above_majority(predicted: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Accuracy, majority rate and one-sided binomial p of accuracy > majority rate."""
    labels = np.asarray(labels)
    n = int(len(labels))
    if n == 0:
        return float("nan"), 1.0, 1.0
    majority = float(np.bincount(labels).max() / n)
    correct = int(np.sum(np.asarray(predicted) == labels))
    return (
        correct / n,
        majority,
        float(sps.binomtest(correct, n, majority, alternative="greater").pvalue),
    )


def fit_check(
    predicted: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    *,
    inference_predicted: np.ndarray | None = None,
    val_predicted: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    alpha: float = 0.01,
) -> dict[str, Any]:
    """Test whether training (and validation) accuracy is above the majority rate.

    Parameters
    ----------
    predicted, labels : ndarray of shape (n_images,), int
        Predicted and true classes of the sampled training images; the
        predictions are made with BatchNormalization statistics re-estimated
        for the current weights, so they say what the weights have learned.
    epoch : int
        1-based epoch after which the check ran (recorded).
    inference_predicted : ndarray of shape (n_images,), int, optional
        The training sample predicted with the moving statistics as they stand
        (what validation and a model saved now would use). When the weights
        fit but these do not, the statistics lag behind the weights.
    val_predicted, val_labels : ndarray of shape (n_val,), int, optional
        The validation images, predicted like ``predicted``.
    alpha : float, default 0.01
        Level of the one-sided binomial tests.

    Returns
    -------
    dict
        ``epoch``, ``n``, ``train_accuracy``, ``majority_rate``, ``p_value``,
        ``alpha`` and ``status``: ``"cannot_fit"`` when the training accuracy is not
        significantly above its majority rate; ``"not_generalising"`` when it
        is but the validation accuracy is not (memorising); else ``"fits"``.
        With validation images: ``val_n``, ``val_accuracy``,
        ``val_majority_rate``, ``val_p_value``. With ``inference_predicted``:
        ``inference_accuracy``, ``inference_p_value`` and ``inference_status``
        (``"fits"``, or ``"lags"`` when the weights fit but the statistics as
        they stand do not).

    Examples
    --------
    >>> y = np.repeat([0, 1, 2, 3], 25)
    >>> fit_check(y, y, epoch=3)["status"]
    'fits'
    >>> fit_check(np.zeros(100, int), y, epoch=3)["status"]
    'cannot_fit'
    >>> fit_check(y, y, epoch=3, val_predicted=np.zeros(100, int), val_labels=y)["status"]
    'not_generalising'
    >>> fit_check(y, y, epoch=3, inference_predicted=np.zeros(100, int))["inference_status"]
    'lags'
    """
    accuracy, majority, p_value = _above_majority(predicted, labels)
    fits = p_value < alpha
    result: dict[str, Any] = {
        "epoch": int(epoch),
        "n": int(len(labels)),
        "train_accuracy": accuracy,
        "majority_rate": majority,
        "p_value": p_value,
        "alpha": float(alpha),
        "status": "fits" if fits else "cannot_fit",
    }
    if val_predicted is not None and val_labels is not None and len(val_labels):
        val_accuracy, val_majority, val_p = _above_majority(val_predicted, val_labels)
        result.update(
            val_n=int(len(val_labels)),
            val_accuracy=val_accuracy,
            val_majority_rate=val_majority,
            val_p_value=val_p,
        )
        if fits and val_p >= alpha:
            result["status"] = "not_generalising"
    if inference_predicted is not None:
        inference, _, inference_p = _above_majority(inference_predicted, labels)
        result.update(
            inference_accuracy=inference,
            inference_p_value=inference_p,
            inference_status="lags" if fits and inference_p >= alpha else "fits",
        )
    return result


def confirm_fit(
    check: dict[str, Any], final_predicted: np.ndarray, labels: np.ndarray, epoch: int
) -> dict[str, Any]:
    """The early check's sample read again after the last epoch.

    Parameters
    ----------
    check : dict
        What :func:`fit_check` returned after the early epoch.
    final_predicted, labels : ndarray of shape (n_images,), int
        The same training sample predicted by the final model, and its labels.
    epoch : int
        The last epoch trained (1-based).

    Returns
    -------
    dict
        A copy of ``check`` with ``final_epoch``, ``final_accuracy``,
        ``final_p_value`` and ``final_status`` (``"fits"`` or
        ``"cannot_fit"``, by the same one-sided binomial test at the same
        level). ``status`` stays what the early check said.

    Examples
    --------
    >>> y = np.repeat([0, 1, 2, 3], 25)
    >>> early = fit_check(np.zeros(100, int), y, epoch=3)
    >>> late = confirm_fit(early, y, y, epoch=16)
    >>> early["status"], late["status"], late["final_status"], late["final_epoch"]
    ('cannot_fit', 'cannot_fit', 'fits', 16)
    """
    accuracy, _, p_value = _above_majority(final_predicted, labels)
    return {
        **check,
        "final_epoch": int(epoch),
        "final_accuracy": accuracy,
        "final_p_value": p_value,
        "final_status": "fits" if p_value < check["alpha"] else "cannot_fit",
    }
