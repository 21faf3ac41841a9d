"""The worst-first lung-mask gallery (biomark.report.mask_gallery)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomark.report.mask_gallery import gallery_order, mask_gallery_html, outline_thumbnail


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["ok-clear", "bad-one-flag", "ok-faint", "bad-two-flags", "ok-nan"],
            "flags": ["", "touches_top", "", "one_lung;low_contrast", ""],
            "plausible": [True, False, True, False, True],
            "area_fraction": [0.3, 0.2, 0.25, 0.1, 0.3],
            "contrast": [0.40, 0.20, 0.15, 0.05, np.nan],
            "fit_score": [0.8, 0.5, 0.6, 0.2, np.nan],
        }
    )


def test_order_is_flagged_first_then_least_lung_like() -> None:
    assert gallery_order(_table()).tolist() == [3, 1, 2, 0, 4]


def test_outline_is_red_for_flagged_and_green_for_plausible() -> None:
    image = np.full((40, 40), 100, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    for flagged, channel in ((True, 0), (False, 1)):
        thumb = np.asarray(Image.open(io.BytesIO(outline_thumbnail(image, mask, flagged, side=40))))
        edge = thumb[10, 20]  # on the outline
        assert edge[channel] > 150 and edge[channel] == edge.max()
        assert tuple(thumb[20, 20]) == (100, 100, 100)  # inside untouched


def test_gallery_html_has_one_figure_per_mask_worst_first() -> None:
    table = _table()
    images = np.full((5, 32, 32), 90, np.uint8)
    masks = np.zeros((5, 32, 32), np.uint8)
    masks[:, 8:24, 4:14] = masks[:, 8:24, 18:28] = 1
    html = mask_gallery_html(images, masks, table, n=4, side=64)
    ids = re.findall(r'alt="lung mask of ([^"]+)"', html)
    assert ids == ["bad-two-flags", "bad-one-flag", "ok-faint", "ok-clear"]
    assert html.count("#c0392b") == 2 and html.count("#2e7d32") == 2
    assert "one_lung, low_contrast" in html and "contrast 0.15" in html
    png = re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(png))).size == (64, 64)
    assert mask_gallery_html(images[:0], masks[:0], table.iloc[:0]) == ""
    with pytest.raises(ValueError, match="table rows"):
        mask_gallery_html(images, masks[:3], table)
