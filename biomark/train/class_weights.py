"""Per-class loss weights for imbalanced training folds (``training.class_weight``).

Every mode starts from scikit-learn's ``balanced`` weight of class ``c``,
``n / (n_present * n_c)`` (``n`` training images, ``n_present`` classes with
images, ``n_c`` images of ``c``), under which every class contributes the
same total weight to the loss. That is the right idea but floods tiny
classes: a 10-image class among 2,422 images in 7 classes gets 34.6, so
each of its images counts as 35 and the model learns to over-predict it
(issue 13: Edema predicted 100 times, 3 of them right). The modes:

============  ============================================  ===============
mode          weight of class c                             10-image class
============  ============================================  ===============
``balanced``  ``n / (n_present * n_c)``                     34.6
``sqrt``      ``sqrt(balanced)`` (the default)              5.9
``capped:N``  ``min(balanced, N)``                          N (10 for N=10)
``none``      no weighting (Keras gets ``None``)            1
============  ============================================  ===============

``sqrt`` is the default because it needs no dataset-specific number: it
halves the imbalance on a log scale whatever the counts (a 100:1 imbalance
becomes 10:1), leaves a balanced dataset at 1.0 everywhere, and still gives
rare classes more weight than common ones. ``capped:N`` keeps balanced
weights for moderately rare classes and limits only the extreme ones.

Weights are not renormalised: the mean weight per training image is 1 for
``balanced`` and at most 1 for ``sqrt`` and ``capped``; with Adam (the
default optimizer) a constant scale of the loss leaves the steps unchanged.
A class with no training image gets 1.0 (it has no loss term to weight).
numpy only, so the function is usable and testable without Keras.
"""

from __future__ import annotations

import numpy as np

from biomark.config import parse_class_weight
from biomark.exceptions import DataError

__all__ = ["class_weights"]


def class_weights(
    labels: np.ndarray, n_classes: int, mode: str = "sqrt"
) -> dict[int, float] | None:
    """Loss weight of every class for the training labels of one fold.

    Parameters
    ----------
    labels : array-like of shape (n_images,), int
        Class index (0 .. ``n_classes`` - 1) of every training image.
    n_classes : int
        Number of classes of the model's output.
    mode : str, default "sqrt"
        ``balanced``, ``sqrt``, ``none`` or ``capped:N``
        (:func:`biomark.config.parse_class_weight`; see the module docstring).

    Returns
    -------
    dict of int to float, or None
        Class index -> weight for Keras's ``class_weight``, every class
        ``0 .. n_classes - 1`` present; None for ``none``.

    Raises
    ------
    ConfigError
        ``mode`` is not one of the forms above.
    DataError
        A label outside ``0 .. n_classes - 1``.

    Examples
    --------
    >>> labels = np.array([0] * 90 + [1] * 10)
    >>> {c: round(w, 3) for c, w in class_weights(labels, 3, "balanced").items()}
    {0: 0.556, 1: 5.0, 2: 1.0}
    >>> {c: round(w, 3) for c, w in class_weights(labels, 3, "sqrt").items()}
    {0: 0.745, 1: 2.236, 2: 1.0}
    >>> {c: round(w, 3) for c, w in class_weights(labels, 3, "capped:3").items()}
    {0: 0.556, 1: 3.0, 2: 1.0}
    >>> class_weights(labels, 3, "none") is None
    True
    """
    kind, cap = parse_class_weight(mode)
    if kind == "none":
        return None
    labels = np.asarray(labels).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"class weights: labels span {labels.min()}..{labels.max()} but the model has "
            f"{n_classes} classes (0..{n_classes - 1}); check the dataset's classes against its "
            "manifest"
        )
    counts = np.bincount(labels.astype(np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes, dtype=np.float64)
    weights[present] = labels.size / (present.sum() * counts[present])
    if kind == "sqrt":
        weights[present] = np.sqrt(weights[present])
    elif kind == "capped" and cap is not None:  # parse_class_weight gives 'capped' its cap
        weights[present] = np.minimum(weights[present], cap)
    return {c: float(w) for c, w in enumerate(weights)}
