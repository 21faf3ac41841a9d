"""An HTML gallery of lung-mask outlines on their films, worst first, so leaks are seen.

:func:`mask_gallery_html` draws each chosen mask's outline on its image (red
for a flagged mask, green for a plausible one) and returns self-contained HTML
(thumbnails inlined as base64 PNG). The order puts what most needs a look
first: flagged masks (most flags first), then plausible masks from the least
lung-like up (lowest ``contrast``, then lowest ``fit_score``), so the borderline
accepted masks are never hidden behind the good ones.
"""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pandas as pd
from scipy import ndimage

from biomark.report.page import escape

__all__ = [
    "gallery_html",
    "gallery_order",
    "mask_gallery_html",
    "outline_thumbnail",
    "thumbnail_figure",
]

logger = logging.getLogger(__name__)

_RED, _GREEN = (230, 50, 50), (40, 210, 80)


def gallery_order(table: pd.DataFrame) -> np.ndarray:
    """Row positions of ``table`` (a lung-mask table), worst plausibility first.

    Parameters
    ----------
    table : DataFrame
        With ``plausible`` and ``flags``; ``contrast`` and ``fit_score`` are
        used when present.

    Returns
    -------
    ndarray of int, shape (len(table),)

    Examples
    --------
    Implausible masks first, the most flags first among them:

    >>> masks = pd.DataFrame(
    ...     {
    ...         "image_id": ["a", "b", "c", "d"],
    ...         "plausible": [True, False, False, True],
    ...         "flags": ["", "small_area", "small_area;asymmetric", None],
    ...     }
    ... )
    >>> masks["image_id"].to_numpy()[gallery_order(masks)].tolist()
    ['c', 'b', 'a', 'd']
    """
    flags = table["flags"].fillna("").astype(str)
    n_flags = flags.map(lambda f: len([x for x in f.split(";") if x]))
    key = pd.DataFrame(
        {
            "plausible": table["plausible"].astype(bool).to_numpy(),
            "n_flags": -n_flags.to_numpy(),
            "contrast": pd.to_numeric(
                table.get("contrast", pd.Series(np.nan, index=table.index)), errors="coerce"
            )
            .fillna(np.inf)
            .to_numpy(),
            "fit": pd.to_numeric(
                table.get("fit_score", pd.Series(np.nan, index=table.index)), errors="coerce"
            )
            .fillna(np.inf)
            .to_numpy(),
            "position": np.arange(len(table)),
        }
    )
    return key.sort_values(["plausible", "n_flags", "contrast", "fit", "position"], kind="stable")[
        "position"
    ].to_numpy()


def outline_thumbnail(image: np.ndarray, mask: np.ndarray, flagged: bool, side: int = 150) -> bytes:
    """PNG bytes: ``image`` in grey with the outline of ``mask`` in red (flagged) or green.

    Parameters
    ----------
    image : ndarray of shape (S, S), uint8
    mask : ndarray of shape (S, S)
        Non-zero = lung.
    flagged : bool
    side : int, default 150
        Thumbnail side in pixels.

    Returns
    -------
    bytes
    """
    from PIL import Image

    lung = np.asarray(mask) > 0
    edge = ndimage.binary_dilation(lung & ~ndimage.binary_erosion(lung))
    rgb = np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)
    rgb[edge] = _RED if flagged else _GREEN
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_gallery_html(
    images: np.ndarray,
    masks: np.ndarray,
    table: pd.DataFrame,
    *,
    n: int = 24,
    side: int = 150,
) -> str:
    """A gallery of the ``n`` masks most in need of a look (see the module docstring).

    Parameters
    ----------
    images : array of shape (n_images, S, S), uint8
        Row i of ``table`` is ``images[i]`` (memory maps are fine).
    masks : array of shape (n_images, S, S)
    table : DataFrame of shape (n_images, ...)
        A lung-mask table: ``image_id``, ``flags``, ``plausible`` (and
        ``area_fraction``, ``contrast``, ``fit_score``, ``mask_source`` when
        present; the source is captioned only when it differs between rows).
    n : int, default 24
    side : int, default 150

    Returns
    -------
    str
        A ``<div>`` of ``<figure>`` elements; empty string for an empty table.

    Raises
    ------
    ValueError
        If images, masks and table disagree in length.
    """
    if not (len(images) == len(masks) == len(table)):
        raise ValueError(
            f"mask gallery: {len(images)} images, {len(masks)} masks, {len(table)} table rows"
        )
    if len(table) == 0:
        return ""
    cells = []
    show_source = "mask_source" in table.columns and table["mask_source"].nunique() > 1
    for row in gallery_order(table)[:n]:
        info = table.iloc[row]
        flags = str(info.get("flags", "") or "")
        flagged = not bool(info["plausible"])
        png = outline_thumbnail(images[row], masks[row], flagged, side)
        words = [str(info["image_id"])]
        if "area_fraction" in info:
            words.append(f"area {float(info['area_fraction']):.2f}")
        if "contrast" in info and pd.notna(info["contrast"]):
            words.append(f"contrast {float(info['contrast']):.2f}")
        if show_source:
            words.append(str(info["mask_source"]))
        words.append(flags.replace(";", ", ") if flagged else "plausible")
        cells.append(thumbnail_figure(png, str(info["image_id"]), " · ".join(words), flagged, side))
    return gallery_html(cells)


def thumbnail_figure(
    png: bytes, image_id: str, caption: str, flagged: bool, side: int = 150
) -> str:
    """One ``<figure>``: a PNG thumbnail framed red (flagged) or green, with an escaped caption."""
    colour = "#c0392b" if flagged else "#2e7d32"
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure style="margin:0;width:{side}px"><img alt="lung mask of {escape(image_id)}" '
        f'src="data:image/png;base64,{data}" style="width:{side}px;height:{side}px;border:2px '
        f'solid {colour}"><figcaption '
        f'style="font-size:.72em;overflow-wrap:anywhere">{escape(caption)}</figcaption></figure>'
    )


def gallery_html(figures: list[str]) -> str:
    """The figures in a wrapping row."""
    return (
        '<div class="mask-gallery" style="display:flex;flex-wrap:wrap;gap:8px">'
        + "".join(figures)
        + "</div>"
    )
