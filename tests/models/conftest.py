"""Shared fixtures for the model tests: small MobileNetV2s and weights files.

Every model here is tiny (alpha 0.35, 32-48 px) so the whole folder runs in
well under a minute on two CPU cores. Nothing may download: an autouse
fixture replaces Keras's ``get_file`` with one that fails.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from biomark.config import AugmentSettings, ModelSettings, StrategySpec  # noqa: E402

SIZE = 32
ALPHA = 0.35


class DownloadAttempted(RuntimeError):
    """Raised when a test would have downloaded a file."""


def _refuse_download(fname=None, origin=None, *args, **kwargs):
    raise DownloadAttempted(f"tests must not download ({origin}); URL fetch failure")


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Make any Keras download fail loudly, as it would with no network."""
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", _refuse_download)
    monkeypatch.setattr(keras.utils, "get_file", _refuse_download)


def small_settings(**changes) -> ModelSettings:
    """Fast model settings: 32 px, alpha 0.35, 8 head units, no weights."""
    values = dict(
        image_size=SIZE,
        weights="none",
        alpha=ALPHA,
        head_units=8,
        dropout=0.5,
        augment=AugmentSettings(rotation_degrees=10.0, shift_pixels=4),
    )
    values.update(changes)
    return ModelSettings(**values)


@pytest.fixture(scope="session")
def settings() -> ModelSettings:
    """The default fast settings (see :func:`small_settings`)."""
    return small_settings()


@pytest.fixture(scope="session")
def make_settings():
    """Factory: ``make_settings(weights=...)`` -> fast ModelSettings."""
    return small_settings


@pytest.fixture(scope="session")
def scratch_model(settings):
    """A 3-class scratch model, 32 px, shared by read-only tests."""
    from biomark.models.mobilenet import build_model

    return build_model(StrategySpec("scratch"), 3, settings, seed=0)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """A batch of 4 grayscale images, shape (4, 32, 32, 1), float32 in 0..255."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, SIZE, SIZE, 1)).astype("float32")


@pytest.fixture(scope="session")
def reference_backbone():
    """A random MobileNetV2 (alpha 0.35, no top) whose weights the files hold."""
    keras.utils.set_random_seed(123)
    return keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg", alpha=ALPHA
    )


@pytest.fixture(scope="session")
def weights_files(reference_backbone, tmp_path_factory) -> dict[str, Path]:
    """The reference weights as Keras 3 ``.weights.h5`` and legacy ``.h5`` files."""
    folder = tmp_path_factory.mktemp("weights")
    files = {"weights.h5": folder / "mnv2_035.weights.h5"}
    reference_backbone.save_weights(files["weights.h5"])
    # Keras 3 writes only .weights.h5; the legacy writer is what the ImageNet
    # file (a legacy .h5) was made with.
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    files["h5"] = folder / "mnv2_035.h5"
    with h5py.File(files["h5"], "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference_backbone)
    return files


def _infer(model, x):
    """Eager inference (much faster than ``predict`` for one tiny batch)."""
    with warnings.catch_warnings():
        # Keras warns that a bare tensor is not the {"image": ...} structure.
        warnings.simplefilter("ignore", UserWarning)
        out = model(x, training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(v) for v in out]
    return keras.ops.convert_to_numpy(out)


@pytest.fixture(scope="session")
def infer():
    """``infer(model, x)`` -> numpy outputs of ``model(x, training=False)``."""
    return _infer
