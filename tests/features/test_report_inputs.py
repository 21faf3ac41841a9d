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
