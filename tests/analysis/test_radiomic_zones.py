"""Where a deep feature's radiomic correlate is strongest (biomark.analysis.radiomic_zones)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biomark.analysis.radiomic_zones import (
    ZONE_PARTITIONS,
    _moments,
    _resampled_r,
    base_feature,
    leading_zones,
    radiomic_zones,
)
from biomark.analysis.texture_explained import within_class_correlates
from biomark.data.lungs import ZONES

N = 300


def _regional(grade: np.ndarray, weights: dict[str, float], seed: int) -> pd.DataFrame:
    """One radiomic feature per zone: ``weight * grade`` plus unit noise."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({z: weights.get(z, 0.0) * grade + rng.normal(size=N) for z in ZONES})


def test_partitions_are_the_lung_zones() -> None:
    assert sorted(z for part in ZONE_PARTITIONS for z in part) == sorted(ZONES)


def test_base_feature_strips_only_a_zone() -> None:
    assert base_feature("lower_glcm_Idm") == "glcm_Idm"
    assert base_feature("glcm_Idm") == "glcm_Idm"
    assert base_feature("firstorder_Mean") == "firstorder_Mean"


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (
            {"lower": 2.0, "middle": 0.5, "upper": 0.5, "central": 1.0, "peripheral": 1.0},
            ("lower",),
        ),
        (
            {"upper": 1.0, "middle": 2.5, "lower": 1.0, "central": 2.5, "peripheral": 1.0},
            ("middle", "central"),
        ),
        ({"lower": 2.0, "middle": 1.0, "peripheral": 2.0, "central": 0.5}, ("lower", "peripheral")),
    ],
)
def test_a_finding_planted_in_zones_leads_there(weights, expected) -> None:
    grade = np.random.default_rng(7).normal(size=N)
    assert leading_zones(grade, _regional(grade, weights, seed=8)) == expected


def test_a_finding_spread_over_the_lungs_leads_nowhere() -> None:
    grade = np.random.default_rng(1).normal(size=N)
    regional = _regional(grade, dict.fromkeys(ZONES, 1.0), seed=2)
    assert leading_zones(grade, regional) == ()


def test_false_leads_are_rare_when_every_zone_tracks_the_feature_alike() -> None:
    """Every zone equally informative: a zone leads about as often as a 95% interval misses."""
    rng = np.random.default_rng(3)
    leads = {"bands": 0, "central/peripheral": 0}
    for i in range(100):
        grade = rng.normal(size=N)
        lead = leading_zones(
            grade, _regional(grade, dict.fromkeys(ZONES, 1.0), seed=100 + i), seed=i
        )
        leads["bands"] += any(z in ZONE_PARTITIONS[0] for z in lead)
        leads["central/peripheral"] += any(z in ZONE_PARTITIONS[1] for z in lead)
    assert leads["bands"] <= 6 and leads["central/peripheral"] <= 12, leads


def test_the_lead_follows_the_sign_of_the_correlation() -> None:
    grade = np.random.default_rng(4).normal(size=N)
    regional = _regional(grade, {"lower": -2.0, "upper": 0.5, "middle": 0.5}, seed=5)
    assert leading_zones(grade, regional, sign=-1.0)[:1] == ("lower",)
    assert "lower" not in leading_zones(grade, regional, sign=1.0)


def test_constant_zones_or_too_few_images_give_no_lead() -> None:
    grade = np.random.default_rng(6).normal(size=N)
    regional = _regional(grade, {"lower": 2.0}, seed=7)
    regional[["upper", "middle"]] = 1.0  # e.g. a zone the masks left empty
    assert "lower" not in leading_zones(grade, regional)
    assert leading_zones(np.ones(N), _regional(grade, {"lower": 2.0}, seed=7)) == ()
    assert leading_zones(grade[:5], _regional(grade, {"lower": 2.0}, seed=7).iloc[:5]) == ()


def test_resampled_r_is_spearman_on_the_drawn_images() -> None:
    rng = np.random.default_rng(8)
    values = rng.normal(size=(40, 4))
    ranks = stats.rankdata(values, axis=0)
    draw = rng.integers(0, 40, size=40)
    counts = np.bincount(draw, minlength=40)[None]
    expected = [stats.pearsonr(ranks[draw, 0], ranks[draw, k]).statistic for k in (1, 2, 3)]
    np.testing.assert_allclose(_resampled_r(counts, _moments(ranks))[0], expected, atol=1e-10)
    full = _resampled_r(np.ones((1, 40)), _moments(ranks))[0]
    np.testing.assert_allclose(full, stats.spearmanr(values).statistic[0, 1:], atol=1e-10)


def test_radiomic_zones_reads_each_feature_against_its_own_correlate() -> None:
    rng = np.random.default_rng(9)
    grade = rng.normal(size=N)
    lower = _regional(grade, {"lower": 2.0, "middle": 0.5, "upper": 0.5}, seed=10)
    central = _regional(-grade, {"central": 2.0, "peripheral": 0.3}, seed=11)
    R = pd.concat([lower.add_suffix("_glcm_Idm"), central.add_suffix("_firstorder_Mean")], axis=1)
    R["glcm_Idm"] = lower.mean(axis=1)  # the whole lung: no zone of its own
    X = np.c_[grade, grade, rng.normal(size=N)]
    zones = radiomic_zones(
        X,
        R,
        {
            "a": ("glcm_Idm", 0.6),
            "b": ("central_firstorder_Mean", -0.7),
            "c": ("shape2D_Area", 0.3),
        },
        ["a", "b", "c"],
    )
    assert zones.to_dict() == {"a": "lower", "b": "central", "c": ""}


def test_within_class_correlates_name_the_zone_of_a_zoned_finding() -> None:
    rng = np.random.default_rng(12)
    labels = np.array(["A"] * N + ["B"] * 100)
    grade = rng.normal(size=N + 100)
    regional = _regional(grade[:N], {"lower": 2.0, "middle": 0.7, "peripheral": 1.5}, seed=13)
    R = np.c_[
        np.r_[regional.mean(axis=1), rng.normal(size=100)],
        np.r_[regional.to_numpy(), rng.normal(size=(100, len(ZONES)))],
    ]
    names = ["firstorder_Mean", *(f"{z}_firstorder_Mean" for z in ZONES)]
    table = within_class_correlates(
        np.c_[grade, rng.normal(size=N + 100)],
        R,
        labels,
        positive="A",
        feature_names=["u0", "u1"],
        radiomic_names=names,
    )
    assert table is not None and table.loc["u0", "radiomic_zone"] == "lower, peripheral"
