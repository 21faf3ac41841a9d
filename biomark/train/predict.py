"""Run images through a trained model and return numpy arrays.

:func:`predict_features` is the one place where images meet a trained
model after training: it returns the softmax probabilities, the 1280-d
global-average-pooled backbone vector ("GAP features", what the paper calls
the extracted features) and, on request, the pooled output of every
MobileNetV2 block. Callers (:mod:`biomark.features`) get plain numpy and need
no Keras.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from biomark.exceptions import RunError

__all__ = ["check_model_archive", "load_model", "predict_features"]

logger = logging.getLogger(__name__)


def check_model_archive(path: str | Path) -> Path:
    """``path`` as a Path, when it holds a Keras model archive (a ``.keras`` file is a zip archive).

    Keras reports a file that is not one as "File not found", which sends a
    user looking for a file that is there.

    Raises
    ------
    RunError
        If there is no file at ``path``, or it is not a zip archive.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "model.keras")
    ...     for content in (None, b"not a zip"):
    ...         if content is not None:
    ...             _ = path.write_bytes(content)
    ...         try:
    ...             check_model_archive(path)
    ...         except RunError as err:
    ...             print(str(err).replace(str(path), "<path>"))
    <path>: no trained model here; run `biomark extract` to finish this fold
    <path>: not a Keras model archive (9 bytes that are not a zip archive: truncated,
    overwritten or copied incompletely); re-run `biomark extract --force` for this fold
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no trained model here; run `biomark extract` to finish this fold")
    if not zipfile.is_zipfile(path):
        raise RunError(
            f"{path}: not a Keras model archive ({path.stat().st_size} bytes that are not a zip "
            "archive: truncated, overwritten or copied incompletely); re-run `biomark extract "
            "--force` for this fold"
        )
    return path


def load_model(path: str | Path) -> keras.Model:
    """Load a ``model.keras`` written by :func:`biomark.train.loop.train_fold`.

    Raises
    ------
    RunError
        If ``path`` does not exist or is not a model archive (:func:`check_model_archive`).
    """
    path = check_model_archive(path)
    # Importing the module registers biomark's custom layers with Keras.
    import biomark.models.layers  # noqa: F401

    return keras.saving.load_model(path, compile=False)


def predict_features(
    model: str | Path | Any,
    images: np.ndarray,
    *,
    blocks: bool = False,
    batch_size: int = 32,
    image_size: int | None = None,
    run_eagerly: bool = False,
) -> dict[str, np.ndarray]:
    """Probabilities, GAP features and (optionally) per-block features.

    Parameters
    ----------
    model : keras.Model, or str or Path
        A model from :func:`biomark.models.mobilenet.build_model` (trained),
        or the path of its saved ``model.keras``.
    images : ndarray of shape (n_images, side, side), uint8
        Images in cache format (values 0..255).
    blocks : bool, default False
        Also return the global-average-pooled output of ``block_1`` ...
        ``block_16`` and ``Conv_1``.
    batch_size : int, default 32
        Images per inference batch; the last one is padded to this size
        (so XLA compiles one shape), and the padding's outputs are dropped.
    image_size : int, optional
        Model input side; the images are resized once when it differs
        (default: the model's input side).
    run_eagerly : bool, default False
        Predict op by op instead of tracing a predict program (as
        ``training.run_eagerly``: only worth it for a few batches).

    Returns
    -------
    dict of str to ndarray, float32
        ``"probs"`` of shape (n_images, n_classes), ``"gap"`` of shape
        (n_images, n_features) and, with ``blocks``, one array of shape
        (n_images, n_channels) per block, keyed ``"block_1"`` ...
        ``"block_16"``, ``"Conv_1"`` in network order.

    Examples
    --------
    >>> out = predict_features("runs/quick/scratch/fold_00/model.keras", images)  # doctest: +SKIP
    >>> out["gap"].shape  # doctest: +SKIP
    (56, 1280)
    """
    from biomark.models.mobilenet import feature_model
    from biomark.train.accelerate import allow_jit
    from biomark.train.loader import ImageBatches

    if isinstance(model, (str, Path)):
        model = load_model(model)
    if image_size is None:
        image_size = int(model.input_shape[1])
    extractor = feature_model(model, blocks=blocks)
    allow_jit(extractor)  # else Keras predicts op by op with JAX (see biomark.train.accelerate)
    extractor.run_eagerly = run_eagerly
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("predict_features: no images given")
    # Every batch full (the last padded with black images, their outputs
    # dropped below): one compiled predict step serves every fold. No batch
    # larger than the images, whose padding would only cost memory.
    data = ImageBatches(
        images, batch_size=min(batch_size, n), image_size=image_size, pad_to_batch=True
    )
    raw = extractor.predict(data, verbose=0)
    if not isinstance(raw, dict):  # pragma: no cover - feature_model returns a dict
        raise TypeError(f"feature_model returned {type(raw).__name__}, expected a dict of outputs")
    out: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        array = np.asarray(value[:n], dtype=np.float32)
        if array.ndim == 4:  # an unpooled feature map: pool it here
            array = array.mean(axis=(1, 2))
        out[name] = array
    ordered = {"probs": out.pop("probs"), "gap": out.pop("gap")}
    ordered.update({name: out[name] for name in sorted(out, key=_network_order)})
    return ordered


def _network_order(name: str) -> tuple[int, str]:
    # Keras returns dict outputs sorted by key ("Conv_1", "block_1", "block_10", ...).
    if name.startswith("block_") and name[6:].isdigit():
        return int(name[6:]), name
    return (17 if name == "Conv_1" else 99), name
