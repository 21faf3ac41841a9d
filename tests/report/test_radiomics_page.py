"""The radiomics report page: content, tables next to it, and it renders offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.exceptions import RunError
from biomark.features.run_folder import RunFolder
from biomark.pipelines.radiomics import associate_run
from biomark.report.page import escape
from biomark.report.radiomics_page import align_features, excluded_images, write_radiomics_report

PARAMS_FILE = Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml"


def _write_run(
    run_dir: Path, manifest: pd.DataFrame, features: pd.DataFrame, ids=None, predictions=None
) -> Path:
    """Synthetic out-of-fold deep features; ``scratch`` f0000 tracks firstorder_Mean.

    ``predictions``: None (one class "x", answered right), "learned" (the manifest's labels,
    answered right) or "chance" (the manifest's labels, answered by a seeded random draw)."""
    from biomark.features.deep import fold_dir, write_features

    rng = np.random.default_rng(0)
    ids = manifest["image_id"].to_numpy() if ids is None else np.asarray(ids)
    n = len(ids)
    mean = features.set_index("image_id")["firstorder_Mean"].reindex(ids).fillna(0).to_numpy()
    folds = np.arange(n) % 3
    for strategy in ("scratch", "frozen"):
        X = rng.normal(size=(n, 12))
        if strategy == "scratch":
            X[:, 0] = mean + 0.02 * np.std(mean) * rng.normal(size=n)
        for f in range(3):
            rows = np.flatnonzero(folds == f)
            labels = (
                manifest.set_index("image_id")["label"].reindex(ids[rows]).to_numpy()
                if predictions
                else np.full(len(rows), "x")
            )
            pred = (
                labels
                if predictions in (None, "learned")
                else rng.choice(sorted(set(manifest["label"])), len(rows))
            )
            meta = pd.DataFrame(
                {
                    "image_id": ids[rows],
                    "label": labels,
                    "patient_id": ids[rows],
                    "source": "site_A",
                    "fold": f,
                    "strategy": strategy,
                    "pred": pred,
                }
            )
            write_features(fold_dir(run_dir, strategy, f) / "features.parquet", meta, X[rows])
    return run_dir


@pytest.fixture(scope="module")
def radiomics_run(tmp_path_factory):
    from biomark.data.build import build_dataset
    from biomark.data.dataset import load_dataset
    from biomark.data.phantom import generate_phantom
    from biomark.features.radiomics_params import load_params
    from biomark.features.radiomics_run import run_radiomics

    base = tmp_path_factory.mktemp("page")
    csv = generate_phantom(base / "raw", n_per_class=3, seed=1, image_size=128)
    build_dataset(base / "data", sources={"manifest": [csv]}, image_size=128, jobs=1)
    run = run_radiomics(base / "data", load_params(PARAMS_FILE), jobs=2, controls=True)
    manifest = load_dataset(base / "data").manifest
    run_dir = _write_run(base / "run", manifest, run.features)
    return base, run, manifest, run_dir


def test_strategies_are_named_by_their_labels_as_on_the_other_pages(
    radiomics_run, tmp_path
) -> None:
    """A ``finetune_3`` folder is the strategy ``finetune:3`` (the report and compare pages'
    name)."""
    import shutil

    _, run, manifest, run_dir = radiomics_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.copytree(copy / "frozen", copy / "finetune_3")
    analyses = associate_run(copy, run.features, manifest)
    assert sorted(analyses) == ["finetune:3", "frozen", "scratch"]
    assert analyses["finetune:3"].strategy == "finetune:3"


def test_associate_run_finds_planted_association(radiomics_run) -> None:
    _, run, manifest, run_dir = radiomics_run
    assert RunFolder(run_dir).strategy_folders() == ["frozen", "scratch"]
    analyses = associate_run(run_dir, run.features, manifest, controls=run.controls)
    scratch = analyses["scratch"]
    table = scratch.result.table()
    hit = table[(table.deep == "f0000") & (table.radiomic == "firstorder_Mean")].iloc[0]
    assert hit["rho"] > 0.9 and hit["significant"]
    assert set(scratch.controls) == {"real", "shuffled", "outside"}
    assert (
        scratch.partial is not None and scratch.partial.covariates
    )  # phantom source and view vary
    assert len(scratch.cca["canonical_correlations"]) == 3
    assert analyses["frozen"].result.n_significant <= 2


def test_report_files_and_content(radiomics_run, tmp_path) -> None:
    _, run, manifest, run_dir = radiomics_run
    from biomark.analysis.phantom_truth import phantom_truth

    analyses = associate_run(run_dir, run.features, manifest, controls=run.controls)
    truth = phantom_truth(run.features, manifest, min_images=2)
    page = write_radiomics_report(
        tmp_path / "reports" / "run", run, manifest, analyses, truth, title="Radiomics: run"
    )
    html = page.read_text()
    for text in (
        "Lung masks",
        "Phantom ground truth",
        "Deep features versus radiomics",
        "Canonical correlation",
        "Negative controls",
        "data:image/png;base64,",
        "firstorder_Mean",
    ):
        assert text in html, text
    assert "<script src=" not in html  # plotly.js is inline
    for name in (
        "associations",
        "deep_summary",
        "cca",
        "controls",
        "masks",
        "phantom_truth",
        "failures",
        "dropped_features",
    ):
        assert (page.parent / f"radiomics_{name}.csv").is_file(), name
    cca = pd.read_csv(page.parent / "radiomics_cca.csv")
    assert set(cca["strategy"]) == {"scratch", "frozen"}


def test_different_images_give_clear_error(radiomics_run) -> None:
    _, run, manifest, _ = radiomics_run
    meta = pd.DataFrame(
        {"image_id": [f"other{i}" for i in range(30)] + list(manifest["image_id"][:5])}
    )
    with pytest.raises(RunError, match=r"35 images, radiomics: \d+ images, in common: 5"):
        align_features(meta, np.zeros((35, 2)), run.features)


def test_small_overlap_gap_uses_intersection(radiomics_run, caplog) -> None:
    _, run, manifest, _ = radiomics_run
    ids = list(run.features["image_id"]) + ["missing_one"]
    meta = pd.DataFrame({"image_id": ids[::-1]})
    X = np.arange(len(ids))[::-1, None].astype(float)
    m, Xa, R = align_features(meta, X, run.features)
    assert len(m) == len(ids) - 1 and list(R["image_id"]) == list(m["image_id"])
    assert "1 of" in caplog.text


def test_mask_gallery_from_the_dataset_worst_first_or_from_stored_thumbnails(
    radiomics_run, tmp_path
) -> None:
    import dataclasses
    import re

    from biomark.report.radiomics_page import build_page

    _, run, manifest, _ = radiomics_run
    html = build_page("r", run, manifest)[0].write(tmp_path / "a.html").read_text(encoding="utf-8")
    ids = re.findall(r'alt="lung mask of ([^"]+)"', html)
    assert len(ids) == min(24, len(run.masks)) and "least lung-like" in html
    flagged = list(run.masks.loc[~run.masks["plausible"].astype(bool), "image_id"])
    assert set(ids[: len(flagged)]) == set(flagged)  # worst first
    moved = dataclasses.replace(
        run, info={**run.info, "dataset": {**run.info["dataset"], "root": str(tmp_path / "gone")}}
    )
    fallback = (
        build_page("r", moved, manifest)[0].write(tmp_path / "b.html").read_text(encoding="utf-8")
    )
    stored = re.findall(r'alt="lung mask of ([^"]+)"', fallback)
    assert stored and len(stored) == len(run.info["gallery"])


def test_images_radiomics_excluded_by_name_do_not_count_against_the_overlap(caplog) -> None:
    """Issue 13: 12 % implausible masks made the same dataset look like another one."""
    ids = [f"img{i}" for i in range(100)]
    radiomics = pd.DataFrame({"image_id": ids[:85], "f": np.arange(85.0)})
    failures = pd.DataFrame(
        {
            "variant": ["real"] * 12 + ["shuffled"],
            "image_id": ids[85:97] + [ids[99]],
            "stage": "mask",
            "reason": "implausible segmented lung mask: one_lung",
        }
    )
    excluded = excluded_images(failures, radiomics)
    assert excluded == set(ids[85:97])
    meta = pd.DataFrame({"image_id": ids})
    with pytest.raises(
        RunError, match=r"in common: 85; 0 excluded by radiomics by name.*85% of the 100 expected"
    ):
        align_features(meta, np.zeros((100, 1)), radiomics)
    m, X, R = align_features(meta, np.arange(100.0)[:, None], radiomics, excluded=excluded)
    assert (
        len(m) == 85
        and list(R["image_id"]) == list(m["image_id"])
        and X[:, 0].tolist() == list(range(85))
    )
    assert "12 excluded by radiomics by name" in caplog.text and "3 without a reason" in caplog.text
    with pytest.raises(
        RunError,
        match=r"12 excluded by radiomics by name.*33 missing without a reason \(e\.g\. img55",
    ):
        align_features(meta, np.zeros((100, 1)), radiomics.iloc[:55], excluded=excluded)


@pytest.mark.browser
def test_page_renders_in_chromium(radiomics_run, tmp_path, render_in_chromium) -> None:
    _, run, manifest, run_dir = radiomics_run
    analyses = associate_run(run_dir, run.features, manifest, controls=run.controls)
    page = write_radiomics_report(tmp_path / "r", run, manifest, analyses, None)
    result = render_in_chromium(page)
    assert result.errors == []
    assert result.plots_rendered == 2
    assert "Lung masks" in result.headings


# --------------------------------------------------------------------------- #
# Pages that tell the truth (issue 12 item 6)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("predictions", ["chance", "learned"])
def test_chance_guard_and_verdicts_lead_the_page(radiomics_run, tmp_path, predictions: str) -> None:
    base, run, manifest, _ = radiomics_run
    run_dir = _write_run(
        tmp_path / f"run_{predictions}", manifest, run.features, predictions=predictions
    )
    analyses = associate_run(run_dir, run.features, manifest, controls=run.controls)
    guard = analyses["scratch"].guard
    assert guard is not None and guard.learned is (predictions == "learned")
    html = write_radiomics_report(tmp_path / "r", run, manifest, analyses, None).read_text(
        encoding="utf-8"
    )
    summary = html.split('<h2 id="summary">')[1].split('<h2 id="extraction">')[0]
    assert "Chance guard" in summary
    verdicts = pd.read_csv(tmp_path / "r" / "radiomics_controls.csv").drop_duplicates("strategy")
    for _, row in verdicts.iterrows():
        assert escape(row["verdict"]) in summary  # every verdict is at the top, before any table
        if predictions == "chance":
            assert row["verdict"].startswith("No feature-level verdict")
            assert "scratch has NOT learned" in summary
        else:
            assert not row["verdict"].startswith("No feature-level verdict")


def test_truth_table_puts_found_first_and_sentences_match_numbers() -> None:
    from biomark.report.radiomics_page import truth_sentences, truth_table

    truth = pd.DataFrame(
        {
            "class": ["Fibrosis", "COVID-19"],
            "n": [40, 40],
            "expected": ["texture", "firstorder, texture"],
            "best_overall": ["lower_glcm_Contrast", "shape2D_Sphericity"],
            "region_overall": ["lower", "lung"],
            "rho_overall": [0.70, -0.55],
            "rho_overall_texture": [0.70, 0.37],
            "rho_overall_firstorder": [0.2, np.nan],
            "null_rho99": [0.60, 0.69],
            "expected_found_overall": [True, False],
            "note": ["", ""],
            "expected_found": [True, False],
            "best_feature": ["glcm_Contrast", "x"],
            "rho_within": [0.6, 0.5],
            "chance_rho": [0.52, 0.52],
        }
    )
    table = truth_table(truth)
    assert (
        list(table.columns[:2]) == ["class", "found"] and len(table.columns) <= 7
    )  # fits on screen
    assert table["found"].tolist() == ["found", "not found"]
    fib, covid = truth_sentences(truth)
    assert fib == (
        "Fibrosis: found: the best expected-family (texture) feature has |rho| 0.70 > 0.60 "
        "(the null's 99th percentile)."
    )
    assert covid.startswith("COVID-19: not found") and "|rho| 0.37 ≤ 0.69" in covid
    assert "burden" not in fib + covid  # a table without the burden columns
    # with the planted burden (how much signature each film holds), the feature that tracks it
    loaded = truth.assign(
        best_burden_overall=["lower_glcm_Contrast", ""], rho_burden_overall=[0.81, np.nan]
    )
    fib, covid = truth_sentences(loaded)
    assert fib.endswith(
        "(the null's 99th percentile); against the planted burden (how much signature the film "
        "holds) the best feature, lower_glcm_Contrast, has rho +0.81."
    )
    assert "burden" not in covid
