"""``biomark radiomics`` from the command line."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from biomark.exceptions import ConfigError, NotWritableError, RunError

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "analyses" / "radiomics_cxr2d.yaml"


def _parse(argv: list[str]) -> argparse.Namespace:
    from biomark.cli import radiomics as cli

    parser = argparse.ArgumentParser(prog="biomark")
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["radiomics", *argv])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    base = tmp_path_factory.mktemp("cli")
    csv = generate_phantom(base / "raw", n_per_class=2, seed=2, image_size=96)
    build_dataset(base / "data", sources={"manifest": [csv]}, image_size=96, jobs=1)
    return base / "data"


def _write_run(run_dir: Path, ids: list[str]) -> Path:
    from biomark.features.deep import fold_dir, write_features

    rng = np.random.default_rng(0)
    ids_arr = np.asarray(ids)
    for f in range(2):
        rows = np.arange(len(ids))[f::2]
        meta = pd.DataFrame(
            {
                "image_id": ids_arr[rows],
                "label": "x",
                "patient_id": ids_arr[rows],
                "source": "s",
                "fold": f,
                "strategy": "scratch",
                "pred": "x",
            }
        )
        write_features(
            fold_dir(run_dir, "scratch", f) / "features.parquet",
            meta,
            rng.normal(size=(len(rows), 8)),
        )
    return run_dir


def test_help_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, argparse\n"
        "from biomark.cli import radiomics as cli\n"
        "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers())\n"
        "try:\n    p.parse_args(['radiomics', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('radiomics', 'SimpleITK', 'tensorflow', 'keras', 'pandas') if m in "
        "sys.modules]\nprint('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert "--region {lung,image,zones}" in done.stdout
    assert "HEAVY []" in done.stdout


def test_cli_extracts_and_reports(dataset, tmp_path, capsys) -> None:
    from biomark.data.dataset import load_dataset

    ids = load_dataset(dataset).manifest["image_id"].tolist()
    run_dir = _write_run(tmp_path / "myrun", ids)
    args = _parse(
        [
            "--data",
            str(dataset),
            "--params",
            str(PARAMS_FILE),
            "--jobs",
            "2",
            "--run",
            str(run_dir),
            "--reports",
            str(tmp_path / "reports"),
        ]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    folder = dataset / "radiomics" / "radiomics_cxr2d_lung"
    assert f"wrote {folder / 'features.parquet'}" in out
    assert "scratch:" in out and "phantom ground truth" in out
    # each strategy's line ends with the page's verdict (random features here: nothing to read)
    scratch_line = next(line for line in out.splitlines() if line.strip().startswith("scratch:"))
    assert scratch_line.endswith("; Too few associations for a verdict")
    # it counts pairs as the verdict does: significant and |rho| >= the controls' threshold
    counts = re.search(
        r"([\d,]+) of ([\d,]+) pairs associated \(FDR-significant with \|rho\| >= 0\.3; ([\d,]+) "
        r"significant\)",
        scratch_line,
    )
    assert counts is not None, scratch_line
    associated, total, significant = (int(g.replace(",", "")) for g in counts.groups())
    assert associated <= significant <= total and total > 0
    page = tmp_path / "reports" / "myrun" / "radiomics.html"
    assert page.is_file() and f"wrote {page}" in out
    info = json.loads((folder / "radiomics.json").read_text())
    assert info["counts"]["images"] == len(ids) and info["region"] == "lung"
    assert (
        folder / "controls" / "shuffled" / "features.parquet"
    ).is_file()  # on by default with --run
    # a second run is served from the cache
    args = _parse(
        [
            "--data",
            str(dataset),
            "--params",
            str(PARAMS_FILE),
            "--jobs",
            "1",
            "--no-controls",
            "--reports",
            str(tmp_path / "reports"),
        ]
    )
    assert args.handler(args) == 0
    assert f"0 computed, {info['counts']['extracted']} from cache" in capsys.readouterr().out
    assert (tmp_path / "reports" / dataset.name / "radiomics.html").is_file()


def test_cli_unknown_parameter_key(dataset, tmp_path) -> None:
    content = yaml.safe_load(PARAMS_FILE.read_text())
    content["setting"]["binwidth"] = 8
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(content))
    args = _parse(["--data", str(dataset), "--params", str(bad)])
    with pytest.raises(ConfigError, match=r"typo\.yaml.*binwidth"):
        args.handler(args)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.yaml", "parameter file not found"),
        (".", "a folder, not a parameter file"),
        ("binary.yaml", r"not a text file \(byte 0 is not UTF-8\)"),
    ],
)
def test_cli_params_that_are_no_file(dataset, tmp_path, name: str, message: str) -> None:
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00binary")
    args = _parse(["--data", str(dataset), "--params", str(tmp_path / name)])
    with pytest.raises(ConfigError, match=f"{message}; give a pyradiomics YAML file"):
        args.handler(args)


def test_cli_run_with_other_images(dataset, tmp_path) -> None:
    run_dir = _write_run(tmp_path / "other", [f"zz{i}" for i in range(20)])
    args = _parse(
        [
            "--data",
            str(dataset),
            "--params",
            str(PARAMS_FILE),
            "--jobs",
            "1",
            "--no-controls",
            "--run",
            str(run_dir),
            "--reports",
            str(tmp_path / "r"),
        ]
    )
    with pytest.raises(RunError, match=r"20 images, radiomics: \d+ images, in common: 0"):
        args.handler(args)


def test_cli_bad_jobs(dataset) -> None:
    args = _parse(["--data", str(dataset), "--params", str(PARAMS_FILE), "--jobs", "0"])
    with pytest.raises(ConfigError, match="--jobs"):
        args.handler(args)


def test_cli_dataset_at_a_url(dataset, ftp_storage, tmp_path, capsys, monkeypatch) -> None:
    """``--data ftp://...``: extracted on a local copy, results uploaded next to the dataset at the
    URL."""
    import shutil

    monkeypatch.setenv("BIOMARK_CACHE_DIR", str(tmp_path / "cache"))
    base, served = ftp_storage
    shutil.copytree(dataset, served / "cxr", ignore=shutil.ignore_patterns("radiomics"))
    args = _parse(
        [
            "--data",
            f"{base}/cxr",
            "--params",
            str(PARAMS_FILE),
            "--jobs",
            "1",
            "--region",
            "image",
            "--no-controls",
            "--reports",
            str(tmp_path / "reports"),
        ]
    )
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    at_url = served / "cxr" / "radiomics" / "radiomics_cxr2d_image"
    local = pd.read_parquet(
        next((tmp_path / "cache").rglob("radiomics_cxr2d_image/features.parquet"))
    )
    pd.testing.assert_frame_equal(pd.read_parquet(at_url / "features.parquet"), local)
    assert len(list((at_url / "cache").rglob("*.json"))) == len(local)
    assert (tmp_path / "reports" / "cxr" / "radiomics.html").is_file() and "radiomics:" in out


def _parse_zones_with_run(dataset: Path, run_dir: Path, reports: Path) -> argparse.Namespace:
    """``biomark radiomics --region zones --run RUN`` on ``dataset``."""
    return _parse(
        [
            "--data",
            str(dataset),
            "--params",
            str(PARAMS_FILE),
            "--region",
            "zones",
            "--run",
            str(run_dir),
            "--reports",
            str(reports),
        ]
    )


def test_an_unreadable_run_is_named_before_anything_is_extracted(dataset, tmp_path) -> None:
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"name": "broken", "plan": ')  # cut off mid-write
    args = _parse_zones_with_run(dataset, run_dir, tmp_path / "r")
    with pytest.raises(RunError, match=r"broken/run\.json: unreadable"):
        args.handler(args)
    assert not list((dataset / "radiomics").glob("*_zones"))  # nothing extracted first


def test_a_damaged_feature_table_is_named_before_anything_is_extracted(dataset, tmp_path) -> None:
    ids = pd.read_csv(dataset / "manifest.csv")["image_id"].astype(str).tolist()
    run_dir = _write_run(tmp_path / "damaged", ids)
    table = run_dir / "scratch" / "fold_01" / "features.parquet"
    pd.read_parquet(table).drop(columns=["f0003"]).to_parquet(table)  # a column lost
    args = _parse_zones_with_run(dataset, run_dir, tmp_path / "r")
    with pytest.raises(RunError, match=r"fold_01/features\.parquet: .*missing f0003"):
        args.handler(args)
    assert not list((dataset / "radiomics").glob("*_zones"))  # nothing extracted first


def test_a_reports_folder_it_cannot_write_is_named_before_anything_is_extracted(
    dataset, tmp_path
) -> None:
    (tmp_path / "a_file").write_text("x")
    args = _parse(
        ["--data", str(dataset), "--params", str(PARAMS_FILE), "--region", "zones"]
        + ["--reports", str(tmp_path / "a_file")]
    )
    with pytest.raises(NotWritableError, match=r"--reports .*/a_file/data: .*a_file is a file"):
        args.handler(args)
    assert not list((dataset / "radiomics").glob("*_zones"))  # nothing extracted first


def test_without_data_the_only_runs_own_dataset_is_read(
    dataset, tmp_path, monkeypatch, capsys, caplog
) -> None:
    """``biomark radiomics`` alone in a folder with one run: that run and the dataset its run.json
    names."""
    import biomark.cli as cli

    ids = pd.read_csv(dataset / "manifest.csv")["image_id"].astype(str).tolist()
    run_dir = _write_run(tmp_path / "runs" / "only", ids)
    (run_dir / "run.json").write_text(json.dumps({"dataset": {"dir": str(dataset)}}))
    monkeypatch.chdir(tmp_path)
    argv = ["radiomics", "--params", str(PARAMS_FILE), "--jobs", "1", "--no-controls"]
    with caplog.at_level("INFO", logger="biomark.cli.radiomics"):
        assert cli.main(["-q", *argv]) == 0
    out = capsys.readouterr().out
    assert (
        f"--data not given: reading {dataset}, the dataset runs/only was trained on" in caplog.text
    )
    # run.json's absolute path, named relative to the current folder when inside it (as a user
    # would type it), so the finished tables of an earlier `--data data/...` run are reused
    inside = tmp_path / "data_here"
    inside.symlink_to(dataset, target_is_directory=True)
    (run_dir / "run.json").write_text(json.dumps({"dataset": {"dir": str(inside)}}))
    caplog.clear()
    with caplog.at_level("INFO", logger="biomark.cli.radiomics"):
        assert cli.main(["-q", *argv]) == 0
    assert (
        "--data not given: reading data_here, the dataset runs/only was trained on" in caplog.text
    )
    assert "scratch:" in out  # the run's deep features were related, not radiomics alone
    assert (tmp_path / "reports" / "only" / "radiomics.html").is_file()


@pytest.mark.parametrize(
    ("dataset_record", "message"),
    [
        ({}, r"run\.json: names no dataset; give the dataset the run trained on with --data"),
        (
            {"dir": "/no/such/phantom"},
            r"run\.json: names /no/such/phantom, which is not a folder on this machine; give .* "
            r"--data",
        ),
    ],
)
def test_without_data_a_run_naming_no_readable_dataset_asks_for_data(
    tmp_path, monkeypatch, capsys, dataset_record, message
) -> None:
    import biomark.cli as cli

    run_dir = tmp_path / "runs" / "moved"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"dataset": dataset_record}))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "radiomics", "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"biomark radiomics: error: .*{message}", err), err
    assert not (tmp_path / "reports").exists()


def test_without_data_or_any_run_it_asks_for_either(tmp_path, monkeypatch, capsys) -> None:
    import biomark.cli as cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "radiomics"]) == 1
    err = capsys.readouterr().err
    assert "--run not given, and runs/ here holds no run" in err
    assert "or give --data DATA_DIR for a dataset's radiomics alone" in err


def test_a_run_whose_dataset_folder_is_gone_falls_back_to_its_url(tmp_path) -> None:
    """``run.json`` keeps the URL a run's dataset was copied from: used when the local folder is
    gone."""
    from biomark.pipelines.radiomics import run_dataset

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"dir": str(tmp_path / "gone"), "url": "s3://bucket/cxr"}
    (run_dir / "run.json").write_text(json.dumps({"dataset": record}))
    assert run_dataset(run_dir) == "s3://bucket/cxr"
    (tmp_path / "gone").mkdir()  # the folder is back: it comes first
    assert run_dataset(run_dir) == str(tmp_path / "gone")
