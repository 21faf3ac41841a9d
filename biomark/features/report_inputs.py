"""What the biomarker report needs from each fold's trained model, as numpy.

For one (strategy, fold), :func:`open_fold_model` loads ``model.keras`` once
(:class:`biomark.train.unit_maps.FoldModel`; the folds of a strategy share one
architecture, :func:`strategy_models`) and :func:`run_fold_model` runs it
over everything the report needs, returning numpy: the head's inference
weights (:func:`biomark.train.head.extract_head`, from which the caller gets
any probabilities); on the fold's test images the GAP vector recomputed as the
spatial mean of the ``out_relu`` maps (the
maps themselves are reduced chunk by chunk by a caller-supplied function,
e.g. the lung mass of :func:`biomark.analysis.localisation.lung_mass`, so all
1280 maps of a fold never sit in memory at once) and all-channel maps of a
few images for Grad-CAM; the GAP vectors of a common set of reference images
(to match units across folds, :mod:`biomark.analysis.alignment`); the GAP
vectors with the lungs, and with everything outside them, filled with a
neutral image (:func:`fill_region`; localisation by occlusion,
:func:`biomark.analysis.localisation.occlusion_effects`); and the GAP
vectors with the lung fields blacked out (:func:`blackout_images`); and the
GAP vectors of lung-swap composites, each film with the lungs of another
(:func:`swap_lungs`). The same open model later gives the thumbnails' maps
(:func:`selected_maps`).

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
from scipy import ndimage

from biomark.data.dataset import Dataset
from biomark.data.masks import LungMasks, dataset_lung_masks
from biomark.exceptions import RunError
from biomark.features.run_folder import MODEL_FILE, RunFolder

__all__ = [
    "MODEL_FILE",
    "FoldModelOutputs",
    "LungMasks",
    "blackout_images",
    "fill_region",
    "fold_model_path",
    "load_head",
    "lung_masks",
    "open_fold_model",
    "open_random_models",
    "release_models",
    "run_fold_model",
    "selected_maps",
    "strategy_models",
    "swap_lungs",
]

logger = logging.getLogger(__name__)

#: A function of (maps of shape (b, C, h, w), positions of shape (b,)) called per chunk.
Reducer = Callable[[np.ndarray, np.ndarray], Any]


def fold_model_path(run_dir: str | Path, strategy: str, fold: int) -> Path | None:
    """``<run>/<strategy>/fold_XX/model.keras`` when it exists, else None."""
    return RunFolder(run_dir).model_path(strategy, fold)


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


def swap_lungs(
    images: np.ndarray, masks: np.ndarray, pairs: np.ndarray, *, margin: int = 0
) -> np.ndarray:
    """Composites: an image with the lung fields of another pasted in.

    The pasted region is the union of both lung masks, grown by ``margin``
    pixels, so none of the image's own lungs is left and all of the donor's
    come in; everything else stays the image's own (see
    :mod:`biomark.analysis.lung_swap`). The margin keeps a finding's rim --
    the pixels just outside a mask that a dense base or an imprecise mask
    lets it spill into -- with its lungs rather than with the surroundings.

    Parameters
    ----------
    images : ndarray of shape (n, side, side), uint8
    masks : ndarray of shape (n, side, side)
        Non-zero = lung.
    pairs : ndarray of int, shape (m, 2)
        Per composite: the position of the image whose surroundings it
        keeps, and of the image whose lungs it gets.
    margin : int, default 0
        Pixels by which the pasted region grows (:func:`scipy.ndimage.binary_dilation`).

    Returns
    -------
    ndarray of shape (m, side, side), uint8
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    own, donor = pairs[:, 0], pairs[:, 1]
    region = (masks[own] > 0) | (masks[donor] > 0)
    if margin:
        in_plane = np.zeros((3, 3, 3), dtype=bool)  # grow within each composite, not across them
        in_plane[1] = ndimage.generate_binary_structure(2, 1)
        region = ndimage.binary_dilation(region, structure=in_plane, iterations=margin)
    return np.where(region, images[donor], images[own]).astype(np.uint8)


