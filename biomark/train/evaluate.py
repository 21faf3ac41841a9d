"""Scoring a model on held-out images during training: predictions, loss and accuracy.

Validation batches are padded to the full batch size (one compiled predict
step for every batch, epoch and fold) and the padding's outputs are dropped
here. The loss is computed in numpy from the probabilities: Keras's own
validation cannot mask padding (its metrics ignore sample weights and its loss
divides by the padded batch size).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["predict_probs", "sparse_crossentropy"]


def sparse_crossentropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of softmax probabilities, as Keras computes it.

    Keras's ``sparse_categorical_crossentropy`` on probabilities clips them to
    ``[epsilon, 1 - epsilon]`` and renormalises: ``-log(p_y / sum(p))``. No
    label smoothing and no class weights: this is the plain validation loss.

    Parameters
    ----------
    probs : ndarray of shape (n_images, n_classes)
    labels : ndarray of shape (n_images,), int

    Returns
    -------
    float

    Examples
    --------
    >>> round(sparse_crossentropy(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0])), 6)
    0.399254
    """
    eps = keras.config.epsilon()
    clipped = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    picked = clipped[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(np.mean(np.log(clipped.sum(axis=1)) - np.log(picked)))


def predict_probs(model: keras.Model, batches: Any) -> np.ndarray:
    """Softmax probabilities of the real images of padded, unlabelled batches.

    Parameters
    ----------
    model : keras.Model
    batches : ImageBatches
        Without labels, ``pad_to_batch=True``.

    Returns
    -------
    ndarray of shape (batches.n_images, n_classes), float32
    """
    return np.asarray(model.predict(batches, verbose=0))[: batches.n_images]
