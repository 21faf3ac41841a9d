"""biomark extract (biomark.pipelines.extract): jobs, the run, resuming, forcing, and checks before
training.

One real run (2 strategies x 2 folds of a tiny MobileNetV2) is shared by the
module; tests that change a run work on a copy of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from biomark.data.dataset import load_dataset
from biomark.exceptions import ConfigError, DataError, RunError, WeightsError
from biomark.features.deep import META_COLUMNS, fold_dir, load_block_features, load_features
from biomark.features.run_folder import RunFolder
from biomark.pipelines.extract import prepare_run, run_extract
from biomark.pipelines.extract_job import job_seed, run_job

import tiny_data as helpers  # noqa: E402  (tests/ is on sys.path, see tests/conftest.py)

tiny_plan = helpers.tiny_plan
TINY_CLASSES = helpers.TINY_CLASSES

STRATEGIES = ["scratch", "frozen"]


@pytest.fixture(scope="module")
def finished_run(
    tiny_dataset: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished run: scratch + frozen (from a weights file), 2 folds, every dump."""
    out = tmp_path_factory.mktemp("runs")
    plan = tiny_plan(
        tiny_dataset,
        out,
        strategies=STRATEGIES,
        **{"model.weights": str(tiny_weights), "dump.features": "all", "dump.blocks": True},
    )
    return run_extract(plan)


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def plan_of(run_dir: Path, **overrides: Any):
    info = RunFolder(run_dir).read_info()
    return tiny_plan(
        Path(info.dataset.dir),
        run_dir.parent,
        strategies=list(info.plan_strategies),
        **{
            "model.weights": info.weights,
            "dump.features": info.plan_value("dump.features"),
            "dump.blocks": info.plan_value("dump.blocks"),
            **overrides,
        },
    )


class CountingTrainer:
    """Wraps train_fold: counts (strategy, out_dir) calls, optionally fails on call n."""

    def __init__(self, fail_on: int | None = None) -> None:
        from biomark.train import loop

        self.real = loop.train_fold
        self.calls: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def __call__(self, *args: Any, **kwargs: Any):
        self.calls.append((kwargs["strategy"].label, Path(kwargs["out_dir"]).name))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("simulated crash inside training")
        return self.real(*args, **kwargs)


# --------------------------------------------------------------------------- #
# The finished run
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_every_job_writes_its_files(finished_run: Path) -> None:
    for strategy in STRATEGIES:
        for fold in range(2):
            folder = fold_dir(finished_run, strategy, fold)
            names = {p.name for p in folder.iterdir()}
            assert {
                "model.keras",
                "history.csv",
                "split.csv",
                "features.parquet",
                "features_all.parquet",
                "blocks.npz",
                "metrics.json",
                "done.json",
            } <= names
            assert "backup" not in names
            done = json.loads((folder / "done.json").read_text())
            assert "metrics.json" in done["files"] and done["strategy"] == strategy


