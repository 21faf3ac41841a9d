"""SHAP values of the classifier head with respect to the 1280 GAP features.

What is explained
-----------------
The numpy head of :mod:`biomark.analysis.head` (weights read from each
fold's ``model.keras`` by :func:`biomark.train.head.extract_head`), as a
function of the GAP vector ``g``. The explained output is the **class logit**
(pre-softmax) of every class, by default: logits are additive in the hidden
units, unbounded and do not saturate, so an attribution is not squashed
towards 0 for confidently classified images, and one class's attribution
does not depend on the other classes through the softmax. ``output="prob"``
explains the probabilities instead.

The game is the *interventional* (independent-masker) one of
``shap.maskers.Independent``: for a coalition ``S`` of features,
``v(S) = mean_b f(g_S, b_notS)`` over a background sample ``b``. Shapley values
of this game are additive by construction:
``sum_j phi_j(g) = f(g) - mean_b f(b)`` (checked and reported per fold:
:attr:`Attribution.additivity_error`).

Methods (``method=``)
---------------------
``"permutation"`` (default when there are more than :data:`EXACT_MAX_FEATURES` varying features)
    Antithetic permutation sampling, the estimator of
    ``shap.PermutationExplainer`` (for each sampled permutation, features are
    switched on one by one from the background to ``g`` and then off again
    in the same order; each feature's credit is the average change of the
    output). It is computed here, not by shap, because the head's first layer
    is linear: switching feature ``j`` on changes every hidden
    pre-activation by the rank-one term ``(g_j - b_j) W1[j]``, so a walk
    costs ``O(d H C)`` per background row instead of the ``O(d^2 H)`` of
    re-evaluating the whole head on every masked input. Measured on 2 CPU
    cores for the paper's head (d = 1280, H = 2500, 7 classes), background
    16, one antithetic pair per image: ``shap.PermutationExplainer`` took
    12 s per image, this walk 0.33 s (``benchmarks/report.py``
    prints the figure per fold). Each image gets its own seeded permutations.
    Features that are constant over the explained images and the background
    (dead ReLU units) take no steps and get exactly 0. The estimate is
    additive to rounding error whatever the number of permutations; its
    per-feature sampling error shrinks as ``1/sqrt(n_permutations)``.
``"exact"`` (default for few features)
    ``shap.explainers.Exact`` with ``shap.maskers.Independent``: exact
    Shapley values of the same game, exponential in ``d`` (small heads,
    tests).
``"shap-permutation"``
    ``shap.PermutationExplainer`` itself (slow; a reference that the tests
    compare against).

DeepExplainer is not used: it fails its additivity check on MobileNetV2 and
needs a TensorFlow/PyTorch graph, while the head here is numpy on any backend.

Subset and cost
---------------
SHAP is computed per fold on a seeded, class-stratified subset of that fold's
test images (:func:`stratified_subset`; ``--shap-samples``, default 32) against
a seeded background of 16 of the fold's test images. Cost per fold is about
``n_samples x n_background x 2 n_permutations x d_varying x H x (C + 1)``
multiply-adds (32 x 16 x 4 x 1280 x 2500 x 8 = 5e10 for the paper's head
with 2 antithetic pairs: 21 s per fold measured on 2 cores, ~11 minutes for
10 folds x 3 strategies).

Only this module imports shap (lazily, in the functions that use it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from biomark.analysis.head import Head, Output
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "EXACT_MAX_FEATURES",
    "Attribution",
    "Method",
    "explain_head",
    "stratified_subset",
]

logger = logging.getLogger(__name__)

#: "auto" uses the exact explainer up to this many varying features.
EXACT_MAX_FEATURES = 12

Method = Literal["auto", "permutation", "exact", "shap-permutation"]


@dataclass(frozen=True)
class Attribution:
    """SHAP values of a head for a set of images.

    Attributes
    ----------
    values : ndarray of shape (n_images, n_features, n_classes)
        ``phi[i, j, c]``: contribution of GAP feature ``j`` to output ``c`` of image ``i``.
    base_values : ndarray of shape (n_classes,)
        ``mean_b f(b)`` over the background.
    outputs : ndarray of shape (n_images, n_classes)
        ``f(g)`` of the explained images.
    output : {"logit", "prob"}
    method : str
        The method actually used.
    n_background : int
    n_permutations : int
        Antithetic pairs per image (0 for the exact method).
    seconds : float
        Wall time of the computation.
    """

    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    output: str
    method: str
    n_background: int
    n_permutations: int
    seconds: float

    @property
    def additivity_error(self) -> np.ndarray:
        """``sum_j phi_j + E[f(b)] - f(g)``, shape (n_images, n_classes); ~0."""
        return self.values.sum(axis=1) + self.base_values[None, :] - self.outputs

    def additivity_summary(self) -> dict[str, float]:
        """``max_abs_error`` and ``mean_abs_error`` of :attr:`additivity_error`, and the output scale."""
        err = np.abs(self.additivity_error)
        return {
            "max_abs_error": float(err.max()) if err.size else float("nan"),
            "mean_abs_error": float(err.mean()) if err.size else float("nan"),
            "output_scale": float(np.abs(self.outputs - self.base_values).mean()) if err.size else float("nan"),
        }

    def mean_abs(self) -> np.ndarray:
        """Mean ``|SHAP|`` over images, shape (n_features, n_classes): the importance ranking."""
        return np.abs(self.values).mean(axis=0)


def stratified_subset(labels: Sequence[str], n: int, *, seed: int = 0) -> np.ndarray:
    """Row indices of a seeded subset with every class represented.

    Classes get ``n // n_classes`` rows each (all rows of a smaller class),
    and the remainder is filled at random from the rows left.

    Parameters
    ----------
    labels : sequence of str, length n_rows
    n : int
        Subset size; all rows when ``n >= n_rows``.
    seed : int, default 0

    Returns
    -------
    ndarray of int, shape (min(n, n_rows),), sorted
    """
    labels_arr = np.asarray([str(v) for v in labels], dtype=object)
    n_rows = labels_arr.size
    if n < 1:
        raise ConfigError(f"subset size n={n}: must be at least 1")
    if n >= n_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels_arr.tolist()))
    per = max(1, n // len(classes))
    chosen: list[int] = []
    for c in classes:
        rows = np.flatnonzero(labels_arr == c)
        chosen.extend(rng.choice(rows, size=min(per, rows.size), replace=False).tolist())
    chosen = chosen[:n]
    rest = np.setdiff1d(np.arange(n_rows), chosen)
    if len(chosen) < n:
        chosen.extend(rng.choice(rest, size=n - len(chosen), replace=False).tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _check(head: Head, X: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    B = np.asarray(background, dtype=np.float64)
    for name, arr in (("X", X), ("background", B)):
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != head.n_features:
            raise DataError(f"{name} must have shape (n >= 1, {head.n_features}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{name} holds NaN or infinite values; repair those feature rows before explaining")
    return X, B


def _walk(head: Head, X: np.ndarray, B: np.ndarray, n_pairs: int, seed: int, output: Output,
          chunk: int, dtype: type = np.float64) -> np.ndarray:
    """Antithetic permutation sampling with rank-one updates of the pre-activations.

    ``dtype`` is the precision of the walk's arrays (the contributions are
    summed in float64 either way). The walk is bound by memory traffic over
    the ``(chunk, n_background, n_hidden)`` pre-activations, so float32
    halves the time (measured 1.8x on the paper's head).
    """
    n, d = X.shape
    C = head.n_classes
    phi = np.zeros((n, d, C))
    varying = np.flatnonzero(np.ptp(np.vstack([X, B]), axis=0) > 0.0)
    if varying.size == 0:
        return phi
    X, B = X.astype(dtype), B.astype(dtype)
    w1, b1, w2, b2 = (np.asarray(a, dtype=dtype) for a in (head.w1, head.b1, head.w2, head.b2))
    w1v = w1[varying]  # (dv, H)
    z_bg = B @ w1 + b1  # (nb, H)

    def out(z: np.ndarray) -> np.ndarray:  # (m, nb, H) -> (m, nb, C)
        logits = np.maximum(z, 0.0) @ w2 + b2
        if output == "prob":
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        return logits

    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        m = rows.size
        ar = np.arange(m)
        delta = X[rows][:, None, varying] - B[None, :, varying]  # (m, nb, dv)
        z_x = (X[rows] @ w1 + b1)[:, None, :]  # (m, 1, H)
        acc = np.zeros((m, varying.size, C))
        for _ in range(n_pairs):
            perms = np.argsort(rng.random((m, varying.size)), axis=1)
            # forward: from the background, switch features on in order
            z = np.broadcast_to(z_bg, (m, *z_bg.shape)).copy()
            prev = out(z)
            for t in range(varying.size):
                idx = perms[:, t]
                z += delta[ar, :, idx][:, :, None] * w1v[idx][:, None, :]
                cur = out(z)
                acc[ar, idx] += (cur - prev).mean(axis=1)
                prev = cur
            # backward (antithetic): from g, switch the same features off in the same order
            z = np.broadcast_to(z_x, (m, *z_bg.shape)).copy()
            prev = out(z)
            for t in range(varying.size):
                idx = perms[:, t]
                z -= delta[ar, :, idx][:, :, None] * w1v[idx][:, None, :]
                cur = out(z)
                acc[ar, idx] += (prev - cur).mean(axis=1)
                prev = cur
        phi[rows[:, None], varying[None, :]] = acc / (2 * n_pairs)
    return phi


def _shap_values(head: Head, X: np.ndarray, B: np.ndarray, method: str, n_pairs: int, seed: int,
                 output: Output) -> np.ndarray:
    import shap

    def f(rows: np.ndarray) -> np.ndarray:
        return head.forward(np.asarray(rows, dtype=np.float64), output)

    masker = shap.maskers.Independent(B, max_samples=B.shape[0])
    d = X.shape[1]
    if method == "exact":
        explanation = shap.explainers.Exact(f, masker)(X, max_evals=2**d + 1, silent=True)
    else:
        explainer = shap.PermutationExplainer(f, masker, seed=seed)
        explanation = explainer(X, max_evals=n_pairs * (2 * d + 1), silent=True)
    values = np.asarray(explanation.values, dtype=np.float64)
    if values.ndim == 2:  # a single output
        values = values[:, :, None]
    return values


def explain_head(
    head: Head,
    X: np.ndarray,
    background: np.ndarray,
    *,
    output: Output = "logit",
    method: Method = "auto",
    n_permutations: int = 2,
    seed: int = 0,
    chunk: int = 32,
    precision: Literal["float64", "float32"] = "float64",
) -> Attribution:
    """SHAP values of every class output of ``head`` for the rows of ``X``.

    Parameters
    ----------
    head : Head
    X : array-like of shape (n_images, n_features)
        GAP features to explain.
    background : array-like of shape (n_background, n_features)
        Reference sample of the independent masker (the fold's images).
    output : {"logit", "prob"}, default "logit"
    method : {"auto", "permutation", "exact", "shap-permutation"}, default "auto"
        See the module docstring; ``auto`` is ``exact`` for at most
        :data:`EXACT_MAX_FEATURES` features that vary, else ``permutation``.
    n_permutations : int, default 2
        Antithetic permutation pairs per image (permutation methods).
    seed : int, default 0
        Seeds the permutations (the method's own generator).
    chunk : int, default 32
        Images walked together (memory ``chunk x n_background x H`` floats).
    precision : {"float64", "float32"}, default "float64"
        Arithmetic of the ``permutation`` walk. float64 keeps additivity to
        ~1e-15; float32 is ~1.8x faster, its values differ from float64's
        by ~1e-6 of their scale (far below the sampling error of a few
        permutations) and additivity holds to ~1e-6.

    Returns
    -------
    Attribution

    Raises
    ------
    DataError
        If ``X`` or ``background`` has the wrong shape or is not finite.
    ConfigError
        If ``method`` is unknown, ``n_permutations < 1``, or ``exact`` is asked
        for more than 20 features.
    """
    X, B = _check(head, X, background)
    if int(n_permutations) != n_permutations or n_permutations < 1:
        raise ConfigError(f"n_permutations={n_permutations!r}: must be a positive integer")
    if method not in ("auto", "permutation", "exact", "shap-permutation"):
        raise ConfigError(f"method={method!r}: use auto, permutation, exact or shap-permutation")
    if output not in ("logit", "prob"):
        raise ConfigError(f"output={output!r}: use 'logit' or 'prob'")
    n_varying = int((np.ptp(np.vstack([X, B]), axis=0) > 0).sum())
    if method == "auto":
        method = "exact" if X.shape[1] <= EXACT_MAX_FEATURES else "permutation"
    if method == "exact" and X.shape[1] > 20:
        raise ConfigError(f"method='exact' with {X.shape[1]} features: 2^d evaluations; use 'permutation'")
    t0 = time.perf_counter()
    if method == "permutation":
        if precision not in ("float64", "float32"):
            raise ConfigError(f"precision={precision!r}: use 'float64' or 'float32'")
        dtype = np.float32 if precision == "float32" else np.float64
        values = _walk(head, X, B, int(n_permutations), seed, output, max(1, int(chunk)), dtype)
    else:
        values = _shap_values(head, X, B, method, int(n_permutations), seed, output)
    seconds = time.perf_counter() - t0
    result = Attribution(
        values=values,
        base_values=head.forward(B, output).mean(axis=0),
        outputs=head.forward(X, output),
        output=output,
        method=method,
        n_background=int(B.shape[0]),
        n_permutations=0 if method == "exact" else int(n_permutations),
        seconds=seconds,
    )
    logger.debug("SHAP (%s, %s): %d images x %d features (%d varying) in %.2f s; additivity %s",
                 method, output, X.shape[0], X.shape[1], n_varying, seconds, result.additivity_summary())
    return result
