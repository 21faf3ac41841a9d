"""Which sources each class comes from, and whether class and source can be told apart.

When every image of a class comes from one source (the paper's Edema,
Effusion, Emphysema and Fibrosis all from NIH), nothing in the data can
separate "looks like Edema" from "looks like an NIH film": a classifier may
learn either, and a leave-one-source-out test cannot be run for that class
(holding its source out removes the class from training). These pure
functions (pandas only) give the facts; the report words them, and
:func:`biomark.data.folds.check_folds` refuses ``cv.grouping: source``
for such classes.

Examples
--------
>>> import pandas as pd
>>> manifest = pd.DataFrame({
...     "label": ["COVID-19"] * 3 + ["Edema"] * 2 + ["Normal"] * 4,
...     "source": ["cohen", "cohen", "actualmed", "nih", "nih", "kermany", "kermany", "kermany", "nih"],
... })
>>> audit = class_sources(manifest)
>>> audit[["class", "sources", "single_source", "confounded"]].to_dict("records")[1]
{'class': 'Edema', 'sources': 'nih:2', 'single_source': True, 'confounded': True}
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["AUDIT_COLUMNS", "DOMINANT_SHARE", "class_sources", "source_table"]

#: A class with at least this share of its images from one source counts as confounded with it.
DOMINANT_SHARE: float = 0.9

AUDIT_COLUMNS: tuple[str, ...] = (
    "class",
    "n_images",
    "n_sources",
    "sources",
    "dominant_source",
    "dominant_share",
    "exclusive_share",
    "single_source",
    "confounded",
)


def _classes(manifest: pd.DataFrame, classes: Sequence[str] | None) -> list[str]:
    present = [str(c) for c in pd.unique(manifest["label"].astype(str))]
    if classes is None:
        return present
    return [str(c) for c in classes if str(c) in set(present)]


def source_table(manifest: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Images per class (rows) and source (columns).

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs ``label`` and ``source``.
    classes : sequence of str, optional
        Row order (e.g. ``Dataset.classes``); classes without images are left
        out. Default: order of first appearance.

    Returns
    -------
    DataFrame of shape (n_classes, n_sources), int
        Sources sorted by name.
    """
    table = pd.crosstab(manifest["label"].astype(str), manifest["source"].astype(str))
    table = table.loc[_classes(manifest, classes)]
    table.index.name, table.columns.name = "class", "source"
    return table.astype(int)


def class_sources(
    manifest: pd.DataFrame,
    classes: Sequence[str] | None = None,
    *,
    dominant_share: float = DOMINANT_SHARE,
) -> pd.DataFrame:
    """Per class: its sources and counts, and whether it is confounded with its source.

    Parameters
    ----------
    manifest : DataFrame of shape (n_images, ...)
        Needs ``label`` and ``source``.
    classes : sequence of str, optional
        Row order (see :func:`source_table`).
    dominant_share : float, default :data:`DOMINANT_SHARE`
        Share of a class's images from one source at or above which the
        class counts as confounded with that source.

    Returns
    -------
    DataFrame with columns :data:`AUDIT_COLUMNS`, one row per class
        ``sources`` is ``"kermany:95, cohen:5"`` (largest first);
        ``dominant_source`` / ``dominant_share`` the largest source and its
        share; ``exclusive_share`` the share of the class's images that come
        from sources holding no other class (there, source alone names the
        class); ``single_source`` is True when one source supplies every
        image (its features cannot be separated from that source, and it
        cannot be tested on a held-out source); ``confounded`` is
        ``single_source`` or ``dominant_share >= dominant_share``.
    """
    table = source_table(manifest, classes)
    classes_per_source = (table > 0).sum(axis=0)
    exclusive = classes_per_source[classes_per_source == 1].index
    rows = []
    for name, counts in table.iterrows():
        counts = counts[counts > 0].sort_values(ascending=False, kind="stable")
        total = int(counts.sum())
        share = float(counts.iloc[0]) / total
        rows.append(
            {
                "class": str(name),
                "n_images": total,
                "n_sources": len(counts),
                "sources": ", ".join(f"{source}:{int(n)}" for source, n in counts.items()),
                "dominant_source": str(counts.index[0]),
                "dominant_share": share,
                "exclusive_share": float(counts[counts.index.isin(exclusive)].sum()) / total,
                "single_source": len(counts) == 1,
                "confounded": len(counts) == 1 or share >= dominant_share,
            }
        )
    return pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
