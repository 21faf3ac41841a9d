"""Why a class has no feature the report stands behind (biomark.analysis.unpicked)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from biomark.analysis.unpicked import UNPICKED_COLUMNS, why_unpicked
from biomark.config import Criteria


def _rows(cls: str, n: int, **columns: object) -> pd.DataFrame:
    """``n`` shortlisted rows of one class: significant, unstable, poorly matched, unflagged."""
    base: dict[str, object] = {
        "strategy": "scratch",
        "class": cls,
        "feature": [f"u{cls[:2]}{i:02d}" for i in range(n)],
        "is_candidate": False,
        "significant": True,
        "stable": False,
        "match_r": 0.2,
        "topk_freq": 1 / 3,
        "fold_effect_freq": 1.0,
        "within_class_r": np.linspace(0.0, 0.4, n),
        "flag_source": False,
        "flag_outside_lungs": False,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_each_kind_of_unpicked_class_gets_its_reason_and_a_picked_class_none() -> None:
    table = pd.concat(
        [
            _rows("Edema", 3, is_candidate=[True, False, False]),  # picked: a candidate
            _rows("Effusion", 3, stable=True),  # picked: stable, significant, unflagged
            _rows("Fibrosis", 4),  # each network has units of its own
            _rows("Normal", 2, significant=False),  # nothing separates it
            _rows("Emphysema", 2, stable=True, flag_outside_lungs=[True, True]),
            _rows("COVID-19", 2, match_r=0.9, topk_freq=[1 / 3, 2 / 3]),  # well matched, unranked
            _rows("Pneumonia", 2, stable=pd.NA),  # stability untested
        ],
        ignore_index=True,
    )
    frame = why_unpicked(table, Criteria(), top_k=20)
    assert list(frame.columns) == list(UNPICKED_COLUMNS)
    out = frame.set_index("class")
    assert set(out.index) == {"Fibrosis", "Normal", "Emphysema", "COVID-19", "Pneumonia"}
    fibrosis = out.loc["Fibrosis"]
    assert (fibrosis["shortlisted"], fibrosis["significant"], fibrosis["stable"]) == (4, 4, 0)
    assert "agree on the Fibrosis films at r 0.00 to 0.40 (0.5 needed)" in fibrosis["why"]
    assert "though 4 show the class effect" in fibrosis["why"]
    assert fibrosis["why"].endswith("no one feature stands for it across the folds")
    assert out.at["Normal", "why"].startswith("none of its 2 shortlisted features separates Normal")
    assert "flagged as shortcuts" in out.at["Emphysema", "why"]
    assert (
        "2 well-matched families reach the top 20 (themselves or a near-copy) in at most 67% "
        "of folds" in (out.at["COVID-19", "why"])
    )
    assert "units of its own" not in out.at["COVID-19", "why"]
    assert "untested" in out.at["Pneumonia", "why"]


def test_members_that_agree_somewhere_are_not_called_units_of_their_own() -> None:
    """One poorly matched family agrees at 0.6 but lacks the class effect in enough folds: the
    figures are given, without the conclusion that every network has units of its own."""
    table = _rows("Fibrosis", 2, within_class_r=[0.6, 0.1], fold_effect_freq=[1 / 3, 1 / 3])
    why = why_unpicked(table, Criteria(), top_k=20).at[0, "why"]
    assert "r 0.10 to 0.60" in why and "though 0 show the class effect" in why
    assert "units of its own" not in why


def test_without_within_class_agreement_the_radiomic_family_is_named() -> None:
    table = _rows("Fibrosis", 1, within_class_r=np.nan)
    why = why_unpicked(table, Criteria(), top_k=20).at[0, "why"]
    assert "of its 1 poorly matched family, 1 shows the class effect" in why
    assert "radiomic family" in why
