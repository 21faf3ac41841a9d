"""Lung mass of activation maps, display upsampling, and Grad-CAM from the numpy head."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.analysis.head import Head
from biomark.analysis.localisation import (
    attainable_lung_fraction,
    cell_fractions,
    grad_cam,
    lung_mass,
    occlusion_effects,
    upsample,
)


def test_cell_fractions_of_known_masks() -> None:
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[0, :, :4] = 1  # left half
    masks[1, :2, :2] = 255  # a quarter of the top-left cell
    fr = cell_fractions(masks, (2, 2))
    np.testing.assert_allclose(fr[0], [[1, 0], [1, 0]])
    np.testing.assert_allclose(fr[1], [[0.25, 0], [0, 0]])
    # 7 x 7 cells on 200 px: uneven blocks, the lung share of the whole image is kept
    m = (np.random.default_rng(0).random((1, 200, 200)) > 0.5).astype(np.uint8)
    f7 = cell_fractions(m, (7, 7))
    edges = np.round(np.linspace(0, 200, 8)).astype(int)
    area = np.outer(np.diff(edges), np.diff(edges))
    assert (f7[0] * area).sum() == pytest.approx(m.sum())
    with pytest.raises(ValueError, match="grid"):
        cell_fractions(masks, (9, 9))


def test_lung_mass_inside_and_total() -> None:
    maps = np.zeros((1, 2, 2, 2))
    maps[0, 0] = [[3, 1], [0, 0]]  # all in the left column except 1
    maps[0, 1] = [[0, 2], [0, 2]]  # all on the right
    fr = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    inside, total = lung_mass(maps, fr)
    np.testing.assert_allclose(inside, [[3.0, 0.0]])
    np.testing.assert_allclose(total, [[4.0, 4.0]])
    with pytest.raises(ValueError, match="negative"):
        lung_mass(-maps, fr)


def test_upsample_keeps_constants_and_cell_centres() -> None:
    np.testing.assert_allclose(upsample(np.full((2, 2), 3.0), (16, 16)), 3.0)
    up = upsample(np.array([[0.0, 1.0]]), (1, 4))
    assert up[0, 0] == 0.0 and up[0, -1] == 1.0 and np.all(np.diff(up[0]) >= 0)


def test_grad_cam_weights_equal_the_map_gradient_by_finite_differences() -> None:
    rng = np.random.default_rng(0)
    K, h, w = 6, 3, 3
    head = Head.random(K, 8, 3, rng=rng)
    A = rng.random((2, K, h, w))
    gap = A.mean(axis=(2, 3))
    cls = np.array([2, 0])
    grad = head.gradient(gap, cls)
    eps = 1e-6
    for n in range(2):
        for k in range(K):
            for i, j in ((0, 0), (2, 1)):
                up, down = A[n].copy(), A[n].copy()
                up[k, i, j] += eps
                down[k, i, j] -= eps
                y = lambda a: head.logits(a.mean(axis=(1, 2))[None])[0, cls[n]]  # noqa: E731, B023
                numeric = (y(up) - y(down)) / (2 * eps)
                assert numeric == pytest.approx(grad[n, k] / (h * w), abs=1e-7)
    cam = grad_cam(A, grad)
    expected = np.maximum(np.einsum("nk,nkij->nij", grad / (h * w), A), 0)
    np.testing.assert_allclose(cam, expected)
    assert cam.shape == (2, h, w) and (cam >= 0).all()


def test_attainable_lung_fraction_grows_with_the_map_size() -> None:
    masks = np.zeros((2, 64, 64), dtype=np.uint8)
    masks[:, 10:54, 6:28] = 1
    masks[:, 10:54, 36:58] = 1
    coarse = attainable_lung_fraction(masks, (2, 2))
    fine = attainable_lung_fraction(masks, (8, 8))
    assert (
        coarse.shape == (2,) and coarse.max() < 0.5
    )  # 64 px, MobileNetV2's last map: cannot show 0.5
    assert fine.min() == 1.0  # a cell wholly inside a lung


def test_occlusion_effects_split_a_feature_between_lungs_and_outside() -> None:
    g = np.array([[2.0, 1.0, 3.0], [1.0, 0.0, 2.0]])
    lungs_filled = np.array([[0.5, 1.0, 2.0], [1.0, 0.0, 1.0]])  # feature 0 depends on the lungs
    outside_filled = np.array(
        [[2.0, 0.0, 2.0], [1.0, 0.0, 1.0]]
    )  # feature 1 on the rest, 2 on both
    inside, total = occlusion_effects(g, lungs_filled, outside_filled)
    np.testing.assert_allclose(inside, [[1.5, 0.0, 1.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(total, [[1.5, 1.0, 2.0], [0.0, 0.0, 2.0]])
    with pytest.raises(ValueError, match="same shape"):
        occlusion_effects(g, lungs_filled[:1], outside_filled)
