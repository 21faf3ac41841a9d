"""biomark report on one tiny trained run: every section, in headless Chromium, with known answers.

One run is trained once for the module (phantom, 7 classes x 8 images at 64 px,
MobileNetV2 alpha 0.35 with a 16-unit head, 2 folds, 1 epoch, scratch + frozen
from a weights file made here); the report is built once and inspected by
several tests.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.biomarkers import TABLE_COLUMNS
from biomark.analysis.lung_swap import LUNG_SWAP_VERDICTS
from biomark.analysis.redundancy import mark_near_copies
from biomark.features.run_info import RunInfo
from biomark.pipelines.report import analyse_run
from biomark.report.grading_sections import BURDEN_NOTE
from biomark.report.report_data import ReportData
from biomark.report.report_page import (
    _remove_stale_tables,
    build_report_page,
    claim_verdict,
    limitations,
    top_candidates,
    write_report,
)
from biomark.report.report_strategy import ReportSettings, StrategyReport
from biomark.report.report_text import learned as strategy_learned

SECTIONS = (
    "Summary",
    "Classification results",
    "Performance by source",
    "Attributions",
    "Where the features live",
    "Statistics per deep feature",
    "Fold stability",
    "Shortcut audit",
    "Candidate biomarkers",
    "Do the strategies learn different biomarkers?",
    "Phantom ground truth",
    "Methods",
    "Limitations",
)
SETTINGS = ReportSettings(
    top_k=8,
    shap_samples=8,
    n_background=8,
    n_bootstrap=200,
    n_mixed=3,
    n_gallery=2,
    n_thumbnails=2,
    n_gradcam=2,
    workers=2,  # scratch and frozen side by side, as `biomark report` does on 2 or more cores
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from biomark.config import Plan, apply_overrides
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom
    from biomark.pipelines.extract import run_extract

    root = tmp_path_factory.mktemp("tiny_report")
    data = root / "data"
    csv = generate_phantom(data, n_per_class=8, seed=0, image_size=64, images_per_patient=2)
    build_dataset(data, sources={"manifest": [csv]}, image_size=64)
    keras.utils.set_random_seed(123)
    backbone = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    weights = root / "w.weights.h5"
    backbone.save_weights(weights)
    keras.backend.clear_session()
    plan = apply_overrides(
        Plan(),
        {
            "name": "tiny",
            "seed": 0,
            "output_dir": str(root / "runs"),
            "data.dir": str(data),
            "cv.k": 2,
            "cv.validation_fraction": 0.25,
            "strategies": ["scratch", "frozen"],
            "model.image_size": 64,
            "model.weights": str(weights),
            "model.alpha": 0.35,
            "model.head_units": 16,
            "model.augment.rotation_degrees": 5.0,
            "model.augment.shift_pixels": 2,
            "training.epochs": 1,
            "training.batch_size": 8,
            "training.early_stopping.patience": 1,
            "training.run_eagerly": True,  # one step per model: cheaper than tracing
            "training.fit_check_epoch": 0,  # the page does not show it; tested in test_learning
            "dump.blocks": False,
        },
    )
    return run_extract(plan)


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    reports = tmp_path_factory.mktemp("reports")
    data = analyse_run(tiny_run, SETTINGS, reports=reports)
    return data, write_report(data)


@pytest.mark.slow
@pytest.mark.browser
def test_page_opens_in_chromium_with_every_section(report, render_in_chromium) -> None:
    data, paths = report
    result = render_in_chromium(paths["index"], budget_ms=15000)
    assert result.errors == []
    for section in SECTIONS:
        assert section in result.headings, section
    assert result.plot_divs > 0 and result.plots_rendered == result.plot_divs
    assert "rows: predicted, columns: actual" in result.dom
    assert result.dom.count("data:image/png;base64,") >= 4  # thumbnails and Grad-CAM


@pytest.mark.slow
def test_model_sections_have_known_answers(report) -> None:
    data, paths = report
    assert set(data.strategies) == {"scratch", "frozen"}
    for rep in data.strategies.values():
        assert rep.identity_error < 1e-4  # spatial mean of out_relu == dumped GAP value
        assert rep.additivity is not None and len(rep.additivity) == 2
        # float32 walk (ReportSettings.shap_precision): additive to ~1e-6 of logits of order 1
        assert (rep.additivity["precision"] == "float32").all()
        assert rep.additivity["max_abs_error"].max() < 1e-4
        assert rep.blackout is not None and {
            "accuracy_original",
            "accuracy_blackout",
            "survival",
        } <= set(rep.blackout)
        # the pooled row reads the pooled images as the verdict does: one figure, not two
        pooled = rep.blackout.set_index("fold").loc["all"]
        reading = rep.blackout_reading
        assert reading is not None
        assert pooled["majority_rate"] == pytest.approx(reading.majority_rate)
        assert pooled["accuracy_original"] == pytest.approx(reading.accuracy_original)
        assert pooled["accuracy_blackout"] == pytest.approx(reading.accuracy_blackout)
        if np.isfinite(reading.survival_above_chance):
            assert pooled["survival_above_chance"] == pytest.approx(reading.survival_above_chance)
        else:
            assert np.isnan(pooled["survival_above_chance"])
        assert rep.lung is not None and rep.lung["lung_fraction"].between(0, 1).all()
        # every feature is read against one null per run: random units by the same method
        null = rep.lung_null
        assert null is not None
        assert rep.lung_method.startswith(null.method) and null.fractions.size > 1000
        assert null.low < null.median < null.high and 0 < null.low and null.high < 1
        # lung swap: every control film with usable masks gets another class's lungs, and is read
        swap = rep.lung_swap
        assert swap is not None and len(swap) > 0
        assert (swap["label"] != swap["lung_label"]).all()
        assert set(swap["pred_swap"]) <= set(rep.classes)
        assert rep.lung_swap_reading is not None
        assert rep.lung_swap_reading.verdict in LUNG_SWAP_VERDICTS
        assert f"{rep.label}: lung swap" in Path(paths["index"]).read_text()
        assert len(rep.gradcam) >= 1 and len(rep.thumbnails) >= 1
        tiles = [t for g in rep.thumbnails for t in g["tiles"]]
        # a tile has a lung fraction exactly where the lung test ran and the feature responded
        assert all(t["lung_measured"] for t in tiles if np.isfinite(t["lung_fraction"]))
        assert rep.kendall is not None and len(rep.kendall) == 7
    swap_csv = pd.read_csv(paths["lung_swap"])
    assert set(swap_csv["strategy"]) == {"scratch", "frozen"} and {"class", "p_adjusted"} <= set(
        swap_csv
    )
    assert (
        data.strategies["frozen"].shared_features and not data.strategies["scratch"].shared_features
    )
    # units: scratch folds matched to fold 0 (families u####), frozen shares one backbone (identity,
    # f####)
    scratch, frozen = data.strategies["scratch"], data.strategies["frozen"]
    assert (
        scratch.unit_basis == "matched"
        and scratch.alignment is not None
        and not scratch.alignment.identity
    )
    assert scratch.feature_names[0].startswith("u") and scratch.alignment_quality is not None
    page_text = Path(paths["index"]).read_text(encoding="utf-8")
    assert "scratch: each fold trained its own backbone; units were matched" in page_text
    assert "frozen: each fold" not in page_text  # one pretrained backbone: nothing to match
    # localised by occlusion at 64 px: the limitations say what that means, not what maps would
    assert "changes more when the lungs are filled" in page_text
    assert "map cells over the lungs" not in page_text
    assert (
        frozen.unit_basis == "shared"
        and frozen.alignment.identity
        and frozen.feature_names[0].startswith("f")
    )
    # 64 px: the 2x2 maps cannot localise, occlusion does; real models reproduce their own features
    for rep in (scratch, frozen):
        assert rep.lung_attainable < 0.5 and rep.lung_method.startswith("occlusion")
        assert (rep.additivity["method"] == "expected-gradients").all()
    assert data.warnings == []
    assert "Input check failed" not in paths["index"].read_text(encoding="utf-8")
    table = pd.read_csv(paths["candidates"])
    assert {
        "strategy",
        "class",
        "feature",
        "cliffs_delta",
        "auc",
        "auc_ci_low",
        "q",
        "topk_freq",
        "lung_fraction",
        "flags",
        "is_candidate",
        "radiomic_correlates",
    } <= set(table.columns)
    assert len(table) == 2 * 7 * SETTINGS.top_k
    assert len(top_candidates(data)) == 10
    # stability counts each fold network's near-copies, matched (scratch) and shared (frozen) alike
    for strategy in ("scratch", "frozen"):
        rows = table[table["strategy"] == strategy]
        assert rows["topk_freq_own"].notna().all(), strategy
        assert (rows["topk_freq"] >= rows["topk_freq_own"]).all(), strategy


@pytest.mark.slow
def test_side_by_side_gives_what_one_after_another_gives(
    tiny_run: Path, report, tmp_path: Path
) -> None:
    """The module's report analysed its strategies in 2 worker processes; scratch alone here, in
    this one."""
    data, _ = report
    here = analyse_run(
        tiny_run,
        replace(SETTINGS, strategies=("scratch",), workers=1),
        reports=tmp_path / "reports",
    )
    side, alone = data.strategies["scratch"], here.strategies["scratch"]
    assert side.candidates is not None and alone.candidates is not None
    assert side.feature_names == alone.feature_names
    # TensorFlow and BLAS with one thread per worker sum in another order: equal to float rounding
    pd.testing.assert_frame_equal(side.candidates, alone.candidates, rtol=1e-5)
    assert side.identity_error < 1e-4 and alone.identity_error < 1e-4


@pytest.mark.slow
def test_lung_null_is_written_beside_the_tables(report) -> None:
    data, paths = report
    nulls = [r.lung_null for r in data.strategies.values()]
    assert all(n is not None for n in nulls)
    assert all(np.array_equal(n.fractions, nulls[0].fractions) for n in nulls)  # one per run
    table = pd.read_csv(paths["lung_null"])
    np.testing.assert_allclose(table["lung_fraction"], nulls[0].fractions)
    record = json.loads(paths["record"].read_text())["strategies"]["scratch"]["lung_null"]
    assert record["n_units"] == len(table) and record["low"] <= record["median"] <= record["high"]
    assert record["in_lungs_from"] == round(max(0.5, nulls[0].high), 4)
    page = paths["index"].read_text(encoding="utf-8")
    criterion = f"lung fraction ≥ {max(0.5, nulls[0].high):.3f} = max(0.5, the random units&#x27;"
    assert f"inside the lungs ({criterion} 95th percentile)" in page
    assert f"Candidate: q &lt; 0.05, top-k frequency ≥ 0.7, {criterion}" in page
    assert page.count(f"By the same method the {nulls[0].source} read {nulls[0].band()}") == 2


def test_phantom_ground_truth_is_stated(report) -> None:
    data, paths = report
    truth = data.truth
    assert truth is not None and set(truth["class"]) == {
        "COVID-19",
        "Edema",
        "Effusion",
        "Emphysema",
        "Fibrosis",
        "Pneumonia",
    }
    scored = truth.dropna(subset=["rho"])
    assert len(scored) >= 6 and scored["rho"].between(-1, 1).all()
    text = paths["index"].read_text(encoding="utf-8")
    assert "with the planted severity" in text and "Spearman ρ" in text
    # the ceiling of any one-feature rule is stated beside each pick
    assert scored["best_any_rho"].abs().ge(scored["rho"].abs() - 1e-12).all()
    assert "picked with the truth" in text
    # scratch's families are read from their consensus (every tiny image is a reference image), and
    # the same pick from the out-of-fold members alone is given beside it; frozen shares one
    # backbone
    assert data.strategies["scratch"].X_consensus is not None
    for label, rep in data.strategies.items():
        rows = scored[scored["strategy"] == label]
        assert bool(rows["rho_out_of_fold"].notna().all()) == (rep.X_consensus is not None)
    assert "out-of-fold member alone ρ =" in text
    # the phantom's burden column travels through the built dataset to each pick; Emphysema has none
    emphysema = scored["class"] == "Emphysema"
    assert scored.loc[emphysema, "rho_burden"].isna().all()
    assert scored.loc[~emphysema, "rho_burden"].between(-1, 1).all()
    assert (
        scored.loc[~emphysema, "best_any_rho_burden"].abs()
        >= scored.loc[~emphysema, "rho_burden"].abs() - 1e-12
    ).all()
    assert BURDEN_NOTE in text and "with the planted burden ρ =" in text
    # the picks table shows up only for strategies that learned (see the synthetic test below)
    any_learned = any(strategy_learned(rep) for rep in data.strategies.values())
    assert ("the feature the report stands behind" in text) is any_learned
    # the network's own class evidence, scored against the same severity, in the page and a CSV
    evidence = data.evidence
    assert evidence is not None and set(evidence["strategy"]) == set(data.strategies)
    assert set(evidence["class"]) == set(truth["class"])
    assert evidence["severity_rho"].dropna().between(-1, 1).all()
    assert paths["class_evidence"].is_file() and "Does the network grade each disease?" in text
    for strategy, rows in evidence.groupby("strategy"):
        if not bool(rows["learned"].iloc[0]):
            assert f"{strategy}: not read, because this strategy did not learn" in text


@pytest.mark.slow
def test_missing_radiomics_and_compare_are_marked_with_their_command(report) -> None:
    data, paths = report
    text = paths["index"].read_text(encoding="utf-8")
    assert "biomark radiomics --data" in text and "--run" in text
    assert "biomark compare --run" in text and "--all" in text
    assert (data.cka["source"].str.startswith("computed here")).all()
    # with 2 folds, a 70 % stability share means both: the page says so
    assert "≥ 70% of folds, here 2 of 2, where a near-copy of the feature" in text


@pytest.mark.slow
def test_missing_fold_is_reported_and_the_rest_analysed(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("model.keras"))
    (run / "scratch" / "fold_01" / "done.json").unlink()  # summary.json (over both folds) stays
    data = analyse_run(
        run,
        ReportSettings(strategies=("scratch",), top_k=3, n_bootstrap=0, n_mixed=1),
        reports=tmp_path / "reports",
    )
    rep = data.strategies["scratch"]
    assert rep.folds == [0] and rep.missing_folds == [1]
    (unfinished,) = [w for w in rep.warnings if w["check"] == "unfinished folds"]
    assert unfinished["strategy"] == "scratch" and unfinished["fold"] == "1"
    assert "judged over 1 of 2 folds" in unfinished["message"]
    # the paper's tables cover the analysed fold only, not the run's summary over both
    assert rep.classification is not None and rep.classification["n_folds"] == 1
    assert rep.classification_source == "recomputed from the 1 analysed fold"
    assert rep.additivity is None and rep.importance == {}  # models removed: SHAP reported missing
    paths = write_report(data)
    text = paths["index"].read_text(encoding="utf-8")
    assert "no SHAP values" in text
    box = text.index("Input check failed — scratch, fold 1, feature(s) all (unfinished folds)")
    assert box < text.index('id="summary"')  # a warning box above the first section
    assert "fold(s) [1] are not finished" in text[box:]
    info = json.loads((run / "run.json").read_text())
    assert info["name"] == "tiny"
    assert np.isfinite(pd.read_csv(paths["candidates"])["q"]).any()


@pytest.mark.slow
def test_frozen_folds_share_one_backbone_so_matching_finds_the_identity(tiny_run: Path) -> None:
    """The report declares the identity for frozen; matching the real fold models' units finds it
    too."""
    from biomark.analysis.alignment import align_folds
    from biomark.data.dataset import load_dataset
    from biomark.features.report_inputs import (
        fold_model_path,
        open_fold_model,
        release_models,
        strategy_models,
    )

    info = json.loads((tiny_run / "run.json").read_text())
    images = np.asarray(load_dataset(info["dataset"]["dir"]).images[:24])
    holder = (
        strategy_models()
    )  # the second fold loads only its weights into the first fold's architecture
    try:
        folds = {
            f: open_fold_model(fold_model_path(tiny_run, "frozen", f), fold=f, models=holder)
            for f in (0, 1)
        }
        gaps = {
            f: fm.forward(images)["gap"] for f, fm in folds.items()
        }  # fold 0 after fold 1: weights swapped back
        heads = {f: fm.head_arrays()["kernel"] for f, fm in folds.items()}
    finally:
        holder.close()
        release_models()
    np.testing.assert_allclose(gaps[0], gaps[1], atol=1e-5)
    assert np.abs(heads[0] - heads[1]).max() > 1e-4  # each fold trained its own head
    live = np.ptp(gaps[0], axis=0) > 1e-6
    al = align_folds({0: gaps[0][:, live], 1: gaps[1][:, live]})
    np.testing.assert_array_equal(al.perms[1], np.arange(live.sum()))


# --------------------------------------------------------------------------- #
# Pages that tell the truth: synthetic runs, no models (fast)
# --------------------------------------------------------------------------- #
CLASSES = ["COVID-19", "Edema", "Effusion", "Emphysema", "Fibrosis", "Pneumonia", "Normal"]
#: As the real films of issue 13: four classes from NIH only, COVID-19 only from COVID collections,
#: Pneumonia nearly all Kermany.
REAL_COMPOSITION = {
    "COVID-19": {"cohen": 30, "actualmed": 10},
    "Edema": {"nih": 12},
    "Effusion": {"nih": 12},
    "Emphysema": {"nih": 12},
    "Fibrosis": {"nih": 12},
    "Pneumonia": {"kermany": 38, "nih": 2},
    "Normal": {"kermany": 20, "nih": 20},
}


def _synthetic(
    tmp_path: Path,
    *,
    learned: bool,
    composition: dict | None = None,
    weights: str = "none",
    loso: bool = False,
    blackout: str | None = None,
    swap: str | None = None,
) -> ReportData:
    """A one-strategy ReportData built from out-of-fold predictions alone (no models, no images)."""
    from biomark.analysis.audit import source_predictability
    from biomark.analysis.blackout import read_blackout
    from biomark.analysis.chance import chance_guard

    rng = np.random.default_rng(0)
    composition = composition or {c: {"site_A": 10, "site_B": 10} for c in CLASSES}
    labels = np.array(
        [c for c, srcs in composition.items() for s, n in srcs.items() for _ in range(n)]
    )
    sources = np.array(
        [s for c, srcs in composition.items() for s, n in srcs.items() for _ in range(n)]
    )
    classes = list(composition)
    n = len(labels)
    folds = pd.Index(sorted(set(sources))).get_indexer(sources) if loso else np.arange(n) % 3
    pred = labels.copy() if learned else rng.choice(classes, size=n)
    if learned:
        pred[rng.random(n) < 0.2] = classes[0]
    meta = pd.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "label": labels,
            "pred": pred,
            "source": sources,
            "fold": folds,
            "patient_id": [f"p{i // 2:03d}" for i in range(n)],
        }
    )
    if blackout == "collapse":
        meta["pred_blackout"] = classes[-1]
    X = rng.normal(size=(n, 6))
    rep = StrategyReport(
        label="scratch",
        title="Training from scratch",
        classes=classes,
        folds=sorted(set(folds.tolist())),
        missing_folds=[],
        meta=meta,
        feature_names=[f"f{j:04d}" for j in range(6)],
        n_constant=0,
        X=X,
    )
    rep.chance = chance_guard(
        labels, pred, strategy="scratch", positive="COVID-19", classes=classes
    )
    rep.source_predictability = source_predictability(
        X, labels, sources, folds=folds, patient_ids=meta["patient_id"], n_permutations=49
    )
    if blackout:
        rep.blackout_reading = read_blackout(labels, pred, meta["pred_blackout"])
    if swap:
        from biomark.analysis.lung_swap import pair_donors, read_lung_swap

        lungs = labels[pair_donors(labels, np.ones(n, bool), seed=0)]
        # "tag": films with COVID-19 surroundings are answered COVID-19 whatever their lungs
        answers = np.where(labels == "COVID-19", "COVID-19", lungs) if swap == "tag" else lungs
        rep.lung_swap_reading = read_lung_swap(labels, pred, lungs, answers)
    info = RunInfo.from_json(
        {"classes": classes, "positive_class": "COVID-19", "plan": {"model": {"weights": weights}}}
    )
    return ReportData(
        run_dir=tmp_path,
        name="synthetic",
        info=info,
        settings=ReportSettings(),
        out_dir=tmp_path / "out",
        dataset=None,
        strategies={"scratch": rep},
    )


def _top(html: str) -> str:
    """The summary: everything before the classification tables."""
    return html.split('<h2 id="classification-results"')[0]


@pytest.mark.parametrize("learned", [False, True])
def test_chance_guard_leads_the_report(tmp_path: Path, learned: bool) -> None:
    data = _synthetic(tmp_path, learned=learned)
    top = _top(build_report_page(data).render())
    assert "Chance guard" in top
    assert ("scratch has NOT learned to tell the classes apart" in top) is not learned
    assert ("not above chance, so none of its 0 shortlisted" in top) is not learned
    lims = " ".join(limitations(data))
    assert ("the model is not above chance" in lims) is not learned


@pytest.mark.parametrize(
    "method", ["out_relu maps (7x7)", "occlusion on up to 256 test images", ""]
)
def test_the_limitations_say_what_inside_the_lungs_means_for_the_method_used(
    tmp_path: Path, method: str
) -> None:
    data = _synthetic(tmp_path, learned=True)
    data.strategies["scratch"].lung_method = method
    lims = " ".join(limitations(data))
    assert ("activation sits in map cells over the lungs" in lims) is method.startswith("out_relu")
    assert ("changes more when the lungs are filled" in lims) is method.startswith("occlusion")


def test_single_source_classes_are_said_in_the_summary_and_the_limitations(tmp_path: Path) -> None:
    data = _synthetic(tmp_path, learned=True, composition=REAL_COMPOSITION)
    html = build_report_page(data).render()
    said = "Edema, Effusion, Emphysema, Fibrosis: every image comes from one source (nih)"
    assert said in _top(html) and "their features cannot be separated from that source" in _top(
        html
    )
    lims = limitations(data)
    assert any(said in t for t in lims)
    assert any("COVID-19 (cohen, actualmed)" in t and "cannot be told apart" in t for t in lims)
    assert any(t.startswith("Pneumonia: 95% of its images come from kermany") for t in lims)
    assert not any("Every class shares at least one source" in t for t in lims)
    # the same sentences once, not once per strategy
    assert sum(said in t for t in lims) == 1


def test_per_source_metrics_and_leave_one_source_out(tmp_path: Path) -> None:
    composition = {"COVID-19": {"cohen": 20, "actualmed": 20}, "Normal": {"kermany": 20, "nih": 20}}
    html = build_report_page(_synthetic(tmp_path, learned=True, composition=composition)).render()
    section = html.split('<h2 id="performance-by-source"')[1].split("<h2")[0]
    assert (
        "COVID-19 sensitivity % [95% CI] (n)" in section
        and "of each class on each of its sources" in section
    )
    assert "seen in training is internal validation" in section
    # the recall table's columns: the class, then one per source (no empty "source" column)
    recall = section.split("of each class on each of its sources")[0].rsplit("<table", 1)[1]
    header = recall.split("</thead>")[0]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", header) == [
        "class",
        "actualmed",
        "cohen",
        "kermany",
        "nih",
    ]
    loso = build_report_page(
        _synthetic(tmp_path, learned=True, composition=composition, loso=True)
    ).render()
    section = loso.split('<h2 id="performance-by-source"')[1].split("<h2")[0]
    assert "leave one source out" in section
    assert "Trained on actualmed, kermany, nih; tested on cohen (20 images)" in section


def _two_candidates() -> pd.DataFrame:
    """Two COVID-19 candidates of scratch: f0000 ranked first, f0001 better explained by
    radiomics."""
    return pd.DataFrame(
        {
            "strategy": "scratch",
            "class": "COVID-19",
            "feature": ["f0000", "f0001"],
            "members": "",
            "rank": [1, 2],
            "is_candidate": pd.array([True, True], dtype="boolean"),
            "significant": pd.array([True, True], dtype="boolean"),
            "stable": pd.array([True, True], dtype="boolean"),
            "flag_source": pd.array([False, False], dtype="boolean"),
            "flag_outside_lungs": pd.array([False, False], dtype="boolean"),
            "radiomic_r2": [0.12, 0.61],
            "auc": [0.9, 0.8],
            "lung_fraction": [0.7, 0.6],
            "radiomic_correlates": ["lower_glcm_Contrast (+0.40)", "lower_glcm_Idm (-0.70)"],
            "status": "candidate",
            "flags": "",
        }
    ).reindex(columns=list(TABLE_COLUMNS))


def test_each_class_pick_is_tabled_with_its_radiomic_r2(tmp_path: Path) -> None:
    data = _synthetic(tmp_path, learned=True)
    rep = data.strategies["scratch"]
    rep.candidates = _two_candidates()
    html = build_report_page(data).render()
    section = html.split('<h2 id="candidate-biomarkers"')[1].split("<h2")[0]
    table = section.split("the feature the report stands behind")[0].rsplit("<table", 1)[1]
    assert (
        "f0001" in table and "f0000" not in table
    )  # the better-explained candidate, not the top-ranked
    assert "candidate best explained by lung radiomics" in table and "lower_glcm_Idm" in table


def test_a_class_without_a_pick_gets_its_reason_beside_the_picks(tmp_path: Path) -> None:
    """The strategy's why_unpicked rows are tabled after the picks and written to unpicked.csv, for
    a strategy that learned only."""
    for learned_ in (True, False):
        data = _synthetic(tmp_path / str(learned_), learned=learned_)
        rep = data.strategies["scratch"]
        rep.candidates = _two_candidates()
        rep.unpicked = pd.DataFrame(
            {
                "strategy": ["scratch"],
                "class": ["Fibrosis"],
                "shortlisted": [20],
                "significant": [20],
                "stable": [0],
                "why": ["each fold's network separates Fibrosis with units of its own"],
            }
        )
        html = build_report_page(data).render()
        section = html.split('<h2 id="candidate-biomarkers"')[1].split("<h2")[0]
        shown = "Classes whose pick above is only the top-ranked feature" in section
        assert shown is learned_
        assert ("units of its own" in section) is learned_
        written = write_report(data)
        assert ("unpicked" in written) is learned_
        if learned_:
            pd.testing.assert_frame_equal(pd.read_csv(written["unpicked"]), rep.unpicked)


@pytest.mark.parametrize("swap", ["tag", "lungs"])
def test_lung_swap_flag_is_shown_in_the_audit_and_beside_the_candidates(
    tmp_path: Path, swap: str
) -> None:
    data = _synthetic(tmp_path, learned=True, swap=swap)
    data.strategies["scratch"].candidates = _two_candidates()
    reading = data.strategies["scratch"].lung_swap_reading
    html = build_report_page(data).render()
    audit = html.split('<h2 id="shortcut-audit"')[1].split("<h2")[0]
    candidates = html.split('<h2 id="candidate-biomarkers"')[1].split("<h2")[0]
    assert "scratch: lung swap" in audit and "lung swap per class" in audit
    if swap == "tag":
        assert reading.flagged == ("COVID-19",)
        assert "sway the answers toward COVID-19" in audit
        assert "answers for COVID-19 swayed by what surrounds the lungs" in candidates
        assert any("lung swap" in t for t in limitations(data))
    else:
        assert reading.verdict == "follows the lungs" and "Follows the lungs" in audit
        assert "swayed by what surrounds" not in candidates
        assert not any("lung swap" in t for t in limitations(data))


@pytest.mark.parametrize("learned", [True, False])
def test_blackout_reading_is_its_own_verdict(tmp_path: Path, learned: bool) -> None:
    data = _synthetic(tmp_path, learned=learned, blackout="collapse")
    reading = data.strategies["scratch"].blackout_reading
    html = build_report_page(data).render()
    audit = html.split('<h2 id="shortcut-audit"')[1].split("<h2")[0]
    if learned:
        assert reading.verdict == "out of distribution" and "Out of distribution" in audit
        assert any("lung blackout: Out of distribution" in t for t in limitations(data))
    else:
        assert reading.verdict == "model at chance" and "Not readable" in audit
        assert not any("lung blackout" in t for t in limitations(data))


def test_a_control_not_above_chance_on_its_films_is_not_called_at_chance(tmp_path: Path) -> None:
    """A strategy that passed the chance guard on all its films can fail it on the films a
    control re-reads (those with usable lung masks): the summary calls the control not readable
    and does not say "model at chance" beside "has learned something"."""
    from biomark.analysis.blackout import read_blackout
    from biomark.analysis.chance import NOT_READABLE_AT_CHANCE
    from biomark.analysis.lung_swap import pair_donors, read_lung_swap
    from biomark.report.report_text import strategy_summary

    data = _synthetic(tmp_path, learned=True)
    rep = data.strategies["scratch"]
    labels = rep.meta["label"].to_numpy()
    guessed = np.random.default_rng(1).choice(rep.classes, size=labels.size)
    lungs = labels[pair_donors(labels, np.ones(labels.size, bool), seed=0)]
    rep.blackout_reading = read_blackout(labels, guessed, np.roll(guessed, 1))
    rep.lung_swap_reading = read_lung_swap(labels, guessed, lungs, lungs)
    assert rep.blackout_reading.verdict == rep.lung_swap_reading.verdict == "model at chance"
    summary = strategy_summary(rep)
    assert strategy_learned(rep)
    not_readable = NOT_READABLE_AT_CHANCE
    assert f"lung blackout: {not_readable}; lung swap: {not_readable}." in summary
    assert "at chance" not in summary


@pytest.mark.parametrize("with_null", [True, False])
def test_outside_lung_flags_are_read_against_random_units(tmp_path: Path, with_null: bool) -> None:
    """With the run's random-network null, the limitations name the threshold it sets and the
    band of the random units; without it, the fixed threshold."""
    from biomark.analysis.lung_null import LungNull

    data = _synthetic(tmp_path, learned=True)
    scratch = data.strategies["scratch"]
    scratch.candidates = pd.DataFrame(
        {
            "feature": ["f0000", "f0001", "f0002"],
            "class": "COVID-19",
            "lung_fraction": [0.30, 0.45, 0.70],
            "flag_outside_lungs": pd.array([True, True, False], dtype="boolean"),
        }
    )
    if with_null:
        scratch.lung_null = LungNull(
            np.linspace(0.46, 0.52, 101), n_images=768, source="303 units of 3 random backbones"
        )
    texts = limitations(data)
    (sentence,) = [t for t in texts if t.startswith("scratch: 2 of 3 shortlisted")]
    if with_null:
        assert (
            "further outside the lungs than 95 % of units without a learned preference" in sentence
        )
        assert (
            "(lung fraction below 0.463; random units: median 0.49, 5th-95th percentile 0.46-0.52)."
            in sentence
        )
        # 2 of 3 flagged where random units fall 5 % of the time: more than chance
        assert "at a rate of 5.0 %, so about 0.1 of 3 would by chance (p = 0.0071" in sentence
        assert "lean outside the lungs" in sentence
        many = pd.DataFrame(
            {
                "feature": [f"f{j:04d}" for j in range(100)],
                "class": "COVID-19",
                "lung_fraction": np.r_[0.40, 0.41, np.full(98, 0.6)],
                "flag_outside_lungs": pd.array([True, True] + [False] * 98, dtype="boolean"),
            }
        )
        scratch.candidates = many
        (few,) = [t for t in limitations(data) if t.startswith("scratch: 2 of 100 shortlisted")]
        assert "about 5.0 of 100 would by chance (p = 0.96" in few
        assert "no more than chance, so this many flags is no evidence" in few
        scratch.candidates = many.iloc[:3].assign(flag_outside_lungs=[True, True, False])
        (general,) = [t for t in texts if t.startswith("Lung fractions are read against")]
        assert "the 303 units of 3 random backbones, measured on 768 of the run's films" in general
        assert "in the lungs at 0.517 or more and is flagged outside them below 0.463" in general
        frozen = replace(scratch, label="frozen")  # a random-features control in this run
        data.strategies = {"frozen": frozen}
        (control,) = [t for t in limitations(data) if t.startswith("frozen: 2 of 3 shortlisted")]
        assert "This is a random-features control: its units have no learned preference" in control
        assert "This is a random-features control" not in sentence
    else:
        assert sentence.endswith("(lung fraction below 0.5).")
        assert not any(t.startswith("Lung fractions are read against") for t in texts)


@pytest.mark.parametrize(
    ("weights", "learned", "expected"),
    [
        ("none", True, "frozen is a random-features control here"),
        ("/weights/mobilenet_v2.h5", True, "this supports the paper's claim"),
        (
            "/weights/mobilenet_v2.h5",
            False,
            "No conclusion about the paper's claim: scratch is not above chance",
        ),
    ],
)
def test_claim_needs_pretrained_weights_and_a_model_that_learned(
    tmp_path: Path, weights: str, learned: bool, expected: str
) -> None:
    data = _synthetic(tmp_path, learned=learned, weights=weights)
    data.cka = pd.DataFrame(
        [
            {
                "a": "scratch",
                "b": "frozen",
                "linear_cka_debiased": 0.31,
                "folds": "all",
                "source": "compare_scratch_vs_frozen.csv",
            }
        ]
    )
    text = claim_verdict(data)[0]
    assert text.startswith("scratch vs frozen: debiased linear CKA 0.31") and expected in text
    if expected != "this supports the paper's claim":
        assert "supports the paper's claim" not in text


#: Two classes of 40 films (20 patients) from two sites: enough patients for the within-class source
#: test.
TWO_SITES = {c: {"site_A": 40, "site_B": 40} for c in ("COVID-19", "Normal")}


def _region_tables(meta: pd.DataFrame, outside_tag: float) -> dict[str, pd.DataFrame]:
    """Noise radiomics of the lungs and of the image outside them; ``outside_tag`` writes the source
    there."""
    rng = np.random.default_rng(3)
    b = (meta["source"] == "site_B").to_numpy(dtype=float)
    tables = {}
    for region, tag in (("lungs", 0.0), ("outside the lungs", outside_tag)):
        values = rng.standard_normal((len(meta), 5))
        values[:, 0] += tag * b
        tables[region] = pd.DataFrame(
            values, columns=[f"firstorder_F{j}" for j in range(5)]
        ).assign(image_id=meta["image_id"].to_numpy())
    return tables


def test_the_source_in_the_images_is_set_beside_the_model(tmp_path: Path) -> None:
    from biomark.analysis.source_regions import source_by_region

    data = _synthetic(tmp_path, learned=True, composition=TWO_SITES)
    meta = data.strategies["scratch"].meta
    data.source_regions = source_by_region(_region_tables(meta, 4.0), meta, n_permutations=99)
    html = build_report_page(data).render()
    assert "The images carry their source outside the lungs" in _top(html)
    audit = html.split('<h2 id="shortcut-audit"')[1].split("<h2")[0]
    assert "Where do the images carry their source?" in audit and "a shortcut is available" in audit
    # the synthetic features are noise: the model-level audit finds nothing, and says so beside it
    assert "scratch: its features do not carry the source within classes" in audit
    assert "no sign that this model took the shortcut the images offer" in audit
    paths = write_report(data)
    table = pd.read_csv(paths["source_regions"])
    outside = table[table["region"] == "outside the lungs"]
    assert len(outside) == 2 and (outside["auc"] > 0.9).all()


def test_the_report_reads_the_outside_control_of_the_datasets_radiomics(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from biomark.pipelines.report import _source_regions

    meta = _synthetic(tmp_path, learned=True, composition=TWO_SITES).strategies["scratch"].meta
    tables = _region_tables(meta, 4.0)
    folder = tmp_path / "data" / "radiomics" / "radiomics_cxr2d_lung"
    (folder / "controls" / "outside").mkdir(parents=True)
    tables["lungs"].to_parquet(folder / "features.parquet")
    dataset = SimpleNamespace(root=tmp_path / "data", manifest=meta.drop(columns=["pred", "fold"]))
    info = RunInfo.from_json({"classes": CLASSES, "positive_class": "COVID-19"})
    lungs = tables["lungs"]
    assert (
        _source_regions(dataset, lungs, info, 0) is None
    )  # no outside control: nothing to compare
    tables["outside the lungs"].to_parquet(folder / "controls" / "outside" / "features.parquet")
    audit = _source_regions(dataset, lungs, info, 0)
    assert audit is not None and audit.carries("outside the lungs") and not audit.carries("lungs")
    one_source = SimpleNamespace(root=dataset.root, manifest=dataset.manifest.assign(source="nih"))
    assert _source_regions(one_source, lungs, info, 0) is None


def test_an_unreadable_outside_control_is_a_warning_not_a_traceback(tmp_path: Path, caplog) -> None:
    from types import SimpleNamespace

    from biomark.pipelines.report import _source_regions

    meta = _synthetic(tmp_path, learned=True, composition=TWO_SITES).strategies["scratch"].meta
    folder = tmp_path / "data" / "radiomics" / "radiomics_cxr2d_lung"
    (folder / "controls" / "outside").mkdir(parents=True)
    lungs = _region_tables(meta, 0.0)["lungs"]
    lungs.to_parquet(folder / "features.parquet")
    (folder / "controls" / "outside" / "features.parquet").write_bytes(b"not a parquet file")
    dataset = SimpleNamespace(root=tmp_path / "data", manifest=meta.drop(columns=["pred", "fold"]))
    info = RunInfo.from_json({"classes": CLASSES, "positive_class": "COVID-19"})
    with caplog.at_level("WARNING"):
        assert _source_regions(dataset, lungs, info, 0) is None
    assert "source in the images not audited: cannot read" in caplog.text
    assert "biomark radiomics" in caplog.text


@pytest.mark.parametrize("copies", [True, False])
def test_near_copy_candidates_are_counted_once_in_the_summary(tmp_path: Path, copies: bool) -> None:
    data = _synthetic(tmp_path, learned=True)
    rep = data.strategies["scratch"]
    assert rep.X is not None
    if copies:  # f0001 a near-copy of f0000
        rep.X[:, 1] = 2 * rep.X[:, 0] + 0.01
    rep.candidates = mark_near_copies(_two_candidates(), rep.X, rep.feature_names)
    assert rep.candidates["copy_of"].tolist() == (["", "f0000"] if copies else ["", ""])
    html = build_report_page(data).render()
    top = _top(html)
    assert "2 candidate biomarker(s)" in top
    assert ("(1 distinct feature once near-copies are merged, see copy_of)" in top) is copies
    section = html.split('<h2 id="candidate-biomarkers"')[1].split("<h2")[0]
    assert "copy_of" in section


def test_a_remade_report_leaves_no_table_of_an_earlier_one(tmp_path: Path) -> None:
    """Re-made into the same folder, a report deletes its own optional tables that it no longer
    writes (an earlier unpicked.csv would contradict the page), and leaves the radiomics and
    compare commands' tables alone."""
    for name in ("unpicked", "ground_truth", "lung_swap", "radiomics_cca", "compare_a_vs_b"):
        (tmp_path / f"{name}.csv").write_text("x\n1\n", encoding="utf-8")
    written = {"ground_truth": tmp_path / "ground_truth.csv"}
    _remove_stale_tables(tmp_path, ["lung_swap", "unpicked", "ground_truth"], written)
    left = sorted(p.stem for p in tmp_path.glob("*.csv"))
    assert left == ["compare_a_vs_b", "ground_truth", "radiomics_cca"]