@pytest.mark.slow
def test_feature_tables_round_trip_with_the_documented_schema(
    finished_run: Path, tiny_dataset: Path
) -> None:
    dataset = load_dataset(tiny_dataset)
    folds = RunFolder(finished_run).read_folds()
    for strategy in STRATEGIES:
        meta, X = load_features(finished_run, strategy)
        assert list(meta.columns[: len(META_COLUMNS)]) == list(META_COLUMNS)
        assert [c for c in meta.columns if c.startswith("prob_")] == [
            f"prob_{c}" for c in TINY_CLASSES
        ]
        assert X.shape == (len(dataset), 1280) and X.dtype == np.float32
        assert sorted(meta["image_id"]) == sorted(dataset.manifest["image_id"])  # every image once
        assert set(meta["strategy"]) == {strategy}
        assert set(meta["pred"]) <= set(TINY_CLASSES)
        truth = dataset.manifest.set_index("image_id").loc[meta["image_id"]]
        assert meta["label"].tolist() == truth["label"].tolist()
        assert meta["patient_id"].tolist() == truth["patient_id"].tolist()
        expected_fold = folds.set_index("image_id").loc[meta["image_id"], "fold"].to_numpy()
        np.testing.assert_array_equal(meta["fold"].to_numpy(), expected_fold)
        probs = meta[[f"prob_{c}" for c in TINY_CLASSES]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert (np.asarray(TINY_CLASSES)[probs.argmax(axis=1)] == meta["pred"].to_numpy()).all()


@pytest.mark.slow
def test_every_strategy_is_tested_on_the_same_images(finished_run: Path) -> None:
    per_strategy = {}
    for strategy in STRATEGIES:
        per_strategy[strategy] = [
            sorted(load_features(finished_run, strategy, fold)[0]["image_id"]) for fold in range(2)
        ]
    assert per_strategy["scratch"] == per_strategy["frozen"]
    splits = [pd.read_csv(fold_dir(finished_run, s, 0) / "split.csv") for s in STRATEGIES]
    assert splits[0].equals(splits[1])  # the validation split is shared too


@pytest.mark.slow
def test_all_images_and_block_dumps(finished_run: Path, tiny_dataset: Path) -> None:
    n = len(load_dataset(tiny_dataset))
    meta, X = load_features(finished_run, "frozen", 1, kind="all")
    assert len(meta) == n and X.shape == (n, 1280)
    assert set(meta["fold"]) == {1}  # the model's fold
    oof, X_oof = load_features(finished_run, "frozen", 1)
    assert meta["in_test_fold"].sum() == len(oof)
    inside = meta[meta["in_test_fold"]].set_index("image_id")
    np.testing.assert_allclose(
        X[meta["in_test_fold"].to_numpy()][np.argsort(inside.index)],
        X_oof[np.argsort(oof["image_id"].to_numpy())],
        rtol=1e-5,
        atol=1e-6,
    )
    ids, blocks = load_block_features(finished_run, "frozen", 1)
    assert list(ids) == meta["image_id"].tolist()
    assert list(blocks) == [f"block_{i}" for i in range(1, 17)] + ["Conv_1"]
    assert all(b.shape[0] == n for b in blocks.values())


@pytest.mark.slow
def test_run_records_and_summaries(finished_run: Path) -> None:
    run = RunFolder(finished_run)
    info = run.read_info()
    assert list(info.classes) == list(TINY_CLASSES)
    assert list(info.strategies) == STRATEGIES
    assert info.folds.k == 2 and sum(info.folds.sizes) == 24
    assert info.keras["backend"] == "tensorflow"
    assert info.keras["devices"]
    assert len(info.jobs) == 4 and info.timings.last_invocation_seconds > 0
    assert len(info.dataset.manifest_sha256) == 64
    # recorded as by every executor: where each job ran, one attempt record each, the executor and
    # its retries
    assert {job.worker for job in info.jobs.values()} == {"local"} and all(
        job.host for job in info.jobs.values()
    )
    assert info.timings.executor == "serial" and info.timings.retries == 0
    assert info.timings.jobs_seconds == pytest.approx(
        sum(job.seconds for job in info.jobs.values())
    )
    assert sorted(a["job"] for a in run.attempts()) == sorted(
        f"{s}_fold_{f:02d}" for s in STRATEGIES for f in (0, 1)
    )
    for strategy in STRATEGIES:
        base = finished_run / strategy
        summary = json.loads((base / "summary.json").read_text())
        assert summary["n_folds"] == 2 and summary["bootstrap"] is not None
        assert sum(map(sum, summary["confusion"])) == 24
        confusion = pd.read_csv(base / "confusion.csv", index_col=0)
        assert confusion.index.name == "predicted" and list(confusion.columns) == list(TINY_CLASSES)
        # paper orientation: column sums are the true class sizes (8 each)
        assert confusion.sum(axis=0).tolist() == [8, 8, 8]
        two = pd.read_csv(base / "confusion_2class.csv", index_col=0)
        assert list(two.columns) == ["COVID-19", "Non-COVID-19"] and two.to_numpy().sum() == 24
        assert two["COVID-19"].sum() == 8
        assert len(pd.read_csv(base / "metrics.csv")) == 2
        metrics = json.loads((fold_dir(finished_run, strategy, 0) / "metrics.json").read_text())
        assert metrics["seed"] == job_seed(0, strategy, 0)
        assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 24
        timings = json.loads((fold_dir(finished_run, strategy, 0) / "timings.json").read_text())
        assert timings["execution"]["pipeline"]["run_eagerly"] is True  # tiny_plan's setting
    text = (finished_run / "summary.md").read_text()
    assert "Training from scratch" in text and "Off-the-shelf features (frozen)" in text
    assert "Accuracy 3-class (%)" in text and "predicted \\ actual" in text


# --------------------------------------------------------------------------- #
# Resuming and forcing
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_rerun_skips_finished_folds(
    finished_run: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    caplog.set_level("INFO", logger="biomark.pipelines.extract")
    run_extract(plan_of(run_dir))
    assert counter.calls == []
    assert caplog.text.count("skipping finished fold") == 4


@pytest.mark.slow
def test_a_crash_loses_only_its_fold_and_a_rerun_redoes_only_that(
    finished_run: Path, tmp_path: Path, monkeypatch
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    (fold_dir(run_dir, "scratch", 1) / "done.json").unlink()  # fold 1 of scratch never finished
    untouched = {
        (s, f): (fold_dir(run_dir, s, f) / "done.json").stat().st_mtime_ns
        for s in STRATEGIES
        for f in range(2)
        if (s, f) != ("scratch", 1)
    }
    crashing = CountingTrainer(fail_on=1)
    monkeypatch.setattr("biomark.train.loop.train_fold", crashing)
    with pytest.raises(RunError, match="scratch fold 1 failed"):
        run_extract(plan_of(run_dir))
    assert crashing.calls == [("scratch", "fold_01")]
    assert not (fold_dir(run_dir, "scratch", 1) / "done.json").exists()

    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    run_extract(plan_of(run_dir))
    assert counter.calls == [("scratch", "fold_01")]  # only the missing fold retrains
    assert (fold_dir(run_dir, "scratch", 1) / "done.json").is_file()
    for key, mtime in untouched.items():
        assert (fold_dir(run_dir, *key) / "done.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["metrics.json", "timings.json", "features.parquet"])
def test_a_damaged_finished_fold_is_named_and_redone_alone_once_its_folder_is_deleted(
    finished_run: Path, tmp_path: Path, monkeypatch, damaged: str
) -> None:
    """A finished fold whose record or feature table was damaged (an interrupted copy): extract
    stops with a RunError naming the file and the way back, not a raw JSON or Arrow error, and
    the way back redoes that fold alone."""
    run_dir = copy_run(finished_run, tmp_path)
    folder = fold_dir(run_dir, "scratch", 1)
    (folder / damaged).write_text("junk")
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    with pytest.raises(RunError, match="cannot be read") as caught:
        run_extract(plan_of(run_dir))
    assert str(caught.value).startswith(str(folder / damaged))
    assert f"Delete the fold folder {folder} and re-run `biomark extract`" in str(caught.value)
    assert counter.calls == []  # nothing retrained yet
    shutil.rmtree(folder)
    run_extract(plan_of(run_dir))
    assert counter.calls == [("scratch", "fold_01")]


@pytest.mark.slow
def test_force_redoes_a_finished_job(finished_run: Path, tmp_path: Path, monkeypatch) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    folder = fold_dir(run_dir, "frozen", 0)
    (folder / "stale.txt").write_text("left from an older run")
    before = (folder / "model.keras").stat().st_mtime_ns
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    assert run_job(run_dir, "frozen", 0)["fold"] == 0  # finished: nothing to do
    assert counter.calls == []
    record = run_job(run_dir, "frozen", 0, force=True)
    assert counter.calls == [("frozen", "fold_00")]
    assert record["strategy"] == "frozen" and record["n_test"] == 12
    assert (folder / "model.keras").stat().st_mtime_ns > before
    assert not (folder / "stale.txt").exists()


@pytest.mark.slow
def test_force_on_a_run_tries_every_selected_job(
    finished_run: Path, tmp_path: Path, monkeypatch
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    crashing = CountingTrainer(fail_on=1)
    monkeypatch.setattr("biomark.train.loop.train_fold", crashing)
    with pytest.raises(RunError, match="frozen fold 0 failed"):
        run_extract(plan_of(run_dir), force=True, strategies=["frozen"])
    assert crashing.calls == [("frozen", "fold_00")]
    assert (fold_dir(run_dir, "scratch", 0) / "done.json").is_file()  # other strategies untouched


@pytest.mark.slow
def test_force_clears_nothing_while_another_process_trains_a_fold(
    finished_run: Path, tmp_path: Path, monkeypatch
) -> None:
    import fcntl

    run_dir = copy_run(finished_run, tmp_path)
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    info_before = (run_dir / "run.json").read_bytes()
    lock = run_dir / ".cluster" / "locks" / "scratch_fold_01.lock"
    assert lock.is_file(), "the run's own jobs left their lock files"
    with open(lock, "a+b") as training:  # another `biomark extract` trains scratch fold 1
        fcntl.flock(training, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(
            RunError, match=r"training scratch fold 1 \(scratch/fold_01\) of this run"
        ):
            run_extract(plan_of(run_dir), force=True, strategies=["frozen"])
    assert counter.calls == []
    assert (run_dir / "run.json").read_bytes() == info_before
    for strategy in STRATEGIES:
        for fold in (0, 1):
            assert (fold_dir(run_dir, strategy, fold) / "done.json").is_file()


# --------------------------------------------------------------------------- #
# Checks before any training
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_changed_manifest_stops_a_resume(
    finished_run: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str)
    manifest.loc[0, "view"] = "AP"
    manifest.to_csv(data / "manifest.csv", index=False)
    with pytest.raises(RunError, match="manifest differs.*--force"):
        run_extract(plan_of(run_dir, **{"data.dir": str(data)}))


@pytest.mark.slow
def test_changed_training_settings_stop_a_resume(finished_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    with pytest.raises(RunError, match="training settings differ"):
        run_extract(plan_of(run_dir, **{"training.epochs": 3}))


@pytest.mark.slow
def test_changed_positive_class_stops_a_resume_and_a_run_json_without_it_resumes(
    finished_run: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(finished_run, tmp_path)
    with pytest.raises(RunError, match="positive_class settings differ"):
        run_extract(plan_of(run_dir, positive_class="Normal"))
    # run.json written before the setting existed: its top-level positive_class stands in for it
    info = json.loads((run_dir / "run.json").read_text())
    del info["plan"]["positive_class"]
    (run_dir / "run.json").write_text(json.dumps(info))
    assert run_extract(plan_of(run_dir)) == run_dir


def test_a_run_json_without_a_later_setting_resumes_at_its_default(
    finished_run: Path, tmp_path: Path, monkeypatch
) -> None:
    """A run started before ``training.run_eagerly`` existed resumes with the default (traced)."""
    run_dir = copy_run(finished_run, tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    del info["plan"]["training"]["run_eagerly"]
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(RunError, match="training settings differ"):
        run_extract(plan_of(run_dir))  # the tiny plan asks for eager steps: not what ran
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    assert run_extract(plan_of(run_dir, **{"training.run_eagerly": False})) == run_dir
    assert counter.calls == []  # every fold was finished: nothing trained again


def test_k_larger_than_smallest_class_fails_before_training(tmp_path: Path, monkeypatch) -> None:
    data = helpers.make_dataset(tmp_path / "data", n_per_class=(8, 8, 2), images_per_patient=1)
    counter = CountingTrainer()
    monkeypatch.setattr("biomark.train.loop.train_fold", counter)
    with pytest.raises(ConfigError, match="class 'Pneumonia' has only 2 image"):
        run_extract(tiny_plan(data, tmp_path / "runs", **{"cv.k": 3}))
    assert counter.calls == [] and not (tmp_path / "runs").exists()


def test_image_missing_from_cache_is_a_data_error(tmp_path: Path) -> None:
    data = helpers.make_dataset(tmp_path / "data", drop_from_cache="normal_003")
    with pytest.raises(DataError, match="cache"):
        run_extract(tiny_plan(data, tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_dataset_without_covid_class_is_rejected(tmp_path: Path) -> None:
    data = helpers.make_dataset(tmp_path / "data", classes=("Normal", "Pneumonia"))
    with pytest.raises(DataError, match="COVID-19"):
        run_extract(tiny_plan(data, tmp_path / "runs"))


def test_missing_weights_file_fails_before_training(tiny_dataset: Path, tmp_path: Path) -> None:
    plan = tiny_plan(
        tiny_dataset,
        tmp_path / "runs",
        strategies=["scratch", "frozen"],
        **{"model.weights": str(tmp_path / "nope.weights.h5")},
    )
    with pytest.raises(WeightsError, match="file not found"):
        run_extract(plan)
    assert not (tmp_path / "runs").exists()


def test_validation_split_too_small_fails_before_training(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="fold 0: cv.validation_fraction"):
        run_extract(tiny_plan(tiny_dataset, tmp_path / "runs", **{"cv.validation_fraction": 0.02}))


def test_strategy_outside_the_plan_is_rejected(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'frozen' is not in the plan"):
        run_extract(tiny_plan(tiny_dataset, tmp_path / "runs"), strategies=["frozen"])


def test_missing_dataset_without_phantom_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest.csv.*biomark data"):
        run_extract(tiny_plan(tmp_path / "nowhere", tmp_path / "runs"))


def test_dry_run_lists_jobs_and_writes_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    plan = tiny_plan(tiny_dataset, tmp_path / "runs", strategies=["scratch", "finetune:2"])
    setup = prepare_run(plan, dry_run=True)
    assert [(j.strategy, j.fold, j.done) for j in setup.jobs] == [
        ("scratch", 0, False),
        ("scratch", 1, False),
        ("finetune:2", 0, False),
        ("finetune:2", 1, False),
    ]
    assert setup.folds is not None and sorted(setup.folds["fold"].unique()) == [0, 1]
    assert not (tmp_path / "runs").exists()


def test_a_network_input_larger_than_the_films_is_named_and_a_smaller_one_is_not(
    tiny_dataset: Path, tmp_path: Path, caplog
) -> None:
    """A dataset built at 96 px and a plan at 200 px trains on enlarged films with no more
    detail, at 4.3 times the computation: the plan check says so once, naming both sizes and
    the rebuild command; a network at the films' size or smaller hears nothing."""
    caplog.set_level("WARNING", logger="biomark.pipelines.extract_setup")
    larger = tiny_plan(
        tiny_dataset, tmp_path / "runs", **{"model.image_size": 2 * helpers.TINY_SIZE}
    )
    prepare_run(larger, dry_run=True)
    assert caplog.text.count("is larger than the films of") == 1
    assert f"model.image_size={2 * helpers.TINY_SIZE} is larger" in caplog.text
    assert (
        f"({helpers.TINY_SIZE} px)" in caplog.text and "at 4.0 times the computation" in caplog.text
    )
    assert f"biomark data build --size {2 * helpers.TINY_SIZE}" in caplog.text
    caplog.clear()
    prepare_run(tiny_plan(tiny_dataset, tmp_path / "runs"), dry_run=True)
    assert "larger than the films" not in caplog.text


def test_dry_run_with_a_phantom_to_generate_generates_nothing(tmp_path: Path) -> None:
    plan = tiny_plan(
        tmp_path / "phantom", tmp_path / "runs", **{"data.phantom": {"n_per_class": 4}}
    )
    setup = prepare_run(plan, dry_run=True)
    assert setup.dataset is None and "phantom would be generated" in setup.notes[0]
    assert not (tmp_path / "phantom").exists()


@pytest.mark.parametrize(("strategy", "fold"), [("scratch", 0), ("finetune:3", 9)])
def test_job_seeds_are_stable_and_distinct(strategy: str, fold: int) -> None:
    assert job_seed(7, strategy, fold) == job_seed(7, strategy.replace(":", "_"), fold)
    assert job_seed(7, strategy, fold) != job_seed(8, strategy, fold)
    assert len({job_seed(0, s, f) for s in ("scratch", "frozen") for f in range(10)}) == 20


def test_a_phantom_folder_of_other_settings_is_refused(tmp_path: Path) -> None:
    """The plan's phantom changed (here its strength): the old folder is not silently reused."""
    from biomark.config import Plan, apply_overrides
    from biomark.pipelines.data import resolve_dataset

    settings = {
        "data.dir": str(tmp_path / "phantom"),
        "data.phantom.n_per_class": 2,
        "data.phantom.image_size": 64,
        "data.phantom.images_per_patient": 1,
    }
    plan = apply_overrides(Plan(), settings)
    root = resolve_dataset(plan)
    assert resolve_dataset(plan) == root  # the same settings: reused
    stronger = apply_overrides(plan, {"data.phantom.signature_strength": 1.5})
    with pytest.raises(
        DataError,
        match=r"other settings than the plan's data.phantom: signature_strength 1.0 "
        r"\(plan: 1.5\)\. Delete .*phantom to draw",
    ):
        resolve_dataset(stronger)


def test_the_plan_sets_the_confounder_strength_of_a_generated_phantom(tmp_path: Path) -> None:
    from biomark.config import Plan, apply_overrides
    from biomark.data.phantom import SETTINGS_FILE
    from biomark.pipelines.data import resolve_dataset

    settings = {
        "data.dir": str(tmp_path / "phantom"),
        "data.phantom.n_per_class": 2,
        "data.phantom.image_size": 64,
        "data.phantom.images_per_patient": 1,
        "data.phantom.confounder": True,
        "data.phantom.confounder_strength": 1.0,
    }
    plan = apply_overrides(Plan(), settings)
    root = resolve_dataset(plan)
    assert json.loads((root / SETTINGS_FILE).read_text())["confounder_strength"] == 1.0
    manifest = pd.read_csv(root / "manifest.csv")
    site_b = manifest["source"].str.contains("site_B")
    assert (
        site_b == (manifest["label"] == "COVID-19")
    ).all()  # strength 1: the tag separates COVID-19
    weaker = apply_overrides(plan, {"data.phantom.confounder_strength": 0.8})
    with pytest.raises(DataError, match=r"confounder_strength 1.0 \(plan: 0.8\)"):
        resolve_dataset(weaker)


def test_the_finished_fold_line_puts_each_figure_after_its_name(caplog) -> None:
    import logging

    from biomark.pipelines.extract import log_finished_job

    record = {
        "strategy": "scratch",
        "fold": 0,
        "k": 3,
        "training": {"epochs_run": 16},
        "timings": {"total_seconds": 96.0},
        "metrics": {
            "confusion": [[1] * 7] * 7,
            "accuracy": 0.716,
            "positive": "COVID-19",
            "binary_accuracy": 0.926,
            "sensitivity": 0.79,
            "specificity": 0.948,
        },
    }
    with caplog.at_level(logging.INFO, logger="biomark.pipelines.extract"):
        log_finished_job(record)
    assert (
        "scratch fold 0 (1 of 3): 7-class acc 71.6% | COVID-19 vs rest acc 92.6% | sens 79.0% | "
        "spec 94.8% (16 epochs, 96 s)"
    ) in caplog.text


# --------------------------------------------------------------------------- #
# Random-features controls: one backbone per run
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_the_controls_of_a_run_start_from_one_random_backbone(cluster_reference: Path) -> None:
    """frozen and finetune:1 without pretrained weights draw the same random backbone in every
    fold, as the pretrained pair reads ImageNet's: the stages neither trains are equal."""
    from biomark.analysis.construction import shared_by_construction
    from biomark.models.strategies import get_backbone
    from biomark.pipelines.extract_job import backbone_seed
    from biomark.train.predict import load_model

    run = RunFolder(cluster_reference)
    controls = ("frozen", "finetune:1")
    for strategy in controls:
        assert run.backbone_seeds(strategy) == {backbone_seed(0): [0, 1]}
    assert run.one_random_backbone(controls)
    built = shared_by_construction(*controls, run.read_info().weights)
    assert built.shared[-1] == "block_15" and built.controls == controls
    backbones = {
        (s, f): get_backbone(load_model(run.fold_dir(s, f) / "model.keras"))
        for s in controls
        for f in (0, 1)
    }
    # the stem and block_15 are trained by neither: the same weights in all four models;
    # block_16 is finetune:1's own
    for name in ("Conv1", "block_15_depthwise"):
        first, *rest = (np.asarray(b.get_layer(name).get_weights()[0]) for b in backbones.values())
        for other in rest:
            np.testing.assert_array_equal(first, other)
    frozen16, tuned16 = (
        np.asarray(backbones[(s, 0)].get_layer("block_16_project").get_weights()[0])
        for s in controls
    )
    assert not np.array_equal(frozen16, tuned16)
