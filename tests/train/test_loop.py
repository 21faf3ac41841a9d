"""train_fold: a real (tiny) MobileNetV2 trains, is interrupted, resumes exactly and is saved."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from biomark.config import StrategySpec, TrainingSettings
from biomark.data.dataset import load_dataset
from biomark.exceptions import ConfigError
from biomark.provenance import cpu_info
from biomark.train.loop import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    learning_rate_for,
    make_optimizer,
    mixed_precision,
    recalibrate_batchnorm,
    save_model_atomic,
    train_fold,
)
from biomark.train.predict import predict_features


class Interrupt(RuntimeError):
    """Stands in for a killed process."""


def interrupt_after(epoch: int):
    def hook(finished: int) -> None:
        if finished == epoch:
            raise Interrupt(f"simulated crash after epoch {epoch}")

    return hook


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("scratch", 5e-3), ("frozen", 5e-3), ("finetune:3", 5e-4)],
)
def test_finetuning_uses_the_smaller_learning_rate(strategy: str, expected: float) -> None:
    assert learning_rate_for(StrategySpec.parse(strategy), TrainingSettings()) == pytest.approx(
        expected
    )


def test_balanced_class_weights_match_sklearn_formula() -> None:
    from biomark.train.class_weights import class_weights

    weights = class_weights(np.array([0, 0, 0, 1, 1, 3]), 4, "balanced")
    # n / (n_present_classes * count): 6 / (3 * 3), 6 / (3 * 2), absent -> 1, 6 / (3 * 1)
    assert weights == pytest.approx({0: 2 / 3, 1: 1.0, 2: 1.0, 3: 2.0})


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "rmsprop"])
def test_optimizers_get_the_learning_rate(name: str) -> None:
    optimizer = make_optimizer(name, 0.01)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.01)


def test_a_later_setting_at_its_old_behaviour_keeps_older_checkpoints_resumable() -> None:
    from biomark.train.loop import fingerprinted_training

    covered = fingerprinted_training(TrainingSettings())
    assert "run_eagerly" not in covered and "loader_workers" not in covered
    assert covered["epochs"] == TrainingSettings().epochs
    assert fingerprinted_training(TrainingSettings(run_eagerly=True))["run_eagerly"] is True


def test_unknown_optimizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="training.optimizer='adagrad'"):
        make_optimizer("adagrad", 0.01)


def test_mixed_precision_policy_is_restored() -> None:
    before = keras.mixed_precision.global_policy().name
    with mixed_precision(True) as policy:
        assert keras.mixed_precision.global_policy().name == policy
        assert policy in ("mixed_float16", "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == before
    with mixed_precision(False) as policy:
        assert policy == before


def batchnorm_model() -> keras.Model:
    inputs = keras.Input((3,))
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn_a")(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.999, name="bn_b")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("run_eagerly", [None, True])
def test_recalibration_replaces_moving_statistics_by_batch_averages(run_eagerly) -> None:
    """Traced (the default for a model not compiled to run eagerly) or op by op: the same
    averages."""
    rng = np.random.default_rng(0)
    batches = [(rng.normal(5.0, 2.0, size=(64, 3)).astype(np.float32), None) for _ in range(4)]
    model = batchnorm_model()
    model.get_layer("bn_b").trainable = False
    assert recalibrate_batchnorm(model, batches, max_batches=3, run_eagerly=run_eagerly) == 1
    bn_a, bn_b = model.get_layer("bn_a"), model.get_layer("bn_b")
    expected = np.mean(
        [b[0].mean(axis=0) for b in batches[:3]], axis=0
    )  # equal-weight mean of 3 batches
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn_a.moving_mean), expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn_a.moving_variance), 4.0, rtol=0.2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn_b.moving_mean), 0.0
    )  # frozen: untouched
    assert bn_a.momentum == 0.999 and not bn_b.trainable

    assert recalibrate_batchnorm(model, batches, include_frozen=True, run_eagerly=run_eagerly) == 2
    # bn_b sees bn_a's batch-normalised output: mean ~0, variance ~1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn_b.moving_mean), 0.0, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn_b.moving_variance), 1.0, rtol=1e-2)
    assert not bn_b.trainable and bn_b.momentum == 0.999  # flags restored


def test_unknown_monitor_fails_before_training(
    tiny_dataset: Path, tmp_path: Path, make_plan
) -> None:
    with pytest.raises(ConfigError, match="monitor='val_auc'"):  # a plan is checked when loaded
        make_plan(tiny_dataset, tmp_path, **{"training.early_stopping.monitor": "val_auc"})
    plan = make_plan(tiny_dataset, tmp_path)
    # hand-built settings skip the plan's check; train_fold checks again before training
    stopping = dataclasses.replace(plan.training.early_stopping, monitor="val_auc")
    plan = dataclasses.replace(
        plan, training=dataclasses.replace(plan.training, early_stopping=stopping)
    )
    with pytest.raises(ConfigError, match="monitor='val_auc'"):
        _train_tiny_fold(tiny_dataset, plan, tmp_path / "fold")
    assert not (tmp_path / "fold" / MODEL_FILE).exists()


def test_a_plan_whose_step_cannot_fit_fails_before_training(
    tiny_dataset: Path, tmp_path: Path, make_plan, monkeypatch
) -> None:
    """With the machine's memory read as 1 MiB the fold stops with the memory check's error
    before any step (``model.image_size: 4096`` on the 24 GiB machine was killed for memory
    about 80 s into ``extract``, without a word), and writes no model."""
    from biomark.models import memory

    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 2**20)
    with pytest.raises(ConfigError, match=r"scratch.*one training step at model\.image_size="):
        _train_tiny_fold(tiny_dataset, make_plan(tiny_dataset, tmp_path), tmp_path / "fold")
    assert not (tmp_path / "fold" / MODEL_FILE).exists()


def test_no_batch_is_larger_than_the_fold_s_training_images(tiny_dataset: Path, make_plan) -> None:
    """``training.batch_size: 100000`` padded each fold's validation films to 100,000 zero images,
    and ``extract`` was killed for memory: every batch of a fold is now at most its training
    images, and one within them is kept."""
    from biomark.train.loop import _fold_batches

    plan = make_plan(tiny_dataset, Path("unused"), **{"training.batch_size": 100_000})
    dataset = load_dataset(tiny_dataset)
    batches = _fold_batches(
        dataset.images,
        dataset.labels_as_int(),
        np.arange(12),
        np.arange(12, 16),
        model_settings=plan.model,
        training=plan.training,
        n_classes=3,
        seed=0,
    )
    assert batches.val is not None
    assert batches.train.batch_size == batches.val.batch_size == batches.fit.batch_size == 12
    assert batches.val.n_served == 12 and batches.val[0].shape[0] == 12  # 4 films, 8 padding
    kept = dataclasses.replace(plan.training, batch_size=8)
    assert (
        _fold_batches(
            dataset.images,
            dataset.labels_as_int(),
            np.arange(12),
            np.arange(12, 16),
            model_settings=plan.model,
            training=kept,
            n_classes=3,
            seed=0,
        ).val.batch_size
        == 8
    )


def _train_tiny_fold(tiny_dataset: Path, plan, out_dir: Path):
    """``train_fold`` of ``scratch`` on the tiny dataset: 12 training and 4 validation images."""
    dataset = load_dataset(tiny_dataset)
    return train_fold(
        dataset.images,
        dataset.labels_as_int(),
        np.arange(12),
        np.arange(12, 16),
        strategy=StrategySpec("scratch"),
        n_classes=3,
        model_settings=plan.model,
        training=plan.training,
        out_dir=out_dir,
    )


def _weights_digest(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.slow
def test_interrupted_training_resumes_exactly(
    tiny_dataset: Path, tmp_path: Path, make_plan
) -> None:
    plan = make_plan(
        tiny_dataset,
        tmp_path,
        **{
            "training.epochs": 3,
            "training.early_stopping.patience": 5,
            "training.fit_check_epoch": 2,
            "training.run_eagerly": False,  # real runs' traced steps resume bit for bit
        },
    )
    dataset = load_dataset(tiny_dataset)
    labels = dataset.labels_as_int()
    rows = np.arange(len(labels))
    train_rows, val_rows = rows[rows % 4 != 0], rows[rows % 4 == 0]
    kwargs = dict(
        strategy=StrategySpec("scratch"),
        n_classes=3,
        model_settings=plan.model,
        training=plan.training,
        seed=5,
        desc="test fold",
    )

    whole = train_fold(
        dataset.images, labels, train_rows, val_rows, out_dir=tmp_path / "whole", **kwargs
    )
    expected = _weights_digest(whole.model)
    assert not (tmp_path / "whole" / CHECKPOINT_FILE).exists()  # removed once training is over

    out = tmp_path / "fold_00"
    with pytest.raises(Interrupt):
        train_fold(
            dataset.images,
            labels,
            train_rows,
            val_rows,
            out_dir=out,
            after_epoch=interrupt_after(2),
            **kwargs,
        )
    assert (out / CHECKPOINT_FILE).is_file()  # the state after epoch 2 survives the crash
    assert not (out / MODEL_FILE).exists()
    assert pd.read_csv(out / HISTORY_FILE)["epoch"].tolist() == [1, 2]

    result = train_fold(dataset.images, labels, train_rows, val_rows, out_dir=out, **kwargs)
    assert result.resumed_from_epoch == 2  # only epoch 3 was trained again
    assert result.epochs_run == 3
    for got, want in zip(_weights_digest(result.model), expected, strict=True):
        np.testing.assert_array_equal(got, want)  # bit for bit
    assert result.summary() == {**whole.summary(), "model_file": MODEL_FILE}
    deterministic = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    pd.testing.assert_frame_equal(result.history[deterministic], whole.history[deterministic])
    history = pd.read_csv(out / HISTORY_FILE)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert {"seconds", "step_seconds", "val_seconds", "bn_seconds", "check_seconds"} <= set(
        history.columns
    )
    assert (history["step_seconds"] <= history["seconds"]).all()
    assert result.model_path == out / MODEL_FILE and result.model_path.is_file()
    assert not (out / CHECKPOINT_FILE).exists()
    assert result.n_train == len(train_rows) and result.n_val == len(val_rows)
    assert result.class_weight == pytest.approx({0: 1.0, 1: 1.0, 2: 1.0})
    assert (
        result.fit_check is not None
        and result.fit_check["epoch"] == 2
        and result.fit_check["n"] == len(train_rows)
    )
    assert not list(out.glob(".*"))  # no temporary files left behind
    execution = result.execution()
    pipeline = execution["pipeline"]
    assert pipeline["backend"] == keras.backend.backend() and pipeline["policy"] == "float32"
    assert pipeline["run_eagerly"] is False
    assert pipeline["cpu"] == cpu_info()  # the instruction sets that chose its kernels
    assert execution["resumed_from_epoch"] == 2
    loader = pipeline["loader"]
    assert loader["cache_in_memory"] and loader["drop_remainder"] and loader["batch_size"] == 8
    # 18 training images in batches of 8: 2 batches, 2 images left out per epoch; 6 validation
    # images padded to 8
    assert (len(train_rows), loader["train_batches"], loader["train_images_dropped"]) == (18, 2, 2)
    assert (len(val_rows), loader["val_images_padded"]) == (6, 2)
    assert result.first_epoch_seconds > 0

    images = np.asarray(dataset.images[:5])
    # two batches each: eager, as tracing two more models would cost more
    in_memory = predict_features(result.model, images, batch_size=4, run_eagerly=True)
    from_file = predict_features(
        result.model_path, images, batch_size=4, blocks=True, run_eagerly=True
    )
    assert in_memory["probs"].shape == (5, 3) and in_memory["gap"].shape == (5, 1280)
    np.testing.assert_allclose(in_memory["probs"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(from_file["gap"], in_memory["gap"], rtol=1e-4, atol=1e-5)
    block_names = [k for k in from_file if k not in ("probs", "gap")]
    assert block_names == [f"block_{i}" for i in range(1, 17)] + ["Conv_1"]
    assert all(from_file[k].ndim == 2 and from_file[k].shape[0] == 5 for k in block_names)
    np.testing.assert_allclose(from_file["Conv_1"], from_file["gap"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_checkpoint_of_other_settings_is_not_resumed(
    tiny_dataset: Path, tmp_path: Path, make_plan, caplog
) -> None:
    dataset = load_dataset(tiny_dataset)
    labels = dataset.labels_as_int()
    rows = np.arange(len(labels))
    out = tmp_path / "fold"
    for epochs, crash in ((2, interrupt_after(1)), (3, None)):
        plan = make_plan(tiny_dataset, tmp_path, **{"training.epochs": epochs})
        kwargs = {
            # any strategy: finetune:1's eager steps are the cheapest that train backbone weights
            "strategy": StrategySpec("finetune", 1),
            "n_classes": 3,
            "model_settings": plan.model,
            "training": plan.training,
            "out_dir": out,
            "seed": 1,
            "after_epoch": crash,
        }
        train, test = rows[rows % 4 != 0], rows[rows % 4 == 0]
        if crash is None:
            result = train_fold(dataset.images, labels, train, test, **kwargs)
        else:
            with pytest.raises(Interrupt):
                train_fold(dataset.images, labels, train, test, **kwargs)
    assert "checkpoint of other settings" in caplog.text
    assert result.resumed_from_epoch == 0


def test_padded_validation_matches_keras_evaluate() -> None:
    """Validation scores the real images only, as Keras's evaluate does without padding."""
    from biomark.train.evaluate import predict_probs, sparse_crossentropy
    from biomark.train.loader import ImageBatches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 8, 8), dtype=np.uint8)
    labels = np.arange(10) % 3
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    expected = model.evaluate(
        ImageBatches(images, labels, batch_size=4), verbose=0, return_dict=True
    )
    probs = predict_probs(model, ImageBatches(images, batch_size=4, pad_to_batch=True))
    assert probs.shape == (10, 3)
    assert sparse_crossentropy(probs, labels) == pytest.approx(expected["loss"], rel=1e-5)
    assert float(np.mean(probs.argmax(axis=1) == labels)) == pytest.approx(expected["accuracy"])


def test_save_model_atomic_writes_a_loadable_model_and_no_leftovers(tmp_path: Path) -> None:
    """The model goes through biomark.io.atomic: one ``.keras`` file, no temporary left, previous
    kept on failure."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    target = tmp_path / "fold_00" / MODEL_FILE
    assert save_model_atomic(model, target) == target
    assert [p.name for p in target.parent.iterdir()] == [MODEL_FILE]
    loaded = keras.models.load_model(target)
    np.testing.assert_array_equal(
        loaded.get_layer("dense").get_weights()[0], model.get_layer("dense").get_weights()[0]
    )

    class Broken(keras.Sequential):
        def save(self, *args, **kwargs):  # noqa: ANN002, ANN003 - Keras's signature
            raise OSError("simulated failure while saving")

    before = target.read_bytes()
    with pytest.raises(OSError, match="simulated failure"):
        save_model_atomic(Broken([keras.Input((3,)), keras.layers.Dense(2)]), target)
    assert target.read_bytes() == before and [p.name for p in target.parent.iterdir()] == [
        MODEL_FILE
    ]
