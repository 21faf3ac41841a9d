"""Negative controls: a planted texture association must not survive pixel shuffling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from biomark.analysis.associate import associate
from biomark.analysis.controls import (
    SUMMARY_COLUMNS,
    ControlThresholds,
    compare_controls,
    control_summary,
    control_verdict,
)

PARAMS_FILE = Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml"


def _texture_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed noise with a per-image grain ``sigma``, all with the same grey histogram."""
    sigma = rng.uniform(0.4, 3.0, size=n)
    target = np.sort(np.linspace(20, 235, 48 * 48)).astype(np.uint8)
    images = np.zeros((n, 64, 64), dtype=np.uint8)
    for i in range(n):
        field = ndimage.gaussian_filter(rng.normal(size=(48, 48)), sigma[i])
        ranks = np.argsort(np.argsort(field.ravel()))
        images[i, 8:56, 8:56] = target[ranks].reshape(48, 48)  # identical histogram, texture varies
    return images, sigma


@pytest.fixture(scope="module")
def texture_results(tmp_path_factory):
    from biomark.features.radiomics import extract_features, shuffle_within
    from biomark.features.radiomics_params import load_params

    rng = np.random.default_rng(0)
    n = 30
    images, sigma = _texture_images(n, rng)
    masks = np.zeros_like(images)
    masks[:, 8:56, 8:56] = 1
    ids = [f"t{i}" for i in range(n)]
    params = load_params(PARAMS_FILE)
    cache = tmp_path_factory.mktemp("cache")
    real = extract_features(images, masks, ids, params, cache_dir=cache, jobs=2)
    shuffled_images = np.stack([shuffle_within(images[i], masks[i], (0, i)) for i in range(n)])
    shuffled = extract_features(shuffled_images, masks, ids, params, cache_dir=cache, jobs=2)
    # The "deep" noise has its own generator. Shuffled texture features of
    # images with one histogram form one nearly collinear block, so a noise
    # column that correlates with it by chance makes a whole block of pairs
    # significant: with the shared generator this happened once the parameter
    # file normalised intensities; over 20 noise seeds (100-119) the assertion
    # below failed 0 times with and 0 times without normalisation.
    noise = np.random.default_rng(100)
    deep = np.c_[sigma + 0.2 * noise.normal(size=n), noise.normal(size=(n, 5))]
    out = {}
    for name, table in (("real", real.features), ("shuffled", shuffled.features)):
        names = [c for c in table.columns if c != "image_id"]
        out[name] = associate(deep, table[names].to_numpy(float), radiomic_names=names)
    return out


def test_shuffle_destroys_planted_texture_association(texture_results) -> None:
    summary = control_summary(texture_results).set_index("variant")
    assert list(control_summary(texture_results).columns) == list(SUMMARY_COLUMNS)
    assert summary.loc["real", "n_associated_texture"] >= 10
    assert (
        summary.loc["shuffled", "n_associated_texture"]
        <= 0.2 * summary.loc["real", "n_associated_texture"]
    )
    assert (
        summary.loc["real", "median_abs_rho_texture"]
        > summary.loc["shuffled", "median_abs_rho_texture"]
    )
    verdict = control_verdict(summary.reset_index(), variance_explained=0.2)
    # texture confirmed by the shuffle; without an outside-the-lungs control lung specificity is not
    # claimed
    assert (
        verdict.startswith("Lung specificity untested")
        and "with the lung pixels shuffled" in verdict
    )


def _fake(n_sig_texture: int, n_sig_first: int, n: int = 50, rho: float = 0.6) -> object:
    """An AssociationResult-like object (20 deep x 20 radiomic features) with chosen significant
    counts."""
    from biomark.analysis.associate import AssociationResult

    names = [f"glcm_T{j}" for j in range(10)] + [f"firstorder_F{j}" for j in range(10)]
    q = np.ones((20, 20))
    q[:, :10].flat[:n_sig_texture] = 0.001
    q[:, 10:].flat[:n_sig_first] = 0.001
    rho = np.where(q < 0.05, rho, 0.0)
    return AssociationResult(
        rho=rho,
        p=q,
        q=q,
        deep_names=[f"d{i}" for i in range(20)],
        radiomic_names=names,
        n=n,
        df=n - 2,
    )


