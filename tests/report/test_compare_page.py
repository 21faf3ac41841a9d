"""The compare report page and CSV (biomark.report.compare_page)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from biomark.analysis.compare import compare_strategies
from biomark.config import CompareSettings
from biomark.report.compare_page import CKA_BANDS, format_p, interpret, report_paths, write_compare_report

FAST = CompareSettings(n_permutations=30, n_bootstrap=30, knn_k=5, umap_neighbors=10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_feature_run):
    return make_feature_run(tmp_path_factory.mktemp("runs") / "pagerun", n_per_fold=40)


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
    for heading in ("Summary", "What was compared", "CKA between the two strategies", "Layer by layer",
                    "UMAP maps", "Map quality and linear probes"):
        assert f">{heading}</h2>" in text
    assert "dump: {blocks: true}" in text  # no blocks in this run: the page says how to get them
    assert "colour by fold" in text and "img0" in text  # dropdown and hover data
    assert pd.read_csv(csv).metric.str.contains("linear_cka_debiased").any()


def test_interpretation_sentence(written):
    result, html, _ = written
    sentence = interpret(result)
    assert sentence.startswith("Debiased linear CKA between scratch and finetune:3 is")
    assert "do not mine the same features" in sentence
    assert sentence.split(":")[0] in html.read_text(encoding="utf-8")


@pytest.mark.parametrize(("mean", "p", "expected"), [
    (0.31, 0.001, "share some but far from all"),
    (0.1, 0.001, "share little"),
    (0.65, 0.001, "share much"),
    (0.95, 0.001, "nearly the same representation"),
    (0.31, 0.4, "not distinguishable from unrelated"),
])
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
    assert "scratch (d = 32)" in result.text and "finetune:3 (d = 32)" in result.text  # UMAP panel titles drawn
