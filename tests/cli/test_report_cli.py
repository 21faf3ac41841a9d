"""biomark report from the command line, on synthetic run folders without models or dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from biomark.cli import main
from biomark.features.deep import fold_dir
from biomark.onednn import onednn_setting, running_kernels


def _finish(
    run_dir: Path, strategies: tuple[str, ...], n_folds: int, skip: tuple[str, int] | None = None
) -> None:
    for s in strategies:
        for f in range(n_folds):
            if (s, f) != skip:
                (fold_dir(run_dir, s, f) / "done.json").write_text(json.dumps({"fold": f}))


@pytest.fixture
def synthetic_run(tmp_path: Path, make_feature_run) -> Path:
    run = make_feature_run(
        tmp_path / "runs" / "synth",
        strategies=("scratch", "frozen"),
        n_folds=3,
        n_per_fold=40,
        d=16,
    )
    _finish(run, ("scratch", "frozen"), 3, skip=("frozen", 2))
    return run


def test_report_cli_writes_the_page_and_prints_candidates(
    synthetic_run: Path, tmp_path: Path, capfd
) -> None:
    reports = tmp_path / "reports"
    status = main(
        [
            "-q",
            "report",
            "--run",
            str(synthetic_run),
            "--reports",
            str(reports),
            "--top-k",
            "4",
            "--shap-samples",
            "4",
        ]
    )
    captured = capfd.readouterr()  # fd level: the strategies are analysed in worker processes
    out = captured.out
    assert status == 0, out
    # the unfinished fold is a warning in the log too, even with -q
    assert "frozen fold 2: fold(s) [2] are not finished" in captured.err
    index = reports / "synth" / "index.html"
    assert index.is_file() and f"wrote {index}" in out
    assert "strategy" in out and "is_candidate" in out
    # each strategy in the index page's own summary sentence, then the table under a title naming
    # the CSV
    for label in ("scratch", "frozen"):
        assert (
            f"({label}): 0 candidate biomarker(s) among 12 shortlisted (feature, class) pairs; 12 "
            "undetermined" in out
        )
    csv = reports / "synth" / "candidates.csv"
    assert (
        "top 10 rows of the candidate table (candidates first, then the best-ranked shortlisted "
        f"features; every row in {csv}):" in out
    )
    assert "(scratch): 0 candidate" in out and "Audit: pooled over the classes, source is" in out
    assert "folds [0, 1] (not finished: [2])" in out
    # what is missing, why, and what fills it; a sentence is not wrapped as a command
    missing = [line for line in out.splitlines() if line.startswith("missing: ")]
    assert any(
        line.startswith("missing: Radiomic correlates")
        and "; run `biomark radiomics --data" in line
        for line in missing
    ), missing
    assert all("run `restore" not in line for line in missing)
    # report.json: what the report rests on and was made with
    record = json.loads((reports / "synth" / "report.json").read_text(encoding="utf-8"))
    assert record["settings"]["top_k"] == 4 and record["settings"]["shap_samples"] == 4
    assert record["settings"]["criteria"]["alpha"] == 0.05 and record["settings"]["seed"] == 0
    assert len(record["run"]["run_json_sha256"]) == 64
    assert record["strategies"]["frozen"]["folds"] == [0, 1]
    assert record["strategies"]["frozen"]["folds_not_finished"] == [2]
    assert record["strategies"]["scratch"]["summary"].startswith("Training from scratch (scratch):")
    assert [w["check"] for w in record["warnings"]] == ["unfinished folds"]
    assert "packages" in record["environment"]
    # the model passes' kernels (biomark.onednn): the user's setting, else those of a TensorFlow
    # already running in this process, else oneDNN
    assert record["environment"]["tf_enable_onednn_opts"] == (
        onednn_setting() or running_kernels() or "1"
    )
    table = pd.read_csv(reports / "synth" / "candidates.csv")
    assert set(table["strategy"]) == {"scratch", "frozen"} and len(table) == 2 * 3 * 4
    assert (
        table["is_candidate"].isna().all()
    )  # no models: stability and lungs untested, verdict open
    text = index.read_text(encoding="utf-8")
    assert "no SHAP values" in text and "fold(s) [2] are not finished" in text
    assert "biomark radiomics --data" in text


def test_report_cli_subset_of_strategies(synthetic_run: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "-q",
                "report",
                "--run",
                str(synthetic_run),
                "--reports",
                str(tmp_path / "r"),
                "--strategies",
                "scratch",
                "--no-blackout",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "r" / "synth" / "candidates.csv")
    assert set(table["strategy"]) == {"scratch"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k=0"),
        (["--workers", "0"], "--workers=0"),
        (["--seed", "-1"], "--seed=-1: a seed must be an integer from 0 to 2,147,483,647"),
        (["--seed", str(2**32)], "--seed=4294967296: a seed must be"),
        (["--strategies", "finetune:9"], "not in run"),
    ],
)
def test_report_cli_errors(
    synthetic_run: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    status = main(["-q", "report", "--run", str(synthetic_run), "--reports", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert status == 1 and message in err and "Traceback" not in err


def test_report_cli_on_a_folder_that_is_no_run(tmp_path: Path, capsys) -> None:
    assert main(["-q", "report", "--run", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err


def test_report_reads_radiomics_and_compare_outputs(
    synthetic_run: Path, tmp_path: Path, capsys
) -> None:
    reports = tmp_path / "reports"
    out = reports / "synth"
    out.mkdir(parents=True)
    pairs = pd.DataFrame(
        {
            "deep": ["f0000", "f0001", "f0000", "f0002"],
            "radiomic": ["glcm_Contrast", "firstorder_Mean", "glcm_Contrast", "shape2D_Elongation"],
            "family": ["glcm", "firstorder", "glcm", "shape2D"],
            "rho": [0.5, -0.4, 0.3, 0.2],
            "p": 1e-5,
            "q": 1e-4,
            "significant": True,
            "strategy": ["scratch", "scratch", "frozen", "frozen"],
        }
    )
    pairs.to_csv(out / "radiomics_associations.csv", index=False)
    pd.DataFrame(
        {
            "a": "scratch",
            "b": "frozen",
            "metric": "linear_cka_debiased",
            "strategy": "",
            "class": "",
            "fold": "all",
            "statistic": "mean",
            "value": [0.42],
            "ci_low": 0.3,
            "ci_high": 0.5,
            "p_value": 0.01,
            "n_images": 120,
        }
    ).to_csv(out / "compare_scratch_vs_frozen.csv", index=False)
    (out / "compare_scratch_vs_frozen.html").write_text("<html></html>")
    assert (
        main(
            [
                "-q",
                "report",
                "--run",
                str(synthetic_run),
                "--reports",
                str(reports),
                "--top-k",
                "16",
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "candidates.csv").set_index(["strategy", "class", "feature"])
    # the radiomics page's pairs are over all films; without the dataset's per-image radiomics
    # nothing is correlated within a class
    assert table["radiomic_correlates_all_films"].astype(str).str.contains("glcm_Contrast").any()
    assert table["radiomic_correlates"].isna().all()
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "debiased linear CKA 0.42 (compare_scratch_vs_frozen.csv)" in text
    assert "Jaccard overlap of radiomic correlates" in text
    assert 'href="compare_scratch_vs_frozen.html"' in text
    assert "biomark compare --run" not in text and "biomark radiomics --data" not in text


@pytest.fixture
def no_analysis(monkeypatch) -> None:
    """Fail the test if the report starts analysing (the checks before it must stop it)."""

    def analyse(*args, **kwargs):
        raise AssertionError("analysed before the checks that should have stopped it")

    monkeypatch.setattr("biomark.pipelines.report.analyse_strategies", analyse)


@pytest.mark.usefixtures("no_analysis")
def test_a_reports_folder_it_cannot_write_is_named_before_the_analysis(
    synthetic_run: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "a_file").write_text("x")
    status = main(
        ["-q", "report", "--run", str(synthetic_run), "--reports", str(tmp_path / "a_file")]
    )
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"--reports {tmp_path / 'a_file' / 'synth'}: {tmp_path / 'a_file'} is a file" in err


@pytest.mark.usefixtures("no_analysis")
def test_a_reports_folder_without_room_is_named_before_the_analysis(
    synthetic_run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from biomark.pipelines.report import report_space

    # the synthetic run has two strategies
    monkeypatch.setattr("biomark.io.disk.free_bytes", lambda path: report_space(2) - 1)
    status = main(["-q", "report", "--run", str(synthetic_run), "--reports", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert f"{tmp_path / 'synth'}: not enough space for the report's pages and tables" in err
    assert "9.0 MiB" in err and "nothing was written" in err
    assert not (tmp_path / "synth" / "index.html").exists()
