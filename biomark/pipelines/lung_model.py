"""A learned lung segmenter: train it on reference masks, apply it to a dataset's films.

``biomark data mask-model`` calls :func:`train_lung_model`; ``biomark data
masks --model`` calls :func:`write_model_masks` before the masks are computed.
The model itself is :mod:`biomark.models.lung_unet`. Its masks enter a dataset
the way a user's own masks do, as files in ``DATA_DIR/masks/`` named by image
id, so that radiomics, the report and the blackout use them with no further
setting; ``DATA_DIR/masks/lung_model.json`` records which model wrote which
files. Films that already have a mask (a file, or the phantom's true masks)
are left alone; files an earlier model wrote (listed in that record) are
written again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomark.config.seeds import check_seed
from biomark.exceptions import ConfigError, DataError

__all__ = [
    "ModelMasks",
    "TrainedLungModel",
    "cross_validated_dice",
    "out_of_fold_masks",
    "train_lung_model",
    "write_model_masks",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedLungModel:
    """What :func:`train_lung_model` saved.

    Attributes
    ----------
    path : Path
        The ``.keras`` file (its record beside it as ``<path>.json``).
    info : dict
        The record: references, settings, seconds, cross-validated Dice when asked.
    """

    path: Path
    info: dict[str, Any]


@dataclass(frozen=True)
class ModelMasks:
    """What :func:`write_model_masks` wrote.

    Attributes
    ----------
    written : int
        Mask files written for films that had none.
    kept : int
        Films left alone because they already had a mask.
    folder : Path
        The dataset's masks folder.
    """

    written: int
    kept: int
    folder: Path


def out_of_fold_masks(
    images: np.ndarray, masks: np.ndarray, *, folds: int, seed: int = 0, **train: Any
) -> np.ndarray:
    """Each film's mask from a lung model trained without it (``folds``-fold).

    Films are assigned to folds by a seeded permutation; fold ``f`` trains with seed
    ``seed + 10 * f`` (room for up to 10 averaged members that overlap no other fold's).

    Parameters
    ----------
    images, masks : ndarray of shape (n, S, S)
    folds : int
        At least 2 and at most n.
    seed : int, default 0
    **train
        Passed to :func:`biomark.models.lung_unet.train_lung_unet`.

    Returns
    -------
    ndarray of shape (n, S, S), uint8

    Raises
    ------
    DataError
        If ``folds`` is out of range.
    """
    from biomark.models.lung_unet import predict_lung_masks, train_lung_unet

    if not 2 <= folds <= len(images):
        raise DataError(
            f"--cv {folds}: needs 2 to {len(images)} folds for {len(images)} reference films"
        )
    assignment = np.random.default_rng(seed).permutation(np.arange(len(images)) % folds)
    predicted = np.zeros(np.shape(images), dtype=np.uint8)
    for fold in range(folds):
        held = assignment == fold
        model = train_lung_unet(images[~held], masks[~held], seed=seed + 10 * fold, **train)
        predicted[held] = predict_lung_masks(model, images[held])
        logger.info("lung model cross-validation: fold %d of %d done", fold + 1, folds)
    return predicted


def cross_validated_dice(
    images: np.ndarray,
    masks: np.ndarray,
    groups: list[str],
    *,
    folds: int,
    seed: int = 0,
    **train: Any,
) -> dict[str, Any]:
    """Dice of each reference film against a model trained without it (``folds``-fold).

    Parameters
    ----------
    images, masks : ndarray of shape (n, S, S)
    groups : list of str
        The reference set of each film; Dice is summarised per set.
    folds : int
        At least 2 and at most n.
    seed : int, default 0
    **train
        Passed to :func:`biomark.models.lung_unet.train_lung_unet`.

    Returns
    -------
    dict
        ``per_set``: {set: {n, median, mean, min}}; ``dice``: one value per film.
    """
    from biomark.data.lungs import dice

    predicted = out_of_fold_masks(images, masks, folds=folds, seed=seed, **train)
    scores = np.array([dice(p, m) for p, m in zip(predicted, masks, strict=True)])
    names = np.asarray(groups)
    per_set = {
        name: {
            "n": int((names == name).sum()),
            "median": float(np.median(scores[names == name])),
            "mean": float(scores[names == name].mean()),
            "min": float(scores[names == name].min()),
        }
        for name in dict.fromkeys(groups)
    }
    return {"folds": folds, "per_set": per_set, "dice": [float(s) for s in scores]}


def train_lung_model(
    references: list[str | Path],
    out: str | Path,
    *,
    epochs: int = 60,
    size: int = 128,
    seed: int = 0,
    cv: int = 0,
    base_filters: int = 16,
    depth: int = 4,
    members: int = 1,
    run_eagerly: bool = False,
) -> TrainedLungModel:
    """Train the lung U-Net on reference folders and save it (``biomark data mask-model``).

    Parameters
    ----------
    references : list of path
        Reference folders (:func:`biomark.data.lung_references.read_lung_references`).
    out : path
        The ``.keras`` file to write.
    epochs : int, default 60
    size : int, default 128
        Model input side.
    seed : int, default 0
    cv : int, default 0
        When at least 2, first score the recipe by ``cv``-fold cross-validation
        (trains ``cv`` extra models) and record the Dice.
    base_filters, depth : int
        The U-Net's width and levels (:func:`biomark.models.lung_unet.build_lung_unet`).
    members : int, default 1
        U-Nets trained with consecutive seeds and averaged into one model (``members`` times
        the training time; steadier masks).
    run_eagerly : bool, default False
        Train op by op instead of tracing (``train_lung_unet``): faster only
        for a handful of steps; recorded with the settings.

    Returns
    -------
    TrainedLungModel

    Raises
    ------
    DataError
        If a reference folder is unreadable (see ``read_lung_references``).
    ConfigError
        If ``out`` does not end in ``.keras``, or ``seed`` is out of range
        (:func:`biomark.config.seeds.check_seed`).
    """
    from biomark.data.lung_references import read_lung_references
    from biomark.models.lung_unet import save_lung_unet, train_lung_unet
    from biomark.provenance import package_versions

    check_seed(seed, "--seed")
    out = Path(out)
    if out.suffix != ".keras":
        raise ConfigError(f"--out {out}: the model file must end in .keras (Keras's format)")
    refs = read_lung_references(references)
    logger.info(
        "lung model: %d reference films from %s", len(refs), ", ".join(dict.fromkeys(refs.folders))
    )
    settings: dict[str, Any] = {
        "epochs": epochs,
        "size": size,
        "base_filters": base_filters,
        "depth": depth,
        "members": members,
        "run_eagerly": run_eagerly,
    }
    info: dict[str, Any] = {
        "references": {name: refs.folders.count(name) for name in dict.fromkeys(refs.folders)},
        "reference_paths": [str(Path(r).resolve()) for r in references],
        "seed": seed,
        **settings,
        "versions": package_versions(("biomark", "keras", "tensorflow", "jax", "numpy")),
    }
    if cv:
        info["cross_validation"] = cross_validated_dice(
            refs.images, refs.masks, refs.folders, folds=cv, seed=seed, **settings
        )
    start = time.perf_counter()

    def report(epoch: int, loss: float) -> None:
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs * members:
            logger.info("lung model: epoch %d of %d, loss %.3f", epoch, epochs * members, loss)

    model = train_lung_unet(refs.images, refs.masks, seed=seed, on_epoch=report, **settings)
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    save_lung_unet(model, out, info)
    return TrainedLungModel(out, info)


def write_model_masks(
    data: str | Path, model_path: str | Path, *, batch_size: int = 16
) -> ModelMasks:
    """Segment the films of a dataset that have no mask with a lung model; write the masks as files.

    Each mask is cropped to the film's letterboxed content (the original
    file's box, from the manifest's width and height), so it has the film's
    aspect ratio, and saved as ``DATA_DIR/masks/<image_id>.png``
    (0/255). ``DATA_DIR/masks/lung_model.json`` records the model, its record
    and the files written.

    Parameters
    ----------
    data : path
        The dataset folder.
    model_path : path
        A ``.keras`` file from :func:`train_lung_model`.
    batch_size : int, default 16

    Returns
    -------
    ModelMasks

    Raises
    ------
    WeightsError
        If the model file is missing or not a lung model.
    DataError
        If an image id cannot be a file name.
    """
    from PIL import Image

    from biomark.data.dataset import dataset_paths, load_dataset
    from biomark.data.masks import (
        MASKS_DIR,
        MODEL_RECORD,
        content_box,
        model_written_files,
        original_size,
        rows_without_supplied_mask,
    )
    from biomark.io.atomic import atomic_path, write_json_atomic
    from biomark.models.lung_unet import load_lung_unet, predict_lung_masks
    from biomark.provenance import file_sha256

    model, info = load_lung_unet(model_path)
    dataset = load_dataset(data)
    folder = dataset_paths(data).root / MASKS_DIR
    ids = dataset.manifest["image_id"].astype(str).to_numpy()
    # Files an earlier lung model wrote are that model's output, not a user's masks: segment them
    # again.
    earlier = model_written_files(folder)
    rows = np.union1d(
        rows_without_supplied_mask(dataset), np.flatnonzero([f"{i}.png" in earlier for i in ids])
    ).astype(np.int64)
    unsafe = [i for i in ids[rows] if Path(i).name != i or i in ("", ".", "..")]
    if unsafe:
        raise DataError(
            f"{data}: image ids {unsafe[:3]} cannot be mask file names; give the manifest plain ids"
        )
    record = {
        "model": str(Path(model_path).resolve()),
        "model_sha256": file_sha256(model_path),
        "model_info": info,
    }
    planned = [f"{ids[row]}.png" for row in rows]
    if planned:
        # Recorded before any file is written, so that a run killed half-way still owns its files:
        # the next run writes them again instead of taking them for a user's masks.
        write_json_atomic(
            folder / MODEL_RECORD, {**record, "files": sorted(earlier | set(planned))}
        )
    written: list[str] = []
    for start in range(0, len(rows), 256):
        chunk = rows[start : start + 256]
        images = np.stack([np.asarray(dataset.images[r]) for r in chunk])
        for row, image, mask in zip(
            chunk, images, predict_lung_masks(model, images, batch_size), strict=True
        ):
            top, bottom, left, right = content_box(image, original_size(dataset.manifest, int(row)))
            name = f"{ids[row]}.png"
            with atomic_path(folder / name, suffix=".png", keep_suffix=True) as tmp:
                Image.fromarray((mask[top:bottom, left:right] > 0).astype(np.uint8) * 255).save(tmp)
            written.append(name)
        logger.info("lung model: %d of %d films segmented", len(written), len(rows))
    if planned:
        write_json_atomic(folder / MODEL_RECORD, {**record, "files": written})
    return ModelMasks(len(written), len(dataset) - len(rows), folder)
