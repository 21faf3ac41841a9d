"""``biomark compare`` through biomark.cli.main (biomark.cli.compare)."""

from __future__ import annotations

import pandas as pd
import pytest

import biomark.cli as cli

ARGS = ["--permutations", "10", "--bootstrap", "10", "--no-umap"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_feature_run):
    return make_feature_run(tmp_path_factory.mktemp("runs") / "clirun", n_per_fold=30, d=16)


def test_compare_pair(run_dir, tmp_path, capsys):
    status = cli.main(
        [
            "-q",
            "compare",
            "--run",
            str(run_dir),
            "--a",
            "scratch",
            "--b",
            "frozen",
            "--reports",
            str(tmp_path),
            *ARGS,
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "scratch vs frozen: debiased linear CKA 1.000" in out and "p < 0.1" in out
    html = tmp_path / "clirun" / "compare_scratch_vs_frozen.html"
    csv = html.with_suffix(".csv")
    assert html.is_file() and csv.is_file()
    assert f"wrote {html}" in out and f"wrote {csv}" in out
    frame = pd.read_csv(csv)
    n_perm = frame.loc[
        (frame.metric == "linear_cka_debiased")
        & (frame.statistic == "mean")
        & frame["class"].isna(),
        "p_value",
    ]
    assert n_perm.iloc[0] == pytest.approx(1 / 11)


def test_compare_all_pairs_with_folder_safe_names(make_feature_run, tmp_path, capsys):
    run = make_feature_run(tmp_path / "small", n_per_fold=16, d=8)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "compare:\n  per_class: false\n  n_permutations: 5\n  n_bootstrap: 5\n", encoding="utf-8"
    )
    argv = [
        "-q",
        "compare",
        "--run",
        str(run),
        "--all",
        "--plan",
        str(plan),
        "--reports",
        str(tmp_path),
        "--no-umap",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("debiased linear CKA") == 3
    names = sorted(p.name for p in (tmp_path / "small").glob("*.html"))
    assert names == [
        "compare_frozen_vs_finetune_3.html",
        "compare_scratch_vs_finetune_3.html",
        "compare_scratch_vs_frozen.html",
    ]


def test_finetune_spelling_and_plan(run_dir, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: x\ncompare:\n  n_permutations: 5\n  n_bootstrap: 0\n", encoding="utf-8")
    status = cli.main(
        [
            "-q",
            "compare",
            "--run",
            str(run_dir),
            "--a",
            "scratch",
            "--b",
            "finetune:3",
            "--plan",
            str(plan),
            "--reports",
            str(tmp_path),
            "--no-umap",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and "[no CI]" in out and "p " in out
    assert (tmp_path / "clirun" / "compare_scratch_vs_finetune_3.csv").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--a", "scratch", "--b", "finetune:11"], "strategies there: scratch, frozen, finetune:3"),
        (["--a", "scratch"], "give two strategies with --a and --b"),
        (["--all", "--a", "scratch"], "either --all or --a/--b"),
        (["--a", "scratch", "--b", "frozen", "--permutations", "-1"], "--permutations=-1"),
    ],
)
def test_bad_input_is_a_clear_error(run_dir, tmp_path, capsys, argv, message):
    status = cli.main(["-q", "compare", "--run", str(run_dir), "--reports", str(tmp_path), *argv])
    assert status == 1
    assert message in capsys.readouterr().err


def test_missing_run_folder(tmp_path, capsys):
    assert (
        cli.main(
            ["-q", "compare", "--run", str(tmp_path / "nope"), "--a", "scratch", "--b", "frozen"]
        )
        == 1
    )
    assert "run folder not found" in capsys.readouterr().err


def test_help_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, argparse\nfrom biomark.cli import compare\np = argparse.ArgumentParser()\n"
        "compare.add_parser(p.add_subparsers())\n"
        "heavy = [m for m in ('numpy', 'pandas', 'umap', 'plotly', 'tensorflow') if m in "
        "sys.modules]\nprint(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("name", "what"), [("features.parquet", "feature table"), ("blocks.npz", "per-block outputs")]
)
def test_truncated_fold_file_is_named_with_its_fold(make_feature_run, tmp_path, capsys, name, what):
    """A half-copied file used to end in pyarrow's (or zipfile's) raw traceback."""
    run = make_feature_run(tmp_path / "cut", n_per_fold=12, d=8, blocks=True)
    path = run / "frozen" / "fold_01" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    argv = [
        "-q",
        "compare",
        "--run",
        str(run),
        "--a",
        "scratch",
        "--b",
        "frozen",
        "--reports",
        str(tmp_path),
        *ARGS,
    ]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{path}: the {what} of strategy 'frozen' fold 1 cannot be read" in err
    assert (
        f"Delete the fold folder {path.parent} and re-run `biomark extract`" in err
        and "Traceback" not in err
    )
    # Following the advice: the redone fold (here a fresh copy of it) reads again.
    from biomark.features.deep import load_block_features, load_features

    fresh = make_feature_run(tmp_path / "fresh", n_per_fold=12, d=8, blocks=True)
    path.write_bytes((fresh / "frozen" / "fold_01" / name).read_bytes())
    (load_features if name == "features.parquet" else load_block_features)(run, "frozen", 1)


def test_truncated_folds_csv_is_named(make_feature_run, tmp_path, capsys):
    run = make_feature_run(tmp_path / "cut", n_per_fold=12, d=8)
    folds = run / "folds.csv"
    folds.write_bytes(b"image_id,fo")
    assert (
        cli.main(["-q", "compare", "--run", str(run), "--a", "scratch", "--b", "frozen", *ARGS])
        == 1
    )
    err = capsys.readouterr().err
    assert f"{folds}: the run's fold table cannot be read" in err and "Traceback" not in err


def test_a_reports_folder_it_cannot_write_is_named_before_comparing(
    run_dir, tmp_path, capsys, monkeypatch
):
    def no_comparison(*args, **kwargs):
        raise AssertionError("compared before checking --reports")

    monkeypatch.setattr("biomark.pipelines.compare.compare_strategies", no_comparison)
    (tmp_path / "a_file").write_text("x")
    argv = ["--a", "scratch", "--b", "frozen", "--reports", str(tmp_path / "a_file")]
    assert cli.main(["-q", "compare", "--run", str(run_dir), *argv]) == 1
    err = capsys.readouterr().err
    assert f"--reports {tmp_path / 'a_file' / 'clirun'}: {tmp_path / 'a_file'} is a file" in err