def fill_region(
    images: np.ndarray, masks: np.ndarray, fill: np.ndarray, *, inside: bool
) -> np.ndarray:
    """A copy of ``images`` with the lungs (``inside=True``) or everything else replaced by
    ``fill``.

    Parameters
    ----------
    images : ndarray of shape (n, side, side), uint8
    masks : ndarray of shape (n, side, side)
        Non-zero = lung.
    fill : ndarray of shape (side, side)
        The neutral content put in (the report uses the mean image of the
        analysed images: an average chest, so the region keeps a plausible
        brightness and anatomy but loses what is particular to this image).
    inside : bool

    Returns
    -------
    ndarray of shape (n, side, side), uint8
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.shape != masks.shape or np.shape(fill) != images.shape[1:]:
        raise ValueError(
            f"images {images.shape}, masks {masks.shape} and fill {np.shape(fill)} do not match"
        )
    region = masks > 0 if inside else masks == 0
    fill_u8 = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
    return np.where(region, fill_u8[None], images).astype(np.uint8)


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
    logger.info(
        "lung masks: %d of %d usable (%s)", int(result.usable.sum()), len(rows), result.source
    )
    return result


@dataclass
class FoldModelOutputs:
    """Numpy outputs of one fold's model.

    Attributes
    ----------
    strategy : str
    fold : int
    model_path : Path
    head : dict of str to ndarray
        :func:`biomark.train.head.extract_head` (the probabilities of any GAP
        vector follow from it: :class:`biomark.analysis.head.Head`).
    gap : ndarray of shape (n, n_features)
        GAP vector of the test images recomputed from the model: the spatial
        mean of the ``out_relu`` maps (compared with the dumped features: the
        identity check).
    grid : (h, w)
        Size of the ``out_relu`` maps.
    reduced : list
        The reducer's output per chunk, in order.
    cam_maps : ndarray of shape (m, n_features, h, w) or None
        All-channel maps of the ``cam_rows`` images.
    blackout_gap : ndarray of shape (n, n_features) or None
        GAP vectors with the lungs blacked out (:func:`blackout_images`).
    reference_gap : ndarray of shape (n_reference, n_features) or None
        GAP vectors of the reference images.
    gap_lungs_filled, gap_outside_filled : ndarray of shape (n, n_features) or None
        GAP vectors with the lungs, or everything outside them, filled (:func:`fill_region`).
    swap_gap : ndarray of shape (m, n_features) or None
        GAP vectors of the lung-swap composites (:func:`swap_lungs`).
    seconds : float
    """

    strategy: str
    fold: int
    model_path: Path
    head: dict[str, np.ndarray]
    gap: np.ndarray
    grid: tuple[int, int]
    reduced: list[Any] = field(default_factory=list)
    cam_maps: np.ndarray | None = None
    blackout_gap: np.ndarray | None = None
    reference_gap: np.ndarray | None = None
    gap_lungs_filled: np.ndarray | None = None
    gap_outside_filled: np.ndarray | None = None
    swap_gap: np.ndarray | None = None
    seconds: float = 0.0

    @property
    def map_gap(self) -> np.ndarray:
        """The recomputed GAP vector (``maps.mean(axis=(2, 3))``), shape (n, n_features)."""
        return self.gap


def strategy_models() -> Any:
    """A holder for one strategy's fold models (:class:`biomark.train.unit_maps.StrategyModels`)."""
    from biomark.train.unit_maps import StrategyModels

    return StrategyModels()


def open_fold_model(
    model_path: str | Path, *, strategy: str = "", fold: int = -1, models: Any = None
) -> Any:
    """Load one fold's model once (:class:`biomark.train.unit_maps.FoldModel`).

    Parameters
    ----------
    model_path : str or Path
    strategy, fold : str, int
        Named in errors.
    models : StrategyModels, optional
        The strategy's holder (:func:`strategy_models`): folds after the first
        load only their weights into its architecture. Default: a new one.

    Raises
    ------
    RunError
        If the model cannot be loaded (the file and fold are named).
    """
    holder = models if models is not None else strategy_models()
    try:
        return holder.open(fold, model_path)
    except (ValueError, RuntimeError, OSError, MemoryError, KeyError, TypeError) as err:
        raise RunError(
            f"{strategy} fold {fold} ({model_path}): could not load the trained model "
            f"({type(err).__name__}: {err}); re-run `biomark extract --force` for this fold"
        ) from err


def open_random_models(
    settings: Any, n_classes: int, films: Sequence[np.ndarray], *, seeds: Sequence[int]
) -> list[Any]:
    """Seeded random-weight copies of the run's network, opened as fold models
    (:func:`biomark.train.random_units.random_unit_models`).

    Parameters
    ----------
    settings : ModelSettings
        The run's model settings.
    n_classes : int
    films : sequence of ndarray of shape (n, side, side), uint8
        Per seed, the films its BatchNormalization statistics come from.
    seeds : sequence of int

    Raises
    ------
    RunError
        If a network cannot be built or run (e.g. out of memory).
    """
    from biomark.train.random_units import random_unit_models

    try:
        return random_unit_models(settings, n_classes, films, seeds=seeds)
    except (ValueError, RuntimeError, OSError, MemoryError, TypeError) as err:
        raise RunError(
            f"could not build random-weight copies of the run's network (seeds "
            f"{', '.join(map(str, seeds))}) ({type(err).__name__}: {err})"
        ) from err


def release_models() -> None:
    """Free the deep-learning library's global state once every open fold model is done."""
    from biomark.train.maps import free_models

    free_models()


