"""What the biomarker report needs from each fold's trained model, as numpy.

For one (strategy, fold), :func:`run_fold_model` loads ``model.keras`` once and
returns, on the fold's test images: the head's inference weights
(:func:`biomark.train.head.extract_head`), the GAP vector and probabilities
recomputed with the ``out_relu`` maps (:func:`biomark.train.maps.channel_maps`;
the maps themselves are reduced chunk by chunk by a caller-supplied function,
e.g. the lung mass of :func:`biomark.analysis.localisation.lung_mass`, so all
1280 maps of a fold never sit in memory at once), all-channel maps of a few
images for Grad-CAM, and the probabilities with the lung fields blacked out
(:func:`blackout_images`).

:func:`lung_masks` gives the masks of some rows from the dataset's stored lung
masks (:func:`biomark.data.masks.dataset_lung_masks`: supplied or segmented,
each checked; implausible masks are reported, not used).

The deep-learning work is imported from :mod:`biomark.train` inside the
functions; this module itself imports no Keras.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.data.dataset import Dataset
from biomark.data.masks import LungMasks, dataset_lung_masks
from biomark.exceptions import RunError
from biomark.features.deep import fold_dir

__all__ = [
    "MODEL_FILE",
    "FoldModelOutputs",
    "LungMasks",
    "blackout_images",
    "fold_model_path",
    "load_head",
    "lung_masks",
    "run_fold_model",
    "selected_maps",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"

#: A function of (maps of shape (b, C, h, w), positions of shape (b,)) called per chunk.
Reducer = Callable[[np.ndarray, np.ndarray], Any]


def fold_model_path(run_dir: str | Path, strategy: str, fold: int) -> Path | None:
    """``<run>/<strategy>/fold_XX/model.keras`` when it exists, else None."""
    path = fold_dir(run_dir, strategy, fold) / MODEL_FILE
    return path if path.is_file() else None


def blackout_images(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A copy of ``images`` with every lung pixel set to 0 (black).

    Parameters
    ----------
    images : ndarray of shape (n, side, side), uint8
    masks : ndarray of shape (n, side, side)
        Non-zero = lung.

    Returns
    -------
    ndarray of shape (n, side, side), uint8
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
    out = np.array(images, dtype=np.uint8, copy=True)
    out[masks > 0] = 0
    return out


def lung_masks(dataset: Dataset, rows: np.ndarray) -> LungMasks:
    """Lung masks of the given dataset rows (:func:`biomark.data.masks.dataset_lung_masks`).

    Supplied masks (a masks folder, ``cache/masks.npy``) or the segmenter's,
    computed once per dataset and read from ``DIR/cache/lung_masks.npy``
    afterwards; implausible masks have ``usable`` False and a row in
    ``problems``.

    Parameters
    ----------
    dataset : Dataset
    rows : ndarray of int, shape (n,)
        Row indices into the dataset (manifest / cache order).

    Returns
    -------
    LungMasks
    """
    result = dataset_lung_masks(dataset).subset(np.asarray(rows, dtype=np.int64))
    logger.info("lung masks: %d of %d usable (%s)", int(result.usable.sum()), len(rows), result.source)
    return result


@dataclass
class FoldModelOutputs:
    """Numpy outputs of one fold's model on its test images.

    Attributes
    ----------
    strategy : str
    fold : int
    model_path : Path
    head : dict of str to ndarray
        :func:`biomark.train.head.extract_head`.
    gap : ndarray of shape (n, n_features)
        Recomputed GAP vector (the spatial mean of the maps).
    map_gap : ndarray of shape (n, n_features)
        ``maps.mean(axis=(2, 3))`` of every channel (the identity check).
    probs : ndarray of shape (n, n_classes)
    grid : (h, w)
        Size of the ``out_relu`` maps.
    reduced : list
        The reducer's output per chunk, in order.
    cam_maps : ndarray of shape (m, n_features, h, w) or None
        All-channel maps of the ``cam_rows`` images.
    blackout_probs : ndarray of shape (n, n_classes) or None
    seconds : float
    """

    strategy: str
    fold: int
    model_path: Path
    head: dict[str, np.ndarray]
    gap: np.ndarray
    map_gap: np.ndarray
    probs: np.ndarray
    grid: tuple[int, int]
    reduced: list[Any] = field(default_factory=list)
    cam_maps: np.ndarray | None = None
    blackout_probs: np.ndarray | None = None
    seconds: float = 0.0


def run_fold_model(
    model_path: str | Path,
    images: np.ndarray,
    *,
    strategy: str = "",
    fold: int = -1,
    reduce: Reducer | None = None,
    cam_rows: Sequence[int] = (),
    blackout_masks: np.ndarray | None = None,
    batch_size: int = 32,
    chunk: int = 256,
) -> FoldModelOutputs:
    """Run one fold's trained model on its test images (one model load).

    Parameters
    ----------
    model_path : str or Path
        The fold's ``model.keras``.
    images : ndarray of shape (n, side, side), uint8
        The fold's test images (cache format), in ``features.parquet`` order.
    strategy, fold : str, int
        Named in errors and the result.
    reduce : callable, optional
        ``reduce(maps, positions)`` with ``maps`` of shape (b, n_features, h, w)
        for the images at ``positions``; its return values are collected.
    cam_rows : sequence of int
        Positions whose all-channel maps are kept (Grad-CAM).
    blackout_masks : ndarray of shape (n, side, side), optional
        Lung masks; when given, the model also predicts the blacked-out images.
    batch_size : int, default 32
    chunk : int, default 256
        Images per call of the reducer.

    Returns
    -------
    FoldModelOutputs

    Raises
    ------
    RunError
        If the model cannot be loaded or run (the file and fold are named).
    """
    from biomark.train.head import extract_head
    from biomark.train.maps import channel_maps, free_models
    from biomark.train.predict import load_model, predict_features

    t0 = time.perf_counter()
    model_path = Path(model_path)
    name = f"{strategy} fold {fold} ({model_path})"
    try:
        model = load_model(model_path)
        head = extract_head(model)
        n = images.shape[0]
        gaps, map_gaps, probs, reduced, cams = [], [], [], [], []
        cam_set = np.asarray(sorted(set(int(r) for r in cam_rows)), dtype=np.int64)
        grid: tuple[int, int] = (0, 0)
        for start in range(0, n, chunk):
            pos = np.arange(start, min(n, start + chunk))
            out = channel_maps(model, images[pos], batch_size=batch_size)
            maps = out["maps"]
            grid = (int(maps.shape[2]), int(maps.shape[3]))
            gaps.append(out["gap"])
            probs.append(out["probs"])
            map_gaps.append(maps.mean(axis=(2, 3)))
            if reduce is not None:
                reduced.append(reduce(maps, pos))
            keep = np.isin(pos, cam_set)
            if keep.any():
                cams.append(maps[keep])
        blackout = None
        if blackout_masks is not None:
            blackout = predict_features(model, blackout_images(images, blackout_masks), batch_size=batch_size)["probs"]
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        raise RunError(f"{name}: could not run the trained model ({type(err).__name__}: {err}); "
                       "re-run `biomark extract` for this fold or leave it out with --no-blackout") from err
    finally:
        free_models()
    return FoldModelOutputs(
        strategy=strategy, fold=fold, model_path=model_path, head=head,
        gap=np.concatenate(gaps), map_gap=np.concatenate(map_gaps), probs=np.concatenate(probs), grid=grid,
        reduced=reduced, cam_maps=np.concatenate(cams) if cams else None, blackout_probs=blackout,
        seconds=time.perf_counter() - t0,
    )


def selected_maps(model_path: str | Path, images: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """``out_relu`` maps of a few images and channels, shape (n, n_channels, h, w)."""
    from biomark.train.maps import channel_maps, free_models

    try:
        return channel_maps(model_path, images, channels)["maps"]
    finally:
        free_models()


def load_head(model_path: str | Path) -> dict[str, np.ndarray]:
    """The head arrays of one saved model (:func:`biomark.train.head.extract_head`)."""
    from biomark.train.head import extract_head
    from biomark.train.maps import free_models

    try:
        return extract_head(model_path)
    finally:
        free_models()
