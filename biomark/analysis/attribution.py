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
``"expected-gradients"`` (what ``biomark report`` uses)
    Expected Gradients (Erion et al. 2021; the quantity
    ``shap.GradientExplainer`` samples): Integrated Gradients from each
    background row to ``g`` along the straight line, averaged over the
    background. These are the Aumann--Shapley values (the Shapley value of the
    continuous version of the same game), additive by the same identity
    ``sum_j phi_j(g) = f(g) - mean_b f(b)``. For this head they need no
    sampling: along a straight path each hidden pre-activation is linear, so
    its ReLU switches at most once and the path integral is closed form
    (:func:`_expected_gradients`). It is exact, and it costs two matrix
    products per explained image (measured on the paper's head, 2 cores:
    ``benchmarks/report.py``), so every test image of a fold can be
    explained. Where no hidden unit changes sign between ``b`` and ``g`` the
    head is linear on the path and the values equal the discrete Shapley values
    below; where units switch, the two games weigh the interaction
    differently (the continuous one spreads it in proportion to each
    feature's step, the discrete one over the orders of the features). Logits only.
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
The report explains every test image of a fold (``--shap-samples N``: a seeded,
class-stratified subset, :func:`stratified_subset`) against a seeded background
of 16 of the fold's test images. For the permutation walk the cost per fold is about
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
from numpy.typing import DTypeLike

from biomark.analysis.head import Head, Output
from biomark.analysis.inputs import check_matrix
from biomark.exceptions import ConfigError

__all__ = [
    "EXACT_MAX_FEATURES",
    "METHODS",
    "Attribution",
    "Method",
    "explain_head",
    "method_sentence",
    "stratified_subset",
]

logger = logging.getLogger(__name__)

#: "auto" uses the exact explainer up to this many varying features.
EXACT_MAX_FEATURES = 12

Method = Literal["auto", "expected-gradients", "permutation", "exact", "shap-permutation"]

#: Every value of ``method``.
METHODS: tuple[str, ...] = (
    "auto",
    "expected-gradients",
    "permutation",
    "exact",
    "shap-permutation",
)


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
        """``max_abs_error`` and ``mean_abs_error`` of :attr:`additivity_error`, and the output
        scale."""
        err = np.abs(self.additivity_error)
        return {
            "max_abs_error": float(err.max()) if err.size else float("nan"),
            "mean_abs_error": float(err.mean()) if err.size else float("nan"),
            "output_scale": float(np.abs(self.outputs - self.base_values).mean())
            if err.size
            else float("nan"),
        }

    def mean_abs(self) -> np.ndarray:
        """Mean ``|SHAP|`` over images, shape (n_features, n_classes): the importance ranking."""
        return np.abs(self.values).mean(axis=0)


def stratified_subset(labels: Sequence[str] | np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
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


def _walk(
    head: Head,
    X: np.ndarray,
    B: np.ndarray,
    n_pairs: int,
    seed: int,
    output: Output,
    chunk: int,
    dtype: DTypeLike = np.float64,
) -> np.ndarray:
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


def _path_fraction(z_x: np.ndarray, z_b: np.ndarray) -> np.ndarray:
    """Share of the straight path from ``z_b`` to ``z_x`` on which ``z > 0`` (broadcast
    elementwise).

    Along ``z(t) = z_b + t (z_x - z_b)``, ``t`` in [0, 1], a pre-activation
    crosses 0 at most once, so the share is 1 or 0 (no crossing) or
    ``z_x / (z_x - z_b)`` / ``z_b / (z_b - z_x)`` (one crossing). Each form
    divides by a difference at least as large as its numerator: no
    cancellation when ``z_x`` is close to ``z_b``.
    """
    pos_x, pos_b = z_x > 0.0, z_b > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(pos_x & ~pos_b, z_x / (z_x - z_b), 0.0)
        down = np.where(pos_b & ~pos_x, z_b / (z_b - z_x), 0.0)
    return np.where(pos_x & pos_b, 1.0, up + down).astype(z_x.dtype, copy=False)


def _expected_gradients(
    head: Head, X: np.ndarray, B: np.ndarray, chunk: int, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """Exact Expected Gradients (Aumann--Shapley values) of the head's logits.

    Integrated Gradients from a background row ``b`` to ``g`` is
    ``(g_j - b_j) * integral_0^1 d logit / d g_j (b + t (g - b)) dt``. The head's
    logits are ``relu(g W1 + b1) W2 + b2``, so along the straight path every
    hidden pre-activation is linear in ``t`` and its ReLU switches at most
    once: the integral is ``sum_h W1[j, h] s_h W2[h, c]`` with ``s_h`` the
    share of the path on which unit ``h`` is active (:func:`_path_fraction`).
    So ``phi[i, j, c] = mean_b (g_ij - b_j) G[j, i, b, c]`` with
    ``G = W1 @ (s * W2)`` for every (image, background) pair at once: one
    matrix product of shape (d, H) x (H, chunk * n_b * C) per chunk (a
    well-shaped product; the algebraically smaller (d, n_b) x (n_b, H) form
    per image runs ~10x below the BLAS's speed with n_b = 16). Completeness
    gives ``sum_j phi[i, j] = f(g_i) - mean_b f(b)``: the same additivity
    identity as the permutation estimate.
    """
    n, d = X.shape
    nb, C = B.shape[0], head.n_classes
    Xc, Bc = X.astype(dtype), B.astype(dtype)
    w1, b1, w2 = (np.asarray(a, dtype=dtype) for a in (head.w1, head.b1, head.w2))
    z_b = Bc @ w1 + b1  # (nb, H)
    phi = np.zeros((n, d, C))
    # Features equal in every image and background row (dead units) have g - b = 0: exactly 0, not
    # computed.
    varying = np.flatnonzero(np.ptp(np.vstack([X, B]), axis=0) > 0.0)
    w1v = w1[varying]
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        m = rows.size
        z_x = Xc[rows] @ w1 + b1  # (m, H)
        S = _path_fraction(z_x.T[:, :, None], z_b.T[:, None, :])  # (H, m, nb)
        # S has the strides of the transposed z_x, so a product in numpy's default ('K') order would
        # too, and its reshape would copy it (the chunk's largest array); C order reshapes in place
        V = np.multiply(S[..., None], w2[:, None, None, :], order="C").reshape(
            w2.shape[0], m * nb * C
        )
        G = (w1v @ V).reshape(varying.size, m, nb, C)
        D = (Xc[rows][:, None, varying] - Bc[None, :, varying]).transpose(2, 0, 1)  # (dv, m, nb)
        phi[rows[:, None], varying[None, :]] = np.einsum("dmb,dmbc->mdc", D, G, optimize=True) / nb
    return phi


def _shap_values(
    head: Head, X: np.ndarray, B: np.ndarray, method: str, n_pairs: int, seed: int, output: Output
) -> np.ndarray:
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
    method : {"auto", "expected-gradients", "permutation", "exact", "shap-permutation"}, default "auto"
        See the module docstring; ``auto`` is ``exact`` for at most
        :data:`EXACT_MAX_FEATURES` features that vary, else ``permutation``.
        ``expected-gradients`` is exact and needs ``output="logit"``.
    n_permutations : int, default 2
        Antithetic permutation pairs per image (permutation methods).
    seed : int, default 0
        Seeds the permutations (the method's own generator).
    chunk : int, default 32
        Images walked together (memory ``chunk x n_background x H`` floats;
        ``expected-gradients``: ``chunk x n_background x (H + d) x n_classes``).
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
        If ``method``, ``output`` or ``precision`` is unknown, ``n_permutations < 1``,
        ``exact`` is asked for more than 20 features, or ``expected-gradients``
        for probabilities.
    """  # noqa: E501
    fix = "repair those feature rows before explaining"
    X = check_matrix(X, "X", n_columns=head.n_features, fix=fix)
    B = check_matrix(background, "background", n_columns=head.n_features, fix=fix)
    if int(n_permutations) != n_permutations or n_permutations < 1:
        raise ConfigError(f"n_permutations={n_permutations!r}: must be a positive integer")
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: use one of {', '.join(METHODS)}")
    if output not in ("logit", "prob"):
        raise ConfigError(f"output={output!r}: use 'logit' or 'prob'")
    if method == "expected-gradients" and output != "logit":
        raise ConfigError(
            "method='expected-gradients' is exact for the logits only (the softmax is not "
            "piecewise linear along the path); use output='logit' or method='permutation'"
        )
    if precision not in ("float64", "float32"):
        raise ConfigError(f"precision={precision!r}: use 'float64' or 'float32'")
    n_varying = int((np.ptp(np.vstack([X, B]), axis=0) > 0).sum())
    if method == "auto":
        method = "exact" if X.shape[1] <= EXACT_MAX_FEATURES else "permutation"
    if method == "exact" and X.shape[1] > 20:
        raise ConfigError(
            f"method='exact' with {X.shape[1]} features: 2^d evaluations; use 'permutation'"
        )
    t0 = time.perf_counter()
    dtype = np.float32 if precision == "float32" else np.float64
    if method == "permutation":
        values = _walk(head, X, B, int(n_permutations), seed, output, max(1, int(chunk)), dtype)
    elif method == "expected-gradients":
        values = _expected_gradients(head, X, B, max(1, int(chunk)), dtype)
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
        n_permutations=0 if method in ("exact", "expected-gradients") else int(n_permutations),
        seconds=seconds,
    )
    logger.debug(
        "SHAP (%s, %s): %d images x %d features (%d varying) in %.2f s; additivity %s",
        method,
        output,
        X.shape[0],
        X.shape[1],
        n_varying,
        seconds,
        result.additivity_summary(),
    )
    return result


def method_sentence(
    method: str, *, n_permutations: int, precision: str, n_background: int, n_explained: int | None
) -> str:
    """One sentence for a report's methods: how the attributions were computed."""
    images = (
        "every test image"
        if n_explained is None
        else f"up to {n_explained} class-stratified test images (all when the fold has fewer)"
    )
    against = f"against {n_background} background images of the same fold, {precision} arithmetic"
    if method == "expected-gradients":
        return (
            "Attributions: Expected Gradients of the class logits of the head (BatchNorm folded, "
            "dropout off) with respect to the GAP features -- Integrated Gradients from each "
            "background image, averaged; the Aumann-Shapley values of the interventional game, "
            "computed exactly (along a straight path each hidden ReLU switches at most once) -- "
            f"for {images} per fold {against}."
        )
    if method == "permutation":
        return (
            "Attributions: SHAP values of the class logits of the head (BatchNorm folded, dropout "
            "off) with respect to the GAP features, interventional game with an independent "
            f"masker; antithetic permutation sampling ({n_permutations} pairs per image) for "
            f"{images} per fold {against}."
        )
    return (
        f"Attributions: {method} Shapley values of the class logits of the head for {images} per "
        f"fold {against}."
    )
