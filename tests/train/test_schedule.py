"""The per-strategy training settings and the schedule's lengths (biomark.train.schedule)."""

from __future__ import annotations

import pytest

from biomark.config import Plan, StrategySpec, TrainingSettings, apply_overrides
from biomark.exceptions import ConfigError
from biomark.train.schedule import WarmupCosine, make_optimizer, schedule_lengths, training_for


@pytest.mark.parametrize(
    ("strategy", "weights", "expected"),
    [
        (StrategySpec("frozen"), "none", 4),  # random-features control
        (StrategySpec("finetune", 3), "none", 4),  # random-features control
        (StrategySpec("finetune", 3), "/models/mobilenet.h5", 12),  # pretrained: the full budget
        (StrategySpec("frozen"), "imagenet", 12),
        (StrategySpec("scratch"), "none", 12),  # scratch is never a control
    ],
)
def test_only_random_feature_controls_train_for_control_epochs(strategy, weights, expected):
    training = TrainingSettings(epochs=12, control_epochs=4)
    assert training_for(strategy, training, weights).epochs == expected


def test_control_epochs_zero_keeps_the_plan_epochs_and_the_schedule_follows():
    training = TrainingSettings(epochs=12, control_epochs=0, warmup_epochs=2)
    same = training_for(StrategySpec("frozen"), training, "none")
    assert same is training
    short = training_for(
        StrategySpec("frozen"), TrainingSettings(epochs=12, control_epochs=4), "none"
    )
    assert schedule_lengths(short, 10) == (20, 40)  # warm-up, then decay to 0 within the 4 epochs


def test_a_negative_control_epochs_is_refused_by_name():
    with pytest.raises(ConfigError, match="training.control_epochs=-1"):
        apply_overrides(Plan(), {"training.control_epochs": -1})


class _CountingSchedule(WarmupCosine):
    """A :class:`WarmupCosine` that counts its evaluations."""

    calls = 0

    def __call__(self, step):
        type(self).calls += 1
        return super().__call__(step)


def _trained_weights(optimizer_of, run_eagerly: bool) -> list:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile(
        optimizer=optimizer_of(WarmupCosine(0.05, warmup_steps=2, total_steps=6)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(24, 6)).astype("float32"), rng.integers(0, 3, size=24)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("run_eagerly", [True, False])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_decay_reads_the_schedule_once_and_trains_as_keras_does(name, run_eagerly) -> None:
    import keras
    import numpy as np

    stock_class = {"adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    stock = _trained_weights(lambda s: stock_class(s, weight_decay=0.05, **extra), run_eagerly)
    ours = _trained_weights(lambda s: make_optimizer(name, s, 0.05), run_eagerly)
    for a, b in zip(ours, stock, strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit: the same rate, pinned for the step

    _CountingSchedule.calls = 0
    optimizer = make_optimizer(name, _CountingSchedule(0.05, 2, 6), 0.05)
    variables = [keras.Variable(np.ones((3,), "float32")) for _ in range(10)]
    optimizer.build(variables)
    optimizer.apply([keras.ops.ones((3,))] * 10, variables)
    assert _CountingSchedule.calls == 2  # the decay's one and the update's one (Keras: 10 + 1)
    assert optimizer._pinned_rate is None  # nothing left pinned after the step
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) > 0
