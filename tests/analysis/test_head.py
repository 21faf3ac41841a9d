"""The numpy head: BatchNorm folding, softmax, and the analytic gradient against finite
differences."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.head import HEAD_ARRAYS, Head
from biomark.exceptions import DataError


def _arrays(rng: np.random.Generator, d: int = 7, h: int = 5, n: int = 3) -> dict[str, np.ndarray]:
    return {
        "kernel": rng.standard_normal((d, h)),
        "bias": 0.1 * rng.standard_normal(h),
        "bn_scale": rng.uniform(0.5, 2.0, h),
        "bn_shift": rng.standard_normal(h),
        "out_kernel": rng.standard_normal((h, n)),
        "out_bias": rng.standard_normal(n),
    }


def test_from_arrays_folds_batchnorm_into_the_output_layer() -> None:
    rng = np.random.default_rng(0)
    a = _arrays(rng)
    g = rng.random((6, 7))
    hidden = np.maximum(g @ a["kernel"] + a["bias"], 0)
    expected = (a["bn_scale"] * hidden + a["bn_shift"]) @ a["out_kernel"] + a["out_bias"]
    head = Head.from_arrays(a)
    np.testing.assert_allclose(head.logits(g), expected, rtol=1e-12)
    p = head.probs(g)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(
        p, np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True), rtol=1e-12
    )
    assert (head.n_features, head.n_hidden, head.n_classes) == (7, 5, 3)


@pytest.mark.parametrize("output", ["logit", "prob"])
def test_gradient_matches_finite_differences(output: str) -> None:
    rng = np.random.default_rng(1)
    head = Head.from_arrays(_arrays(rng, d=9, h=12, n=4))
    g = rng.random((5, 9))
    cls = np.array([0, 1, 2, 3, 1])
    analytic = head.gradient(g, cls, output)
    eps = 1e-6
    numeric = np.zeros_like(g)
    for j in range(g.shape[1]):
        up, down = g.copy(), g.copy()
        up[:, j] += eps
        down[:, j] -= eps
        diff = head.forward(up, output) - head.forward(down, output)
        numeric[:, j] = diff[np.arange(5), cls] / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, atol=1e-6)


def test_bad_arrays_and_inputs_are_named() -> None:
    rng = np.random.default_rng(2)
    a = _arrays(rng)
    with pytest.raises(DataError, match="missing head array"):
        Head.from_arrays({k: v for k, v in a.items() if k != "bn_scale"})
    bad = dict(a, out_bias=np.zeros(5))
    with pytest.raises(DataError, match="out_bias"):
        Head.from_arrays(bad, where="fold_00/model.keras")
    with pytest.raises(DataError, match=r"shape \(n, 7\)"):
        Head.from_arrays(a).logits(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="output"):
        Head.from_arrays(a).forward(np.zeros((1, 7)), "softmax")  # type: ignore[arg-type]
    assert set(HEAD_ARRAYS) == set(a)
