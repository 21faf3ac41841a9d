"""How hard is the phantom? Patient-grouped 5-fold CV of two simple classifiers.

Generates a phantom, letterboxes it to a small square, and reports the
cross-validated accuracy (``StratifiedGroupKFold`` by patient) of

(a) a logistic regression on downsampled pixels,
(b) a small Keras CNN (three stages of two 3x3 Conv2D + MaxPool, dropout,
    a dense softmax; images standardised per image; Adam 1e-3, batch 16),
(c) a logistic regression on global intensity statistics (mean, std and
    percentiles of the whole image): no single global statistic should
    separate the classes.

The target is a CNN clearly above chance (1/7) and clearly below 100 %.

Usage::

    python benchmarks/phantom_difficulty.py --n-per-class 60 --size 96 --epochs 15

Figures go to standard output (one line per model, per-class recall for the
CNN) and, with ``--json``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from PIL import Image

from biomark.allocator import keep_freed_memory
from biomark.data.phantom import PHANTOM_CLASSES, generate_phantom
from biomark.provenance import describe_cpu


def letterbox(path: Path, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio (area averaging) and pad with black."""
    image = Image.open(path).convert("L")
    scale = size / max(image.size)
    width, height = max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))
    image = image.resize((width, height), Image.Resampling.BOX)
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top : top + height, left : left + width] = np.asarray(image)
    return canvas


def load(csv: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    frame = pd.read_csv(csv)
    images = (
        np.stack([letterbox(csv.parent / p, size) for p in frame["path"]]).astype(np.float32)
        / 255.0
    )
    y = frame["label"].map({c: i for i, c in enumerate(PHANTOM_CLASSES)}).to_numpy()
    return images, y, frame["patient_id"].to_numpy(), frame


def folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def logistic_pixels(images: np.ndarray, y: np.ndarray, splits, pixels: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    factor = images.shape[1] // pixels
    small = images[:, : pixels * factor, : pixels * factor].reshape(
        len(images), pixels, factor, pixels, factor
    )
    X = small.mean(axis=(2, 4)).reshape(len(images), -1)
    pred = np.empty_like(y)
    for train, test in splits:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        pred[test] = model.fit(X[train], y[train]).predict(X[test])
    return pred


def logistic_global(images: np.ndarray, y: np.ndarray, splits) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = images.reshape(len(images), -1)
    X = np.column_stack(
        [flat.mean(1), flat.std(1), *np.percentile(flat, [10, 25, 50, 75, 90], axis=1)]
    )
    pred = np.empty_like(y)
    for train, test in splits:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        pred[test] = model.fit(X[train], y[train]).predict(X[test])
    return pred


def small_cnn(images: np.ndarray, y: np.ndarray, splits, epochs: int, seed: int) -> np.ndarray:
    import keras
    from keras import layers

    # Each image standardised to zero mean and unit variance (removes exposure).
    flat = images.reshape(len(images), -1)
    images = ((flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-6)).reshape(
        images.shape
    )
    pred = np.empty_like(y)
    for fold, (train, test) in enumerate(splits):
        keras.utils.set_random_seed(seed + fold)
        blocks = []
        for filters in (16, 32, 64):
            blocks += [
                layers.Conv2D(filters, 3, padding="same", activation="relu"),
                layers.Conv2D(filters, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
            ]
        model = keras.Sequential(
            [
                keras.Input(shape=(*images.shape[1:], 1)),
                *blocks,
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dropout(0.5),
                layers.Dense(len(PHANTOM_CLASSES), activation="softmax"),
            ]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(images[train, ..., None], y[train], epochs=epochs, batch_size=16, verbose=0)
        pred[test] = model.predict(images[test, ..., None], verbose=0).argmax(axis=1)
        print(f"  cnn fold {fold + 1}: accuracy {np.mean(pred[test] == y[test]):.3f}", flush=True)
    return pred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=60)
    parser.add_argument(
        "--image-size", type=int, default=256, help="size the phantom is rendered at"
    )
    parser.add_argument("--size", type=int, default=96, help="letterboxed size the classifiers see")
    parser.add_argument(
        "--pixels", type=int, default=32, help="side of the logistic regression's pixel grid"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confounder", action="store_true", help="plant the source confounder")
    parser.add_argument("--no-cnn", action="store_true", help="skip the CNN (fast)")
    parser.add_argument(
        "--data", type=Path, help="phantom folder to (re)use instead of a temporary one"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the phantom already in --data")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the biomark command does, before TensorFlow allocates

    with tempfile.TemporaryDirectory() as tmp:
        out = args.data or Path(tmp)
        start = time.perf_counter()
        csv = out / "phantom.csv"
        if not (args.reuse and csv.exists()):
            csv = generate_phantom(
                out,
                n_per_class=args.n_per_class,
                seed=args.seed,
                image_size=args.image_size,
                confounder=args.confounder,
            )
        generate_s = time.perf_counter() - start
        images, y, groups, _ = load(csv, args.size)
    splits = folds(y, groups, args.folds, args.seed)
    print(
        f"phantom: {len(y)} images, {len(set(groups))} patients, generated in {generate_s:.1f} s",
        flush=True,
    )
    print(f"machine: {describe_cpu()}, {os.cpu_count()} CPU cores", flush=True)

    results: dict[str, object] = {
        "n_images": int(len(y)),
        "n_patients": int(len(set(groups))),
        "generate_seconds": round(generate_s, 2),
        "size": args.size,
        "folds": args.folds,
        "chance": round(1 / len(PHANTOM_CLASSES), 3),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    models = {
        "global_intensity_logreg": lambda: logistic_global(images, y, splits),
        "pixel_logreg": lambda: logistic_pixels(images, y, splits, args.pixels),
    }
    if not args.no_cnn:
        models["small_cnn"] = lambda: small_cnn(images, y, splits, args.epochs, args.seed)
    for name, fit in models.items():
        start = time.perf_counter()
        pred = fit()
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(pred == y))
        per_fold = [float(np.mean(pred[test] == y[test])) for _, test in splits]
        recall = {
            c: round(float(np.mean(pred[y == i] == i)), 3) for i, c in enumerate(PHANTOM_CLASSES)
        }
        results[name] = {
            "accuracy": round(accuracy, 3),
            "fold_std": round(float(np.std(per_fold)), 3),
            "seconds": round(seconds, 1),
            "recall": recall,
        }
        print(
            f"{name:>24}: accuracy {accuracy:.3f} (fold sd {np.std(per_fold):.3f}) in "
            f"{seconds:.0f} s",
            flush=True,
        )
        print(
            " " * 26 + "recall " + ", ".join(f"{c} {r:.2f}" for c, r in recall.items()), flush=True
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
