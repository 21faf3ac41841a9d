"""Images the report's model passes see: lungs or outside filled with a neutral image."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.features.report_inputs import fill_region


def test_fill_region_replaces_only_the_chosen_side() -> None:
    images = np.full((1, 4, 4), 200, dtype=np.uint8)
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    masks[0, 1:3, 1:3] = 1
    fill = np.full((4, 4), 10.4)
    lungs = fill_region(images, masks, fill, inside=True)
    outside = fill_region(images, masks, fill, inside=False)
    assert (lungs[0][masks[0] > 0] == 10).all() and (lungs[0][masks[0] == 0] == 200).all()
    assert (outside[0][masks[0] > 0] == 200).all() and (outside[0][masks[0] == 0] == 10).all()
    assert lungs.dtype == np.uint8
    with pytest.raises(ValueError, match="do not match"):
        fill_region(images, masks[:, :3], fill, inside=True)


def test_swap_lungs_pastes_the_donors_lungs_over_both_masks() -> None:
    from biomark.features.report_inputs import swap_lungs

    images = np.stack([np.full((4, 4), 10, np.uint8), np.full((4, 4), 200, np.uint8)])
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 1, 1] = 1  # image 0's lung
    masks[1, 2, 2] = 1  # image 1's lung, elsewhere
    composite = swap_lungs(images, masks, np.array([[0, 1]]))
    assert composite.shape == (1, 4, 4) and composite.dtype == np.uint8
    assert (
        composite[0, 1, 1] == 200 and composite[0, 2, 2] == 200
    )  # none of 0's lungs left, all of 1's in
    assert (
        np.delete(composite[0].ravel(), [5, 10]) == 10
    ).all()  # everything else is image 0's own
    with pytest.raises(ValueError, match="differ in shape"):
        swap_lungs(images, masks[:, :3], np.array([[0, 1]]))


def test_swap_margin_grows_the_pasted_region_within_each_composite() -> None:
    from biomark.features.report_inputs import swap_lungs

    images = np.stack([np.full((7, 7), 10, np.uint8), np.full((7, 7), 200, np.uint8)])
    masks = np.zeros((2, 7, 7), dtype=np.uint8)
    masks[:, 3, 3] = 1
    pairs = np.array([[0, 1], [1, 0]])
    grown = swap_lungs(images, masks, pairs, margin=1)
    expected = np.zeros((7, 7), bool)
    expected[3, 2:5] = expected[2:5, 3] = True  # the lung pixel and its 4 neighbours
    assert ((grown[0] == 200) == expected).all() and ((grown[1] == 10) == expected).all()
    assert (
        swap_lungs(images, masks, pairs, margin=3)[0] == 200
    ).sum() == 25  # a diamond of radius 3
    with pytest.raises(ValueError, match="margin"):
        swap_lungs(images, masks, pairs, margin=-1)