@pytest.mark.parametrize(
    ("results", "kwargs", "start"),
    [
        # texture that shuffling destroys, little outside the lungs, radiomics explain a fifth of
        # the variance
        (
            {"real": _fake(40, 20), "shuffled": _fake(4, 20), "outside": _fake(5, 5)},
            {"variance_explained": 0.2},
            "Consistent with lung biomarkers",
        ),
        # issue 12: the outside control has 94 % as many associations as the lungs
        (
            {"real": _fake(40, 10), "shuffled": _fake(4, 10), "outside": _fake(37, 10)},
            {"variance_explained": 0.2},
            "Not specific to the lungs",
        ),
        # issue 12: and CCA explains 0.5 % of the deep-feature variance
        (
            {"real": _fake(40, 20), "shuffled": _fake(4, 20), "outside": _fake(5, 5)},
            {"variance_explained": 0.005},
            "Weak link to radiomics",
        ),
        # issue 12: "Shortcut suspected" on 2 vs 5 pairs
        (
            {"real": _fake(2, 0), "shuffled": _fake(0, 0), "outside": _fake(5, 0)},
            {},
            "Too few associations",
        ),
        (
            {"real": _fake(30, 10), "shuffled": _fake(3, 10), "outside": _fake(60, 20)},
            {},
            "Shortcut suspected",
        ),
        ({"real": _fake(0, 0), "outside": _fake(30, 0)}, {}, "Shortcut suspected"),
        (
            {"real": _fake(40, 20), "shuffled": _fake(35, 20), "outside": _fake(1, 1)},
            {},
            "Texture not confirmed",
        ),
        (
            {"real": _fake(40, 20), "shuffled": _fake(4, 20)},
            {"variance_explained": 0.2},
            "Lung specificity untested",
        ),
        ({"real": _fake(0, 0), "shuffled": _fake(0, 0)}, {}, "Too few associations"),
        (
            {"real": _fake(40, 20), "shuffled": _fake(4, 20), "outside": _fake(5, 5)},
            {"learned": False},
            "No feature-level verdict",
        ),
    ],
)
def test_verdicts_follow_the_stated_thresholds(results, kwargs, start) -> None:
    from biomark.analysis.controls import VERDICTS

    verdict = control_verdict(control_summary(results), **kwargs)
    assert verdict.startswith(start), verdict
    assert verdict.split(":")[0] in VERDICTS


def test_verdict_sentence_holds_for_its_numbers() -> None:
    summary = control_summary(
        {"real": _fake(40, 10), "shuffled": _fake(4, 10), "outside": _fake(37, 10)}
    )
    text = control_verdict(summary, variance_explained=0.005)
    assert "50 of 400 pairs (12.50%) are associated" in text
    assert "outside the lungs 47 pairs (11.75%) are associated," in text
    assert "94% of the lung rate" in text and "specific to the lungs below 50%" in text
    assert (
        "with the lung pixels shuffled (texture destroyed) 4 texture pairs are associated against "
        "40 with the real pixels, 10% as many (a texture link keeps at most" in text
    )
    assert "radiomics explain 0.5% of the deep-feature variance" in text
    assert "Consistent" not in text


def test_significance_without_effect_size_is_no_association() -> None:
    """Weak but significant correlations (thousands of images) do not count: no verdict is drawn
    from them.

    Over the demo's 2,100 images |rho| 0.1 is FDR-significant; deep features that code the class
    then correlate that weakly with every class-related radiomic feature, inside the lungs or
    outside them.
    """
    weak_outside = {
        "real": _fake(40, 20),
        "shuffled": _fake(4, 20),
        "outside": _fake(60, 20, rho=0.1),
    }
    summary = control_summary(weak_outside).set_index("variant")
    assert summary.loc["outside", "n_significant"] == 80
    assert summary.loc["outside", "n_associated"] == 0
    text = control_verdict(summary.reset_index(), variance_explained=0.2)
    assert text.startswith("Consistent with lung biomarkers"), text
    assert "outside the lungs 0 pairs (0.00%)" in text
    only_weak = {"real": _fake(40, 20, rho=0.1), "outside": _fake(40, 20, rho=0.1)}
    assert control_verdict(control_summary(only_weak)).startswith("Too few associations")
    # a share of the pairs, not only a count: 60 associated pairs of 400 (15 %) are too few below
    # 20 %
    strong = {"real": _fake(40, 20), "outside": _fake(5, 5)}
    assert control_verdict(
        control_summary(strong), thresholds=ControlThresholds(min_fraction=0.2)
    ).startswith("Too few associations")
    assert not control_verdict(control_summary(strong)).startswith("Too few associations")
    # the threshold is a stated setting: looser, the same weak pairs would count
    loose = ControlThresholds(min_abs_rho=0.05)
    assert (
        compare_controls({"s": only_weak}, thresholds=loose)["verdict"]
        .iat[0]
        .startswith("Shortcut suspected")
    )


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_outside_ratio"):
        ControlThresholds(max_outside_ratio=1.5)
    with pytest.raises(ValueError, match="min_significant"):
        ControlThresholds(min_significant=0)
    with pytest.raises(ValueError, match="min_abs_rho"):
        ControlThresholds(min_abs_rho=1.5)
    strict = ControlThresholds(min_significant=100)
    summary = control_summary({"real": _fake(40, 20), "outside": _fake(5, 5)})
    assert control_verdict(summary, thresholds=strict).startswith("Too few associations")


def test_compare_controls_per_strategy() -> None:
    table = compare_controls(
        {
            "scratch": {"real": _fake(40, 20), "shuffled": _fake(4, 20), "outside": _fake(5, 5)},
            "frozen": {"real": _fake(2, 2), "outside": _fake(5, 5)},
        },
        variance_explained={"scratch": 0.3},
        learned={"frozen": False},
    )
    assert set(table["strategy"]) == {"scratch", "frozen"}
    assert len(table) == 5 and table["verdict"].str.len().gt(0).all()
    assert (
        table.loc[(table.strategy == "frozen") & (table.variant == "real"), "n_significant"].iat[0]
        == 4
    )
    verdicts = table.drop_duplicates("strategy").set_index("strategy")["verdict"]
    assert verdicts["scratch"].startswith("Consistent with lung biomarkers")
    assert verdicts["frozen"].startswith("No feature-level verdict")
    assert compare_controls({}).empty
