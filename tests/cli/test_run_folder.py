"""``--run`` left out: ``compare`` and ``report`` read the only run under ``runs/``
(biomark.cli.run_folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

import biomark.cli as cli
from biomark.cli.run_folder import resolve_run
from biomark.exceptions import ConfigError


def _fake_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}", encoding="utf-8")
    return folder


def test_the_only_run_is_read_and_named_in_the_log(tmp_path: Path, caplog) -> None:
    only = _fake_run(tmp_path / "runs" / "quick")
    (tmp_path / "runs" / "notes").mkdir()  # a folder without run.json is no run
    with caplog.at_level("INFO", logger="biomark.cli.run_folder"):
        assert resolve_run(None, tmp_path / "runs") == str(only)
    assert f"--run not given: reading {only}, the only run under" in caplog.text
    assert resolve_run("s3://bucket/runs/x", tmp_path / "runs") == "s3://bucket/runs/x"


def test_no_run_or_several_runs_ask_for_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no run .*biomark extract --plan PLAN"):
        resolve_run(None, tmp_path / "runs")
    a, b = _fake_run(tmp_path / "runs" / "a"), _fake_run(tmp_path / "runs" / "b")
    with pytest.raises(
        ConfigError, match=rf"holds 2 runs \({a}, {b}\); choose one, e.g. --run {a}"
    ):
        resolve_run(None, tmp_path / "runs")


def test_compare_without_run_reads_the_only_run_here(
    make_feature_run, tmp_path: Path, monkeypatch, capsys
) -> None:
    make_feature_run(tmp_path / "runs" / "only", n_per_fold=16, d=8)
    monkeypatch.chdir(tmp_path)
    argv = ["-q", "compare", "--a", "scratch", "--b", "frozen", "--permutations", "5"]
    status = cli.main([*argv, "--bootstrap", "5", "--no-umap"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "scratch vs frozen: debiased linear CKA" in out
    assert (tmp_path / "reports" / "only" / "compare_scratch_vs_frozen.html").is_file()


def test_report_without_run_in_an_empty_folder_says_what_to_do(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "report"]) == 1
    err = capsys.readouterr().err
    assert "biomark report: error: --run not given, and runs/ here holds no run" in err
    assert not (tmp_path / "reports").exists()
