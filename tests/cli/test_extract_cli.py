"""``biomark extract`` on the command line: help, dry run, overrides, errors, printing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from biomark.cli import main
from biomark.config import plan_to_dict

REPO = Path(__file__).resolve().parents[2]


import tiny_data as helpers  # noqa: E402  (tests/ is on sys.path, see tests/conftest.py)


def write_plan(path: Path, data: Path, out: Path, **overrides: Any) -> Path:
    plan = helpers.tiny_plan(data, out, **overrides)
    path.write_text(yaml.safe_dump(plan_to_dict(plan)), encoding="utf-8")
    return path


def test_help_imports_no_keras() -> None:
    code = (
        "import sys\n"
        "from biomark.cli import main\n"
        "try:\n"
        "    main(['extract', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('HEAVY', [m for m in ('keras', 'tensorflow', 'jax', 'sklearn') if m in "
        "sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert "--dry-run" in out.stdout and "--strategies" in out.stdout
    assert "HEAVY []" in out.stdout


def test_dry_run_prints_the_jobs_and_trains_nothing(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml",
        tmp_path / "elsewhere",
        tmp_path / "ignored",
        strategies=["scratch", "frozen", "finetune:2"],
    )
    status = main(
        [
            "extract",
            "--plan",
            str(plan),
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "runs"),
            "--folds",
            "2",
            "--strategies",
            "scratch,finetune:2",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert f"-> {tmp_path / 'runs' / 'tiny'}" in out
    assert "24 images, 3 classes: COVID-19 8, Normal 8, Pneumonia 8" in out
    assert "2 folds (patient grouping)" in out
    assert "jobs: 4 (0 finished, 4 to run)" in out
    assert "todo  finetune:2 fold 1" in out and "frozen" not in out.split("jobs:")[1]
    assert not (tmp_path / "runs").exists()


def test_flags_go_through_plan_validation(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    plan = write_plan(tmp_path / "plan.yaml", tiny_dataset, tmp_path / "runs")
    assert main(["extract", "--plan", str(plan), "--folds", "1", "--dry-run"]) == 1
    assert "cv.k=1" in capsys.readouterr().err
    assert main(["extract", "--plan", str(plan), "--epochs", "0", "--dry-run"]) == 1
    assert "training.epochs=0" in capsys.readouterr().err
    assert main(["extract", "--plan", str(plan), "--strategies", "finetune:99", "--dry-run"]) == 1
    assert "outside 1-16" in capsys.readouterr().err


def test_bad_data_is_reported_not_raised(tmp_path: Path, capsys) -> None:
    data = helpers.make_dataset(tmp_path / "data", n_per_class=(8, 8, 2), images_per_patient=1)
    plan = write_plan(tmp_path / "plan.yaml", data, tmp_path / "runs")
    assert main(["extract", "--plan", str(plan), "--folds", "3"]) == 1
    err = capsys.readouterr().err
    assert "class 'Pneumonia' has only 2 image(s)" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_real_run_prints_the_folder_and_the_table(
    tiny_dataset: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("BIOMARK_PROGRESS", "0")  # restored after the test (main's -q sets it)
    # frozen: what the command prints does not depend on the strategy, and a frozen fold traces
    # no backbone gradients (~25 s less on a 2-core AVX2 CPU)
    plan = write_plan(
        tmp_path / "plan.yaml", tiny_dataset, tmp_path / "runs", strategies=["frozen"]
    )
    assert main(["-q", "extract", "--plan", str(plan)]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "tiny"
    assert f"run folder: {run_dir}" in out
    assert "| Off-the-shelf features (frozen) |" in out and "Accuracy 3-class (%)" in out
    assert (run_dir / "summary.md").is_file()
    _assert_the_folds_share_one_random_backbone(run_dir, "frozen")
    # a second call resumes: nothing left to train, same table
    assert main(["-q", "extract", "--plan", str(plan)]) == 0
    assert "| Off-the-shelf features (frozen) |" in capsys.readouterr().out


def _assert_the_folds_share_one_random_backbone(run_dir: Path, strategy: str) -> None:
    """A random-features control's folds read the images through one seeded backbone: its weights
    are the same in both saved models (the backbone is frozen), and each fold's own seed is kept."""
    import json

    from biomark.features.deep import fold_dir
    from biomark.models.strategies import get_backbone
    from biomark.pipelines.extract_job import backbone_seed, job_seed
    from biomark.train.predict import load_model

    records = [
        json.loads((fold_dir(run_dir, strategy, f) / "metrics.json").read_text()) for f in (0, 1)
    ]
    assert [r["backbone_seed"] for r in records] == [backbone_seed(0)] * 2
    assert [r["seed"] for r in records] == [job_seed(0, strategy, f) for f in (0, 1)]
    backbones = [
        get_backbone(load_model(fold_dir(run_dir, strategy, f) / "model.keras")) for f in (0, 1)
    ]
    for name in ("Conv1", "block_16_depthwise", "Conv_1"):
        np.testing.assert_array_equal(
            *(np.asarray(b.get_layer(name).get_weights()[0]) for b in backbones)
        )


