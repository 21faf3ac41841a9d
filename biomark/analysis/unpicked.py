"""Why a class has no feature the report stands behind.

When none of a class's shortlisted features is a candidate, or stable,
significant and unflagged, :func:`biomark.analysis.picks.class_picks` falls
back to the top-ranked feature, which is not evidence. The reason sits in the
shortlist's rows (``q``, ``stable``, ``stability_basis``, the flags), one row
at a time. :func:`why_unpicked` says it per class, with the figures: whether
no feature separates the class at all, or the features that do are not
reproduced by the folds' networks (a well-matched family that does not reach
the top k in enough folds; a poorly matched one whose members do not agree on
the class's own films), or the stable significant ones are flagged as
shortcuts.

numpy/pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.analysis.inputs import true_where
from biomark.analysis.picks import qualifying
from biomark.config import Criteria

__all__ = ["UNPICKED_COLUMNS", "why_unpicked"]

#: Columns of :func:`why_unpicked`.
UNPICKED_COLUMNS = ("strategy", "class", "shortlisted", "significant", "stable", "why")


def why_unpicked(table: pd.DataFrame, criteria: Criteria, *, top_k: int) -> pd.DataFrame:
    """One row per class of a strategy's candidate table whose pick is not evidence, and why.

    Parameters
    ----------
    table : DataFrame
        :func:`biomark.analysis.biomarkers.candidate_table` of one strategy
        (columns ``class, is_candidate, significant, stable, match_r,
        topk_freq, fold_effect_freq, within_class_r``, the flags).
    criteria : Criteria
        The thresholds the table was judged by (``min_match_r`` as the
        strategy's matching used it).
    top_k : int
        The shortlist's length (the stability of a well-matched family is its
        frequency in the folds' top ``top_k``).

    Returns
    -------
    DataFrame
        Columns :data:`UNPICKED_COLUMNS`: counts over the class's shortlist,
        and ``why`` in a sentence; no row for a class with a candidate or a
        stable, significant, unflagged feature.

    Examples
    --------
    >>> rows = pd.DataFrame({
    ...     "strategy": "scratch", "class": "Fibrosis", "is_candidate": False,
    ...     "significant": True, "stable": False, "match_r": [0.3, 0.2],
    ...     "topk_freq": [2 / 3, 1 / 3], "fold_effect_freq": 1.0, "within_class_r": [0.44, 0.1],
    ...     "flag_source": False, "flag_outside_lungs": False})
    >>> why = why_unpicked(rows, Criteria(), top_k=20).at[0, "why"]
    >>> print(why)  # doctest: +NORMALIZE_WHITESPACE
    all 2 separate Fibrosis from the other classes, but none is stable: the folds' members of
    its 2 poorly matched families agree on the Fibrosis films at r 0.10 to 0.44 (0.5 needed),
    though 2 show the class effect in >= 70% of folds: each fold's network separates Fibrosis
    with units of its own, so no one feature stands for it across the folds
    """
    out = []
    for cls, sub in table.groupby("class", sort=False):
        if true_where(sub["is_candidate"]).any() or qualifying(sub).any():
            continue  # class_picks picks a candidate or a qualifying feature here
        significant = true_where(sub["significant"])
        stable = true_where(sub["stable"])
        out.append(
            {
                "strategy": str(sub["strategy"].iloc[0]) if "strategy" in sub.columns else "",
                "class": str(cls),
                "shortlisted": len(sub),
                "significant": int(significant.sum()),
                "stable": int(stable.sum()),
                "why": _why(str(cls), sub, significant, stable, criteria, top_k),
            }
        )
    return pd.DataFrame(out, columns=list(UNPICKED_COLUMNS))


def _why(
    cls: str,
    sub: pd.DataFrame,
    significant: pd.Series,
    stable: pd.Series,
    criteria: Criteria,
    top_k: int,
) -> str:
    n, n_sig = len(sub), int(significant.sum())
    if n_sig == 0:
        return (
            f"none of its {n} shortlisted features separates {cls} from the other classes "
            f"(q < {criteria.alpha:g})"
        )
    if (significant & stable).any():
        return (
            f"its {int((significant & stable).sum())} stable significant feature(s) are all "
            "flagged as shortcuts (outside the lungs or carrying the source; see flags)"
        )
    rows = sub[significant]
    lead = (
        f"all {n_sig} separate {cls} from the other classes"
        if n_sig == n
        else f"{n_sig} of its {n} shortlisted features separate {cls} from the other classes"
    )
    if rows["stable"].isna().all():
        return f"{lead}, but their stability across the folds is untested (see stability_basis)"
    match = rows["match_r"].astype(float)
    well = rows[match >= criteria.min_match_r]
    poor = rows[~(match >= criteria.min_match_r)]
    parts = []
    if len(well):
        best = float(np.nanmax(well["topk_freq"].astype(float), initial=0.0))
        one = len(well) == 1
        parts.append(
            f"its {len(well)} well-matched famil{'y reaches' if one else 'ies reach'} the "
            f"top {top_k} (themselves or a near-copy) in at most {best:.0%} of folds "
            f"({criteria.min_stability:.0%} needed)"
        )
    own_units = ""
    if len(poor):
        r = poor["within_class_r"].astype(float)
        r = r[np.isfinite(r)]
        effect = int((poor["fold_effect_freq"].astype(float) >= criteria.min_stability).sum())
        if len(r):
            span = f"{r.min():.2f}" if len(r) == 1 else f"{r.min():.2f} to {r.max():.2f}"
            parts.append(
                f"the folds' members of its {len(poor)} poorly matched "
                f"famil{'y' if len(poor) == 1 else 'ies'} agree on the {cls} films at r {span} "
                f"({criteria.min_match_r:g} needed), though {effect} "
                f"show{'s' if effect == 1 else ''} the class effect in "
                f">= {criteria.min_stability:.0%} of folds"
            )
            if effect and r.max() < criteria.min_match_r:
                own_units = (
                    f": each fold's network separates {cls} with units of its own, so no one "
                    "feature stands for it across the folds"
                )
        else:
            parts.append(
                f"of its {len(poor)} poorly matched famil{'y' if len(poor) == 1 else 'ies'}, "
                f"{effect} show{'s' if effect == 1 else ''} the class effect in "
                f">= {criteria.min_stability:.0%} of folds and "
                "none keeps its radiomic family across them"
            )
    return f"{lead}, but none is stable: " + "; ".join(parts) + own_units