def run_fold_model(
    model: Any,
    images: np.ndarray,
    *,
    strategy: str = "",
    fold: int = -1,
    reduce: Reducer | None = None,
    cam_rows: Sequence[int] | np.ndarray = (),
    blackout_masks: np.ndarray | None = None,
    reference_images: np.ndarray | None = None,
    occlusion: tuple[np.ndarray, np.ndarray] | None = None,
    control_rows: Sequence[int] | np.ndarray | None = None,
    swap: tuple[np.ndarray, np.ndarray, int] | None = None,
    chunk: int = 256,
) -> FoldModelOutputs:
    """Run one fold's trained model over everything the report needs.

    Parameters
    ----------
    model : FoldModel, str or Path
        An open fold model (:func:`open_fold_model`), or the fold's ``model.keras``.
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
        Lung masks; when given, the GAP vectors of the blacked-out images are returned.
    reference_images : ndarray of shape (n_reference, side, side), optional
        Common images whose GAP vectors are returned (unit matching).
    occlusion : (masks, fill), optional
        Lung masks of shape (n, side, side) and a fill image of shape
        (side, side): the GAP vectors with the lungs, and with the outside,
        filled are returned.
    control_rows : sequence of int, optional
        Positions that get the image-level controls, the blackout and the
        occlusion (default: every image); their GAP vectors follow this order.
    swap : (masks, pairs, margin), optional
        Lung masks of shape (n, side, side), (outside donor, lung donor)
        positions of shape (m, 2) and the margin in pixels: the GAP vectors
        of the lung-swap composites (:func:`swap_lungs`) are returned, in
        ``pairs`` order.
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
    t0 = time.perf_counter()
    fm = (
        model if hasattr(model, "forward") else open_fold_model(model, strategy=strategy, fold=fold)
    )
    name = f"{strategy} fold {fold} ({fm.path})"
    try:
        head = fm.head_arrays()
        n = images.shape[0]
        gaps, reduced, cams = [], [], []
        cam_set = np.asarray(sorted(set(int(r) for r in cam_rows)), dtype=np.int64)
        grid: tuple[int, int] = (0, 0)
        for start in range(0, n, chunk):
            pos = np.arange(start, min(n, start + chunk))
            out = fm.forward(images[pos], maps=True)
            maps = out["maps"]
            grid = (int(maps.shape[2]), int(maps.shape[3]))
            gaps.append(out["gap"])
            if reduce is not None:
                reduced.append(reduce(maps, pos))
            keep = np.isin(pos, cam_set)
            if keep.any():
                cams.append(maps[keep])
        # Every other pass in one stream of batches (fewer, fuller eager calls).
        extra: list[tuple[str, np.ndarray]] = []
        ctrl = np.arange(n) if control_rows is None else np.asarray(control_rows, dtype=np.int64)
        ctrl_images = images[ctrl]
        if blackout_masks is not None:
            extra.append(("blackout", blackout_images(ctrl_images, blackout_masks[ctrl])))
        if reference_images is not None and len(reference_images):
            extra.append(("reference", np.asarray(reference_images)))
        if occlusion is not None:
            masks, fill = occlusion
            extra.append(("lungs", fill_region(ctrl_images, masks[ctrl], fill, inside=True)))
            extra.append(("outside", fill_region(ctrl_images, masks[ctrl], fill, inside=False)))
        if swap is not None and len(swap[1]):
            extra.append(("swap", swap_lungs(images, swap[0], swap[1], margin=swap[2])))
        passes: dict[str, np.ndarray] = {}
        if extra:
            stacked = fm.forward(np.concatenate([a for _, a in extra]))["gap"]
            bounds = np.cumsum([0] + [len(a) for _, a in extra])
            passes = {key: stacked[bounds[i] : bounds[i + 1]] for i, (key, _) in enumerate(extra)}
    except (ValueError, RuntimeError, OSError, MemoryError) as err:
        raise RunError(
            f"{name}: could not run the trained model ({type(err).__name__}: {err}); "
            "re-run `biomark extract` for this fold or leave it out with --no-blackout"
        ) from err
    return FoldModelOutputs(
        strategy=strategy,
        fold=fold,
        model_path=Path(fm.path),
        head=head,
        gap=np.concatenate(gaps),
        grid=grid,
        reduced=reduced,
        cam_maps=np.concatenate(cams) if cams else None,
        blackout_gap=passes.get("blackout"),
        reference_gap=passes.get("reference"),
        gap_lungs_filled=passes.get("lungs"),
        gap_outside_filled=passes.get("outside"),
        swap_gap=passes.get("swap"),
        seconds=time.perf_counter() - t0,
    )


def selected_maps(model: Any, images: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """``out_relu`` maps of a few images and channels, shape (n, n_channels, h, w).

    ``model`` is an open fold model (:func:`open_fold_model`) or a ``model.keras`` path.
    """
    if hasattr(model, "forward"):
        return model.forward(images, maps=True, channels=channels)["maps"]
    from biomark.train.maps import channel_maps, free_models

    try:
        return channel_maps(model, images, channels)["maps"]
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
