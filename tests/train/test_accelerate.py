"""biomark.train.accelerate: backend choices, the XLA cache folder, and (when jax is
installed) a two-fold JAX run whose second fold loads its programs from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from biomark.train.accelerate import (
    allow_jit,
    compile_counters,
    counter_delta,
    enable_compilation_cache,
    inference_function,
    jit_compile_setting,
    resolve_xla_cache,
)

REPO = Path(__file__).resolve().parents[2]


def test_resolve_xla_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_xla_cache("none") is None and resolve_xla_cache(" None ") is None
    assert resolve_xla_cache(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.delenv("BIOMARK_XLA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_xla_cache("auto") == tmp_path / "cache" / "biomark" / "xla"
    monkeypatch.setenv("BIOMARK_XLA_CACHE", str(tmp_path / "env"))
    assert resolve_xla_cache("auto") == tmp_path / "env"


def test_counter_delta_subtracts_per_key() -> None:
    before = {"compiles": 3, "compile_seconds": 1.5, "cache_hits": 0}
    after = {"compiles": 5, "compile_seconds": 4.0, "cache_hits": 2, "cache_misses": 1}
    assert counter_delta(before, after) == {
        "compiles": 2,
        "compile_seconds": 2.5,
        "cache_hits": 2,
        "cache_misses": 1,
    }


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow-backend behaviour")
def test_tensorflow_backend_leaves_everything_alone(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.RandomRotation(0.1)])
    assert allow_jit(model) == [] and not model.layers[0].supports_jit
    assert enable_compilation_cache(str(tmp_path / "xla")) is None
    assert not (tmp_path / "xla").exists()
    assert compile_counters() == {}
    if not keras.distribution.list_devices("gpu"):
        assert jit_compile_setting() is False


def test_inference_function_runs_any_batch_size_with_the_current_weights() -> None:
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the traced function is TensorFlow's; other backends get None (JAX test)")
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, keras.layers.ReLU()(x))
    rng = np.random.default_rng(0)
    for variable in model.layers[2].non_trainable_variables:  # statistics away from 0 and 1
        variable.assign(rng.uniform(0.5, 2.0, size=variable.shape).astype(np.float32))
    run = inference_function(model)
    assert run is not None
    images = rng.normal(size=(7, 6, 6, 1)).astype(np.float32)
    for n in (7, 3, 1):  # one trace serves every batch size, each batch run as it is
        out = np.asarray(run(images[:n]))
        assert out.shape == (n, 4, 4, 4)
        np.testing.assert_allclose(out, model.predict(images[:n], verbose=0), atol=1e-5)
    # weights assigned after the trace are used: a report swaps folds into one traced pass
    model.get_layer("conv").kernel.assign(np.zeros((3, 3, 1, 4), dtype=np.float32))
    np.testing.assert_allclose(
        np.asarray(run(images[:2])), model.predict(images[:2], verbose=0), atol=1e-5
    )


_JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from tiny_data import make_dataset, tiny_plan
    from biomark.config import StrategySpec
    from biomark.data.dataset import load_dataset
    from biomark.train.loop import train_fold
    from biomark.train.predict import predict_features

    tmp = Path(sys.argv[2])
    data = load_dataset(make_dataset(tmp / "data"))
    plan = tiny_plan(tmp / "data", tmp / "runs",
                     **{"training.xla_cache": str(tmp / "xla"), "training.run_eagerly": False})
    labels = data.labels_as_int()
    rows = np.arange(len(labels))
    from biomark.train.reuse import clear_compiled_models

    def train(fold, out_dir, longer=False):
        test = rows % 4 == fold
        train, val = rows[~test & (rows % 3 != 0)], rows[~test & (rows % 3 == 0)]
        if longer:  # the validation rows trained on too: more batches per epoch
            train = rows[~test]
        result = train_fold(
            data.images, labels, train, val, strategy=StrategySpec("frozen"), n_classes=3,
            model_settings=plan.model, training=plan.training, out_dir=out_dir, seed=fold,
        )
        return result, test

    out = []
    for fold in range(2):  # different rows, same shapes: fold 1 reuses fold 0's compiled model
        result, test = train(fold, tmp / f"fold_{fold}")
        features = predict_features(result.model, np.asarray(data.images[rows[test]]), batch_size=4)
        summary = result.execution()
        summary["n_test"], summary["gap_rows"] = int(test.sum()), len(features["gap"])
        summary["model_jit"] = bool(result.model.jit_compile)
        out.append(summary)
    reused_weights = [np.array(v) for v in result.model.get_weights()]

    # The reused model trains what a model of its own would: fold 1 again, nothing cached.
    clear_compiled_models()
    alone, _ = train(1, tmp / "fold_1_alone")
    same = all(np.array_equal(a, b) for a, b in zip(reused_weights, alone.model.get_weights()))
    alone_reused = alone.execution()["pipeline"]["reused_compiled_model"]
    # More training batches: another schedule, so under JAX another traced step.
    longer, _ = train(1, tmp / "fold_1_longer", longer=True)
    train_batches = [r.execution()["pipeline"]["loader"]["train_batches"] for r in (alone, longer)]
    longer_reused = longer.execution()["pipeline"]["reused_compiled_model"]

    # The jitted BatchNormalization re-estimation gives the eager path's batch averages.
    import keras
    from biomark.train.batchnorm import recalibrate_batchnorm

    rng = np.random.default_rng(0)
    batches = [(rng.normal(5.0, 2.0, size=(64, 3)).astype(np.float32), None) for _ in range(4)]
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization(momentum=0.999)
    model = keras.Model(inputs, bn(inputs))
    recalibrate_batchnorm(model, batches, max_batches=3)
    expected = np.mean([b[0].mean(axis=0) for b in batches[:3]], axis=0)
    error = float(np.abs(keras.ops.convert_to_numpy(bn.moving_mean) - expected).max())
    from biomark.train.accelerate import inference_function

    print("RESULT " + json.dumps({"folds": out, "bn_error": error, "bn_momentum": bn.momentum,
                                  "no_traced_pass": inference_function(model) is None,
                                  "same_weights": same, "alone_reused": alone_reused,
                                  "longer_reused": longer_reused, "batches": train_batches}))
    """
)


@pytest.mark.slow
def test_jax_backend_trains_and_reuses_compiled_programs(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(REPO / "tests"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["bn_error"] < 1e-4 and result["bn_momentum"] == 0.999
    assert result["no_traced_pass"]  # JAX passes go through predict, padded to one shape
    first, second = result["folds"]
    for fold in (first, second):
        pipeline = fold["pipeline"]
        assert (
            pipeline["backend"] == "jax" and pipeline["jit_compile"] is True and fold["model_jit"]
        )
        assert pipeline["xla_cache"] == str(tmp_path / "xla")
        assert fold["gap_rows"] == fold["n_test"]  # padded prediction batches are cut back
    assert first["pipeline"]["compile"]["cache_misses"] >= 1  # compiled, then written to the cache
    assert any((tmp_path / "xla").iterdir())
    # fold 1 has fold 0's schedule, so it trains fold 0's model: no new trace, nothing compiled
    assert not first["pipeline"]["reused_compiled_model"]
    assert second["pipeline"]["reused_compiled_model"]
    assert second["pipeline"]["compile"]["cache_misses"] == 0
    # ...and ends bit for bit where a model of its own ends
    assert result["same_weights"] and not result["alone_reused"]
    assert result["batches"][1] > result["batches"][0]
    assert not result["longer_reused"]  # its schedule's lengths would be frozen into the step
