"""The data-level source audit: a source written outside the lungs is found there, and only
there."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.source_regions import LUNGS, OUTSIDE, RegionAudit, source_by_region
from biomark.report.source_regions_page import region_sentence

N_FEATURES = 8


def _meta(seed: int) -> pd.DataFrame:
    """3 classes x 30 patients x 2 films; each patient from site_A or site_B at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in ("A", "B", "Normal"):
        for p in range(30):
            source = "site_B" if rng.random() < 0.5 else "site_A"
            rows += [
                {
                    "image_id": f"{c}{p:02d}_{i}",
                    "label": c,
                    "patient_id": f"{c}{p:02d}",
                    "source": source,
                }
                for i in range(2)
            ]
    return pd.DataFrame(rows)


def _radiomics(
    meta: pd.DataFrame, seed: int, tag: float = 0.0, zone_tag: float = 0.0
) -> pd.DataFrame:
    """Noise radiomics; ``tag`` adds the source to one whole-region column, ``zone_tag`` to a zone
    column."""
    rng = np.random.default_rng(seed)
    b = (meta["source"] == "site_B").to_numpy(dtype=float)
    values = rng.standard_normal((len(meta), N_FEATURES))
    values[:, 0] += tag * b
    frame = pd.DataFrame(values, columns=[f"firstorder_F{j}" for j in range(N_FEATURES)])
    frame["lower_firstorder_Mean"] = rng.standard_normal(len(meta)) + zone_tag * b
    return frame.assign(image_id=meta["image_id"].to_numpy())


def test_a_tag_outside_the_lungs_is_found_there_only() -> None:
    meta = _meta(0)
    audit = source_by_region(
        {
            LUNGS: _radiomics(
                meta, 1, zone_tag=4.0
            ),  # zone columns are left out of the lung region
            OUTSIDE: _radiomics(meta, 2, tag=4.0),
        },
        meta,
        n_permutations=200,
    )
    assert audit.tested and audit.n_features == {LUNGS: N_FEATURES, OUTSIDE: N_FEATURES}
    assert audit.carries(OUTSIDE) and not audit.carries(LUNGS)
    assert sorted(audit.classes(OUTSIDE)) == ["A", "B", "Normal"] and audit.classes(LUNGS) == []
    outside = audit.table[audit.table["region"] == OUTSIDE]
    assert (outside["auc"] > 0.9).all() and (outside["p_adjusted"] < 0.05).all()
    sentence = region_sentence(audit)
    assert sentence.startswith("The images carry their source outside the lungs")
    assert "3 of 3 classes" in sentence and "a shortcut is available" in sentence


def test_clean_images_carry_no_source() -> None:
    # Each region is one Holm family at alpha 0.05: over 6 seeds x 2 regions about 0.6 false flags
    # are expected; these seeds give one (seed 2, lungs, class A at raw p 0.005).
    flagged, sentences = 0, []
    for seed in range(6):
        meta = _meta(seed)
        audit = source_by_region(
            {LUNGS: _radiomics(meta, 10 + seed), OUTSIDE: _radiomics(meta, 20 + seed)},
            meta,
            n_permutations=200,
            seed=seed,
        )
        flagged += audit.carries(OUTSIDE) + audit.carries(LUNGS)
        sentences.append(region_sentence(audit))
    assert flagged <= 1
    assert sum(s.startswith("The radiomics find no source signal") for s in sentences) >= 5


def test_a_source_in_both_regions_is_said_so() -> None:
    meta = _meta(3)
    audit = source_by_region(
        {LUNGS: _radiomics(meta, 4, tag=4.0), OUTSIDE: _radiomics(meta, 5, tag=4.0)},
        meta,
        n_permutations=200,
    )
    assert audit.carries(OUTSIDE) and audit.carries(LUNGS)
    assert region_sentence(audit).startswith("The images carry their source both outside the lungs")


def test_a_region_without_usable_columns_is_skipped_with_its_reason() -> None:
    meta = _meta(4)
    constant = pd.DataFrame({"image_id": meta["image_id"], "firstorder_Mean": 1.0})
    audit = source_by_region(
        {LUNGS: _radiomics(meta, 6), OUTSIDE: constant}, meta, n_permutations=50
    )
    skipped = audit.table[audit.table["region"] == OUTSIDE]
    assert skipped["status"].tolist() == ["skipped"]
    assert "0 usable radiomic column(s)" in skipped["reason"].iat[0]
    assert not audit.carries(OUTSIDE)


def test_no_audit_no_sentence() -> None:
    assert region_sentence(None) == ""
    empty = RegionAudit(
        table=pd.DataFrame(columns=["region", "class", "status", "verdict"]),
        pooled={},
        n_features={},
    )
    assert region_sentence(empty) == ""


@pytest.mark.parametrize("region", [LUNGS, OUTSIDE])
def test_images_outside_the_manifest_are_ignored(region: str) -> None:
    meta = _meta(5)
    table = _radiomics(meta, 7)
    extra = table.iloc[:4].assign(image_id=[f"stray{i}" for i in range(4)])
    audit = source_by_region(
        {region: pd.concat([table, extra], ignore_index=True)}, meta, n_permutations=50
    )
    assert audit.table["n"].sum() == len(meta)


def test_a_source_found_only_by_the_pooled_test_is_said_so() -> None:
    rows = [
        {"region": region, "class": c, "status": "tested", "verdict": "source is not recoverable"}
        for region in (LUNGS, OUTSIDE)
        for c in ("Normal", "Pneumonia")
    ]
    pooled = {
        LUNGS: {"classes": ["Normal", "Pneumonia"], "auc": 0.84, "p_adjusted": 0.024,
                "verdict": "source is recoverable within classes"},
        OUTSIDE: {"classes": ["Normal", "Pneumonia"], "auc": 0.52, "p_adjusted": 0.9,
                  "verdict": "source is not recoverable within classes"},
    }  # fmt: skip
    audit = RegionAudit(table=pd.DataFrame(rows), pooled=pooled, n_features={})
    assert audit.carries(LUNGS) and audit.classes(LUNGS) == [] and not audit.carries(OUTSIDE)
    sentence = region_sentence(audit)
    assert sentence.startswith("The images carry their source in the lung fields")
    assert "none of 2 classes alone; pooled within-class AUC 0.84, Holm p = 0.024" in sentence


def test_a_weak_flag_is_named_with_the_chance_of_a_false_one() -> None:
    rows = [
        {"region": LUNGS, "class": "A", "status": "tested", "auc": 0.65, "p_adjusted": 0.016,
         "verdict": "source is weakly recoverable"},
        {"region": LUNGS, "class": "B", "status": "tested", "auc": 0.51, "p_adjusted": 1.0,
         "verdict": "source is not recoverable"},
        {"region": OUTSIDE, "class": "A", "status": "tested", "auc": 0.5, "p_adjusted": 1.0,
         "verdict": "source is not recoverable"},
    ]  # fmt: skip
    pooled = {
        region: {"classes": ["A", "B"], "auc": 0.52, "p_adjusted": 1.0,
                 "verdict": "source is not recoverable within classes"}
        for region in (LUNGS, OUTSIDE)
    }  # fmt: skip
    audit = RegionAudit(table=pd.DataFrame(rows), pooled=pooled, n_features={})
    assert not audit.carries(LUNGS) and audit.classes(LUNGS) == ["A"]
    sentence = region_sentence(audit)
    assert sentence.startswith(
        "The radiomics find the source only weakly within classes: "
        "A inside the lungs (AUC 0.65, Holm p = 0.016)"
    )
    assert "about 1 region in 20 is flagged somewhere by chance" in sentence
