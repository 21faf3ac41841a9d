"""Training and inference speed of the paper's MobileNetV2, and the quick plan's wall time.

Usage::

    python benchmarks/train_throughput.py                  # alpha 1.0, 200 px, batch 32, + quick plan
    python benchmarks/train_throughput.py --no-quick       # throughput only
    KERAS_BACKEND=jax python benchmarks/train_throughput.py --no-quick   # same code on JAX

Throughput uses the real model (:func:`biomark.models.mobilenet.build_model`,
``scratch``, every layer trainable, augmentation on) compiled exactly as
:func:`biomark.train.loop.train_fold` compiles it, fed by
:class:`biomark.train.loader.ImageBatches` from a random uint8 cache. After
``--warmup`` steps (graph tracing happens there; its time is printed
separately) it times ``--steps`` training steps with ``model.fit`` and
``--steps`` inference batches with ``model.predict``, and prints images per
second. The quick plan is run end to end (``biomark extract --plan
analyses/quick.yaml``) into a temporary output folder; its phantom dataset is
generated on first use (under ``data/``) and reused afterwards.
"""  # noqa: E501

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from biomark.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


def throughput(alpha: float, size: int, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Images per second for training and inference (after warm-up)."""
    import keras

    from biomark.config import ModelSettings, StrategySpec
    from biomark.models.mobilenet import build_model
    from biomark.train.accelerate import allow_jit, jit_compile_setting
    from biomark.train.loader import ImageBatches
    from biomark.train.loop import make_optimizer

    rng = np.random.default_rng(0)
    n = batch * (steps + warmup)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n)
    settings = ModelSettings(image_size=size, weights="none", alpha=alpha)
    model = build_model(StrategySpec("scratch"), 7, settings, seed=0)
    allow_jit(model)
    model.compile(
        optimizer=make_optimizer("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile_setting(),
    )
    model.optimizer.build(model.trainable_variables)

    warm = ImageBatches(images, labels, rows=np.arange(batch * warmup), batch_size=batch)
    timed = ImageBatches(images, labels, rows=np.arange(batch * warmup, n), batch_size=batch)
    t0 = time.perf_counter()
    model.fit(warm, epochs=1, shuffle=False, verbose=0)
    warm_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(timed, epochs=1, shuffle=False, verbose=0)
    train_s = time.perf_counter() - t0

    warm_x = ImageBatches(images, rows=np.arange(batch * warmup), batch_size=batch)
    timed_x = ImageBatches(images, rows=np.arange(batch * warmup, n), batch_size=batch)
    t0 = time.perf_counter()
    model.predict(warm_x, verbose=0)
    warm_predict = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict(timed_x, verbose=0)
    predict_s = time.perf_counter() - t0
    return {
        "backend": keras.backend.backend(),
        "params": model.count_params(),
        "warmup_train_s": warm_train,
        "warmup_predict_s": warm_predict,
        "train_img_s": batch * steps / train_s,
        "predict_img_s": batch * steps / predict_s,
        "train_step_s": train_s / steps,
    }


def quick_plan_wall_time(plan: Path) -> float:
    """Seconds of ``biomark -q extract --plan PLAN --out TMP`` in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "biomark", "-q", "extract", "--plan", str(plan), "--out", out],
            check=True,
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--plan", type=Path, default=REPO / "analyses" / "quick.yaml")
    parser.add_argument("--no-quick", action="store_true", help="skip the quick plan run")
    args = parser.parse_args()
    keep_freed_memory()  # as the biomark command does, before TensorFlow allocates

    print(f"cpu cores: {os.cpu_count()}")
    r = throughput(args.alpha, args.size, args.batch, args.steps, args.warmup)
    print(
        f"MobileNetV2 alpha {args.alpha}, {args.size} px, batch {args.batch}, backend "
        f"{r['backend']}, {r['params'] / 1e6:.2f} M parameters"
    )
    print(
        f"  warm-up ({args.warmup} steps, includes tracing): train {r['warmup_train_s']:.1f} s, "
        f"predict {r['warmup_predict_s']:.1f} s"
    )
    print(
        f"  training:  {r['train_img_s']:8.1f} images/s ({r['train_step_s']:.2f} s per step, "
        f"{args.steps} steps)"
    )
    print(f"  inference: {r['predict_img_s']:8.1f} images/s ({args.steps} batches)")
    if not args.no_quick:
        seconds = quick_plan_wall_time(args.plan)
        print(
            f"biomark extract --plan {args.plan.relative_to(REPO)}: {seconds:.0f} s wall (end to "
            "end)"
        )


if __name__ == "__main__":
    main()
