"""The classifier head as a pure-numpy function: forward pass and analytic gradient.

The paper's head on the 1280 GAP features ``g`` is
``Dense(H, relu) -> BatchNorm -> Dropout -> Dense(n, softmax)``
(layers ``head_dense``, ``head_bn``, ``head_dropout``, ``probs`` of
:mod:`biomark.models.mobilenet`). At inference dropout is the identity and
batch normalisation is the affine map ``u = s * h + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``, so the head is::

    z      = g @ W1 + b1                  (n, H)   pre-activations
    h      = max(z, 0)                              hidden units
    logits = h @ (s[:, None] * W2) + (b2 + t @ W2)  (n, n_classes)
    probs  = softmax(logits)

:func:`biomark.train.head.extract_head` reads these arrays from a saved
``model.keras``; everything here is numpy only, so attributions and Grad-CAM
work on any Keras backend (or without Keras). The gradient is analytic:
``d logit_c / d g = (1[z > 0] * W2f[:, c]) @ W1.T`` and, for probabilities,
``d p_c / d g = sum_k p_c (delta_ck - p_k) d logit_k / d g``. At ``z = 0`` the
ReLU's derivative is taken as 0 (as TensorFlow and JAX do).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> head = Head.random(6, 4, 3, rng=rng)
>>> g = rng.random((5, 6))
>>> head.probs(g).sum(axis=1).round(6).tolist()
[1.0, 1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from biomark.exceptions import DataError

__all__ = ["HEAD_ARRAYS", "Head", "Output"]

logger = logging.getLogger(__name__)

#: Keys of the arrays :func:`biomark.train.head.extract_head` returns.
HEAD_ARRAYS: tuple[str, ...] = ("kernel", "bias", "bn_scale", "bn_shift", "out_kernel", "out_bias")

Output = Literal["logit", "prob"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Head:
    """The inference-time head, BatchNorm folded into the output layer.

    Attributes
    ----------
    w1 : ndarray of shape (n_features, n_hidden)
    b1 : ndarray of shape (n_hidden,)
    w2 : ndarray of shape (n_hidden, n_classes)
        Output kernel with the BatchNorm scale folded in (``s[:, None] * W2``).
    b2 : ndarray of shape (n_classes,)
        Output bias with the BatchNorm shift folded in (``b2 + t @ W2``).
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    # ------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, where: str = "head arrays") -> Head:
        """Build from the arrays of :func:`biomark.train.head.extract_head`.

        Parameters
        ----------
        arrays : mapping of str to ndarray
            ``kernel`` (d, H), ``bias`` (H,), ``bn_scale`` (H,), ``bn_shift``
            (H,), ``out_kernel`` (H, n), ``out_bias`` (n,).
        where : str
            Named in error messages (e.g. the model file).

        Raises
        ------
        DataError
            If an array is missing, has the wrong shape, or is not finite.
        """
        missing = [k for k in HEAD_ARRAYS if k not in arrays]
        if missing:
            raise DataError(
                f"{where}: missing head array(s) {missing}; extract them with "
                "biomark.train.head.extract_head"
            )
        a = {k: np.asarray(arrays[k], dtype=np.float64) for k in HEAD_ARRAYS}
        d, h = a["kernel"].shape if a["kernel"].ndim == 2 else (-1, -1)
        n = a["out_kernel"].shape[1] if a["out_kernel"].ndim == 2 else -1
        expected = {
            "kernel": (d, h),
            "bias": (h,),
            "bn_scale": (h,),
            "bn_shift": (h,),
            "out_kernel": (h, n),
            "out_bias": (n,),
        }
        for key, shape in expected.items():
            if a[key].shape != shape or min(shape) < 1:
                raise DataError(
                    f"{where}: head array {key!r} has shape {a[key].shape}, expected {shape}"
                )
            if not np.isfinite(a[key]).all():
                raise DataError(
                    f"{where}: head array {key!r} holds NaN or infinite values; the model is broken"
                )
        w2 = a["bn_scale"][:, None] * a["out_kernel"]
        b2 = a["out_bias"] + a["bn_shift"] @ a["out_kernel"]
        return cls(a["kernel"], a["bias"], w2, b2)

    @classmethod
    def random(
        cls,
        n_features: int,
        n_hidden: int,
        n_classes: int,
        *,
        rng: np.random.Generator | None = None,
    ) -> Head:
        """A random head (He-scaled weights, small biases), for tests and benchmarks."""
        rng = np.random.default_rng(0) if rng is None else rng
        return cls(
            rng.standard_normal((n_features, n_hidden)) * np.sqrt(2.0 / n_features),
            0.1 * rng.standard_normal(n_hidden),
            rng.standard_normal((n_hidden, n_classes)) * np.sqrt(1.0 / n_hidden),
            0.1 * rng.standard_normal(n_classes),
        )

    # ------------------------------------------------------------- properties
    @property
    def n_features(self) -> int:
        """Input dimension ``d`` (1280 for MobileNetV2)."""
        return int(self.w1.shape[0])

    @property
    def n_hidden(self) -> int:
        """Hidden units ``H`` (``model.head_units``; 2500 in the paper)."""
        return int(self.w1.shape[1])

    @property
    def n_classes(self) -> int:
        """Output classes."""
        return int(self.w2.shape[1])

    # ---------------------------------------------------------------- forward
    def _check(self, g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != self.n_features:
            raise DataError(f"GAP features must have shape (n, {self.n_features}), got {g.shape}")
        return g

    def pre_activations(self, g: np.ndarray) -> np.ndarray:
        """``z = g @ W1 + b1``, shape (n, n_hidden)."""
        return self._check(g) @ self.w1 + self.b1

    def logits(self, g: np.ndarray) -> np.ndarray:
        """Class logits (pre-softmax), shape (n, n_classes)."""
        return np.maximum(self.pre_activations(g), 0.0) @ self.w2 + self.b2

    def probs(self, g: np.ndarray) -> np.ndarray:
        """Softmax probabilities, shape (n, n_classes)."""
        return _softmax(self.logits(g))

    def forward(self, g: np.ndarray, output: Output = "logit") -> np.ndarray:
        """Logits or probabilities, shape (n, n_classes).

        Raises
        ------
        ValueError
            If ``output`` is not ``"logit"`` or ``"prob"``.
        """
        if output == "logit":
            return self.logits(g)
        if output == "prob":
            return self.probs(g)
        raise ValueError(f"output={output!r}: use 'logit' or 'prob'")

    # --------------------------------------------------------------- gradient
    def gradient(
        self, g: np.ndarray, cls: int | np.ndarray, output: Output = "logit"
    ) -> np.ndarray:
        """Analytic gradient of one class's output with respect to the GAP features.

        Parameters
        ----------
        g : ndarray of shape (n, n_features)
        cls : int or ndarray of shape (n,)
            Class index, the same for every row or one per row (e.g. the
            predicted class).
        output : {"logit", "prob"}, default "logit"

        Returns
        -------
        ndarray of shape (n, n_features)
            ``d output[cls] / d g`` per row.
        """
        g = self._check(g)
        n = g.shape[0]
        cls_arr = np.broadcast_to(np.asarray(cls, dtype=np.int64), (n,))
        if cls_arr.min(initial=0) < 0 or cls_arr.max(initial=0) >= self.n_classes:
            raise ValueError(
                f"class index out of range [0, {self.n_classes - 1}]: {np.unique(cls_arr).tolist()}"
            )
        active = (g @ self.w1 + self.b1) > 0.0  # (n, H)
        if output == "logit":
            coef = active * self.w2[:, cls_arr].T  # (n, H)
            return coef @ self.w1.T
        if output != "prob":
            raise ValueError(f"output={output!r}: use 'logit' or 'prob'")
        p = self.probs(g)  # (n, C)
        p_c = p[np.arange(n), cls_arr]
        # d p_c / d logit_k = p_c (delta_ck - p_k)
        dlogit = -p_c[:, None] * p
        dlogit[np.arange(n), cls_arr] += p_c
        coef = active * (dlogit @ self.w2.T)  # (n, H)
        return coef @ self.w1.T