def test_urls_dry_run_and_bad_protocol(
    tiny_dataset: Path, ftp_storage, tmp_path: Path, capsys, monkeypatch
) -> None:
    """--data/--out as URLs: the dry run reads the dataset through its local copy; an unknown
    protocol is named."""
    import shutil

    monkeypatch.setenv("BIOMARK_CACHE_DIR", str(tmp_path / "cache"))
    base, served = ftp_storage
    shutil.copytree(tiny_dataset, served / "tiny_data")
    plan = write_plan(tmp_path / "plan.yaml", tmp_path / "ignored", tmp_path / "ignored")
    status = main(
        [
            "extract",
            "--plan",
            str(plan),
            "--data",
            f"{base}/tiny_data",
            "--out",
            f"{base}/runs",
            "--folds",
            "2",
            "--strategies",
            "scratch",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"-> {tmp_path / 'cache' / 'runs'}" in out and "24 images, 3 classes" in out
    assert "jobs: 2 (0 finished, 2 to run)" in out
    assert not (served / "runs").exists(), "a dry run writes nothing at the URL"

    assert (
        main(["extract", "--plan", str(plan), "--out", "nosuch://bucket/runs", "--folds", "2"]) == 1
    )
    assert "knows no protocol 'nosuch'" in capsys.readouterr().err


def test_read_only_out_is_named_before_training(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    from tmpfs import mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)

    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as folder:
        plan = write_plan(tmp_path / "plan.yaml", tiny_dataset, folder / "runs")
        assert main(["extract", "--plan", str(plan)]) == 1
        err = capsys.readouterr().err
        assert (
            f"output folder (--out / output_dir) {folder / 'runs' / 'tiny'}: cannot write in "
            f"{folder}" in err
        )
        assert "Read-only file system" in err and "Traceback" not in err


def test_following_the_fold_advice_works(tmp_path: Path, capsys) -> None:
    """A class too small for k: the message's cv.k and cv.validation_fraction, applied, pass every
    check.

    Before, "lower cv.k to at most 2" led to scikit-learn's raw "n_splits=4 cannot be greater than
    the number of members in each class" from the validation split inside the training folds.
    """
    import re

    data = helpers.make_dataset(tmp_path / "data", n_per_class=(5, 5, 2), images_per_patient=1)
    plan = write_plan(tmp_path / "plan.yaml", data, tmp_path / "runs")
    assert main(["extract", "--plan", str(plan), "--folds", "4", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "n_splits" not in err
    k = re.search(r"lower cv\.k to at most (\d+)", err)
    fraction = re.search(r"set cv\.validation_fraction to (0\.\d+)", err)
    assert k and fraction, err
    plan = write_plan(
        tmp_path / "plan.yaml",
        data,
        tmp_path / "runs",
        **{"cv.validation_fraction": float(fraction[1])},
    )
    assert main(["extract", "--plan", str(plan), "--folds", k[1], "--dry-run"]) == 0, (
        capsys.readouterr().err
    )
    assert f"{k[1]} folds (patient grouping)" in capsys.readouterr().out


def test_positive_class_must_be_a_class_of_the_dataset(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    plan = write_plan(
        tmp_path / "plan.yaml", tiny_dataset, tmp_path / "runs", positive_class="Edema"
    )
    assert main(["extract", "--plan", str(plan), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "positive_class='Edema' is not a class of" in err and "Traceback" not in err
