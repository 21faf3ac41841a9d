"""Tiny learnable datasets written directly in the dataset-folder layout.

A helper module (not a test): the root ``tests/conftest.py`` puts ``tests/``
on ``sys.path`` and registers its fixtures for the whole suite; tests that
need the functions do ``import tiny_data``.

No phantom generator or builder is involved: :func:`make_dataset` writes
``manifest.csv``, ``cache/images.npy``, ``cache/index.csv`` and
``cache/cache.json`` exactly as :func:`biomark.data.dataset.load_dataset`
reads them. Each class is a bright square in its own place on a noisy dark
background, so even one epoch of a tiny MobileNetV2 can learn something.

The plan helpers keep every training test small: 32 px, ``alpha`` 0.35,
16 head units, 1 epoch, 2 folds, small augmentation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from biomark.config import Plan, apply_overrides
from biomark.data.dataset import MANIFEST_COLUMNS
from biomark.provenance import file_sha256

#: Class names of the tiny dataset (COVID-19 first, as in the paper).
TINY_CLASSES: tuple[str, ...] = ("COVID-19", "Normal", "Pneumonia")
TINY_SIZE = 32
TINY_PER_CLASS = 8
TINY_PER_PATIENT = 2

# Top-left corner of each class's bright square, as a fraction of the side.
_SQUARES = ((0.1, 0.1), (0.1, 0.55), (0.55, 0.3))


def class_image(c: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 image of class ``c``: noise plus a bright square in the class's place."""
    image = rng.integers(0, 60, size=(size, size)).astype(np.uint8)
    top, left = (int(f * size) for f in _SQUARES[c % len(_SQUARES)])
    side = max(4, size // 3)
    image[top : top + side, left : left + side] = rng.integers(190, 255)
    return image


def make_dataset(
    root: Path,
    classes: tuple[str, ...] = TINY_CLASSES,
    n_per_class: int | tuple[int, ...] = TINY_PER_CLASS,
    *,
    images_per_patient: int = TINY_PER_PATIENT,
    size: int = TINY_SIZE,
    seed: int = 0,
    drop_from_cache: str | None = None,
) -> Path:
    """Write a dataset folder readable by ``load_dataset`` and return it.

    ``drop_from_cache`` names an image id left out of the cache (a broken dataset).
    """
    rng = np.random.default_rng(seed)
    counts = (n_per_class,) * len(classes) if isinstance(n_per_class, int) else n_per_class
    rows: list[dict[str, Any]] = []
    images = []
    for c, (name, count) in enumerate(zip(classes, counts, strict=True)):
        key = name.lower().replace("-", "")
        for i in range(count):
            image_id = f"{key}_{i:03d}"
            rows.append(
                {
                    "image_id": image_id,
                    "path": f"images/{image_id}.png",
                    "label": name,
                    "patient_id": f"{key}_p{i // images_per_patient:03d}",
                    "source": "site_A" if i % 2 == 0 else "site_B",
                    "view": "PA",
                    "sha256": f"{c:02d}{i:062d}",
                }
            )
            images.append(class_image(c, size, rng))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(root / "manifest.csv", index=False)
    stack = np.stack(images).astype(np.uint8)
    ids = manifest["image_id"].tolist()
    if drop_from_cache is not None:
        keep = [i for i, x in enumerate(ids) if x != drop_from_cache]
        stack, ids = stack[keep], [ids[i] for i in keep]
    np.save(cache / "images.npy", stack)
    pd.DataFrame({"image_id": ids, "row": np.arange(len(ids))}).to_csv(
        cache / "index.csv", index=False
    )
    info = {
        "size": size,
        "n_images": len(ids),
        "classes": list(classes),
        "manifest_sha256": file_sha256(root / "manifest.csv"),
    }
    (cache / "cache.json").write_text(json.dumps(info), encoding="utf-8")
    return root


def tiny_plan(data_dir: Path, out_dir: Path, **overrides: Any) -> Plan:
    """A plan small enough to train in seconds on two CPU cores."""
    base = {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(out_dir),
        "data.dir": str(data_dir),
        "cv.k": 2,
        "cv.validation_fraction": 0.25,
        "strategies": ["scratch"],
        "model.image_size": TINY_SIZE,
        "model.weights": "none",
        "model.alpha": 0.35,
        "model.head_units": 16,
        "model.augment.rotation_degrees": 5.0,
        "model.augment.shift_pixels": 2,
        "training.epochs": 1,
        "training.batch_size": 8,
        "training.early_stopping.patience": 1,
        # A step or two per model: tracing MobileNetV2 would cost more than
        # the steps themselves (tests that check traced programs set False).
        "training.run_eagerly": True,
        # The fit check predicts the training sample twice and re-estimates the
        # BatchNormalization statistics (seconds per fold); test_learning,
        # test_loop and test_resume turn it on where it is the point.
        "training.fit_check_epoch": 0,
    }
    base.update(overrides)
    return apply_overrides(Plan(), base)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 8 images (2 per patient) at 32 px; read-only for tests."""
    return make_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2 (alpha 0.35, no top, 32 px) weights file, standing in for ImageNet."""
    import keras

    keras.utils.set_random_seed(123)
    backbone = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(TINY_SIZE, TINY_SIZE, 3)
    )
    path = tmp_path_factory.mktemp("weights") / "w.weights.h5"
    backbone.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.fixture
def make_plan():
    """The :func:`tiny_plan` factory, for tests that need plan variants."""
    return tiny_plan
