"""The compare report page and CSV (biomark.report.compare_page)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.alignment import own_backbones
from biomark.analysis.compare import LayerwiseCKA, shared_by_construction
from biomark.config import CompareSettings
from biomark.features.run_folder import RunFolder
from biomark.pipelines.compare import compare_strategies
from biomark.report.compare_page import (
    CKA_BANDS,
    build_compare_page,
    claim_reading,
    construction,
    diagonal_text,
    format_p,
    interpret,
    report_paths,
    strategy_guards,
    write_compare_report,
)

FAST = CompareSettings(n_permutations=30, n_bootstrap=30, knn_k=5, umap_neighbors=10)


def _set_weights(run_dir, weights: str) -> None:
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    info["plan"]["model"] = {"weights": weights}
    info["positive_class"] = "covid"
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_feature_run):
    run = make_feature_run(tmp_path_factory.mktemp("runs") / "pagerun", n_per_fold=40)
    _set_weights(
        run, "/weights/mobilenet_v2_imagenet.h5"
    )  # a pretrained file: the claim can be tested
    return run


@pytest.fixture(scope="module")
def written(run_dir, tmp_path_factory):
    result = compare_strategies(run_dir, "scratch", "finetune:3", FAST, umap=True)
    html, csv = write_compare_report(result, tmp_path_factory.mktemp("reports"))
    return result, html, csv


def test_paths_are_folder_safe(tmp_path):
    html, csv = report_paths(tmp_path, "run1", "scratch", "finetune:11")
    assert html == tmp_path / "run1" / "compare_scratch_vs_finetune_11.html"
    assert csv.suffix == ".csv" and csv.stem == html.stem


def test_files_written(written):
    result, html, csv = written
    assert html.name == "compare_scratch_vs_finetune_3.html" and html.parent.name == "pagerun"
    text = html.read_text(encoding="utf-8")
    for heading in (
        "Summary",
        "What was compared",
        "CKA between the two strategies",
        "Layer by layer",
        "UMAP maps",
        "Map quality and linear probes",
    ):
        assert f">{heading}</h2>" in text
    assert "dump: {blocks: true}" in text  # no blocks in this run: the page says how to get them
    assert "colour by fold" in text and "img0" in text  # dropdown and hover data
    assert pd.read_csv(csv).metric.str.contains("linear_cka_debiased").any()
    # both strategies train a backbone per fold and dumped no features_all.parquet: the probes'
    # section says their units were not matched across folds
    probes = text.split(">Map quality and linear probes</h2>")[1]
    for label in ("scratch", "finetune:3"):
        unmatched = f"{label}: {own_backbones(label)}, and its units could not be matched"
        assert unmatched in probes
    assert "in matched units where said above" in probes


def test_interpretation_sentence(written):
    result, html, _ = written
    sentence = interpret(result)
    assert sentence.startswith("Debiased linear CKA between scratch and finetune:3 is")
    assert "do not mine the same features" in sentence
    assert sentence.split(":")[0] in html.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("mean", "p", "expected"),
    [
        (0.31, 0.001, "share some but far from all"),
        (0.1, 0.001, "share little"),
        (0.65, 0.001, "share much"),
        (0.95, 0.001, "nearly the same representation"),
        (0.31, 0.4, "not distinguishable from unrelated"),
    ],
)
def test_interpretation_thresholds(written, mean, p, expected):
    result = written[0]
    sim = dataclasses.replace(result.headline, mean=mean, p_value=p)
    changed = dataclasses.replace(result, cka={**result.cka, "linear_cka_debiased": sim})
    assert expected in interpret(changed)
    assert len(CKA_BANDS) == 4


def test_format_p():
    assert format_p(1 / 1001, 1000) == "p < 0.001"
    assert format_p(0.0344, 1000) == "p = 0.034"
    assert format_p(None, 0) == "no permutation test"


@pytest.mark.browser
def test_compare_page_renders_without_errors(written, render_in_chromium):
    _, html, _ = written
    result = render_in_chromium(html, budget_ms=8000)
    assert result.errors == []
    assert result.plot_divs >= 3 and result.plots_rendered == result.plot_divs
    assert "UMAP maps" in result.headings
    assert (
        "scratch (d = 32)" in result.text and "finetune:3 (d = 32)" in result.text
    )  # UMAP panel titles drawn


# --------------------------------------------------------------------------- #
# The claim needs pretrained weights and learned models (issue 12 item 6, issue 13 item 4)
# --------------------------------------------------------------------------- #
def _with(result, **plan_model):
    info = dataclasses.replace(result.info, plan={**result.info.plan, "model": plan_model})
    return dataclasses.replace(result, info=info)


def _strong(result, mean=0.31, p=0.001):
    sim = dataclasses.replace(result.headline, mean=mean, p_value=p)
    return dataclasses.replace(result, cka={**result.cka, "linear_cka_debiased": sim})


def test_random_backbone_control_is_named_and_draws_no_conclusion(written):
    result = _strong(_with(written[0], weights="none"))
    sentence = interpret(result)
    assert (
        "finetune:3 is a random-features control" in sentence
        and "model.weights is 'none'" in sentence
    )
    assert "can neither support nor refute the paper's claim" in sentence
    assert "this supports the paper's claim" not in sentence
    summary = build_compare_page(result).render().split('<h2 id="what-was-compared"')[0]
    assert "random-features control" in summary
    # said once, in a warning box with the CKA reading
    assert summary.count("is a random-features control here") == 1
    assert summary.count('class="note warning"') >= 1


def test_two_controls_from_one_random_backbone_state_what_they_share(written, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(written[0].run.root, run)
    result = _strong(
        dataclasses.replace(_with(written[0], weights="none"), a="frozen", b="finetune:3")
    )
    result = dataclasses.replace(result, run=RunFolder(run))
    sentence = interpret(result)
    assert "frozen and finetune:3 are random-features controls" in sentence
    assert "can neither support nor refute the paper's claim" in sentence
    assert (
        "Both start from one random backbone and share the stem and blocks 1–13 of 16 by "
        "construction" in sentence
    )
    assert construction(result).last_shared_block == "block_13"
    # a run made when each control drew its own backbone: nothing shared, nothing claimed
    for strategy, seed in (("frozen", 5), ("finetune:3", 6)):
        folder = RunFolder(run).fold_dir(strategy, 0)
        (folder / "metrics.json").write_text(json.dumps({"backbone_seed": seed}))
    assert RunFolder(run).backbone_seeds("finetune:3") == {6: [0]}
    sentence = interpret(result)
    assert "Both start from one random backbone" not in sentence
    assert construction(result).shared == ()
    assert "frozen and finetune:3 are random-features controls" in sentence


def test_pretrained_path_lets_the_sentence_speak_to_the_claim(written):
    result = _strong(_with(written[0], weights="/weights/mobilenet_v2_imagenet.h5"))
    assert (
        "this supports the paper's claim that the strategies 'do not mine the same features'"
        in interpret(result)
    )


def test_shared_blocks_are_stated_for_frozen_vs_finetune():
    built = shared_by_construction("frozen", "finetune:3", "imagenet")
    text = claim_reading(0.67, p_value=0.001, built=built, guards={})
    assert "share much of their representation" in text
    assert (
        "share the stem and blocks 1–13 of 16 by construction" in text
        and "only blocks 14–16" in text
    )
    assert "supports the paper's claim" not in text
    assert built.last_shared_block == "block_13" and built.tests_claim


def test_diagonal_calibrates_against_the_last_shared_block(written):
    names = ("block_12", "block_13", "block_14", "block_15", "block_16", "Conv_1")
    matrix = np.full((6, 6), 0.3)
    np.fill_diagonal(matrix, [1.0, 1.0, 0.93, 0.85, 0.8, 0.67])
    result = dataclasses.replace(
        written[0], layerwise=LayerwiseCKA(names, names, matrix, (0, 1, 2))
    )
    built = shared_by_construction("frozen", "finetune:3", "imagenet")
    text = diagonal_text(result, built)
    assert (
        "block_13 (last shared) 1.00, block_14 0.93, block_15 0.85, block_16 0.80, Conv_1 0.67"
        in text
    )
    assert "from 1.00 to 0.67" in text
    assert diagonal_text(result, shared_by_construction("scratch", "frozen", "imagenet")) == ""


def test_a_strategy_at_chance_blocks_any_conclusion(written, caplog):
    result = _strong(written[0])
    meta = result.meta.copy()
    rng = np.random.default_rng(0)
    meta["pred_b"] = rng.choice(
        sorted(meta["label"].unique()), size=len(meta)
    )  # finetune:3 guesses
    result = dataclasses.replace(result, meta=meta)
    guards = strategy_guards(result)
    assert guards["scratch"].learned and not guards["finetune:3"].learned
    assert guards["finetune:3"].binary is not None  # run.json names the positive class
    sentence = interpret(result)
    assert "No conclusion about the paper's claim: finetune:3 is not above chance" in sentence
    assert "supports" not in sentence
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="biomark.analysis.chance"):
        html = build_compare_page(result).render()
    top = html.split('<h2 id="what-was-compared"')[0]
    assert "finetune:3 has NOT learned to tell the classes apart" in top and "Chance guard" in top
    at_chance = [r for r in caplog.records if "finetune:3: accuracy" in r.getMessage()]
    assert len(at_chance) == 1  # the page's log says it once, not once per sentence that uses it


def test_run_info_reads_the_positive_class(run_dir):
    assert RunFolder(run_dir).read_info().positive_class == "covid"


def test_the_plans_report_thresholds_reach_the_reading(written):
    """report.cka_alpha and report.chance_alpha of the run's plan set the reading and the chance
    guards."""
    result = written[0]
    sim = dataclasses.replace(result.headline, mean=0.31, p_value=0.3)
    plan = {**result.info.plan, "report": {"cka_alpha": 0.5, "chance_alpha": 0.01}}
    changed = dataclasses.replace(
        result,
        cka={**result.cka, "linear_cka_debiased": sim},
        info=dataclasses.replace(result.info, plan=plan),
    )
    assert "share some but far from all" in interpret(
        changed
    ) and "not distinguishable" not in interpret(changed)
    default = interpret(dataclasses.replace(changed, info=result.info))
    assert "not distinguishable from unrelated representations at the 0.05 level" in default
    assert {g.multiclass.alpha for g in strategy_guards(changed).values()} == {0.01}
