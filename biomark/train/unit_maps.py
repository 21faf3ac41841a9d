"""A strategy's trained fold models, loaded once, for everything the biomarker report asks of them.

The report needs several passes of each fold's model over different images:
the fold's test images (``out_relu`` maps, GAP vector), a common reference
set (to match units across folds, :mod:`biomark.analysis.alignment`), the
test images with the lungs or the outside filled in (localisation by
occlusion, the lung blackout), and later the maps of a few images and
channels for thumbnails.

Loading ``model.keras`` is the slow part (seconds per fold). The folds of one
strategy share one architecture, so :class:`StrategyModels` deserialises the
first fold's model once and loads every other fold's weights into it
(``Model.load_weights`` reads the weights of a ``.keras`` file without
rebuilding the model; about half the time of ``load_model``), keeping each
fold's weights in memory (about 22 MB per fold at alpha 1.0, plus the backbone's
folded copy described below) so that a later
pass switches folds with ``set_weights`` in a fraction of a second. A
:class:`FoldModel` is one fold's view of it.

A pass runs the model's layers up to its preprocessing, then the backbone up to
``out_relu``, in an inference copy whose BatchNormalization layers are folded
into their convolutions (:mod:`biomark.train.folded_batchnorm`: the same
function up to float32 rounding; the backbone's pass about 18 % faster on one
core at 96 px, the demo report's model stage about 9 %); the GAP vector is
the spatial mean of the maps, exactly as the model's own average pooling
computes it.
The passes go through one compiled model per strategy, traced once (the folds
only swap weights), in batches sized to the image (256 images at 64 px, fewer
for larger images): with TensorFlow a function traced for any batch size
(:func:`biomark.train.accelerate.inference_function`), so the last batch of a
pass runs as it is; with another backend ``predict``, with the last batch padded
to the traced size. The
probabilities come from the numpy head (:class:`biomark.analysis.head.Head`)
in the caller.

Examples
--------
>>> models = StrategyModels()  # doctest: +SKIP
>>> fm = models.open(0, "runs/quick/scratch/fold_00/model.keras")  # doctest: +SKIP
>>> out = fm.forward(images, maps=True)  # doctest: +SKIP
>>> out["maps"].shape, out["gap"].shape  # doctest: +SKIP
((56, 1280, 2, 2), (56, 1280))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from biomark.models.mobilenet import PREPROCESS_LAYER
from biomark.models.strategies import get_backbone
from biomark.train.accelerate import inference_function
from biomark.train.folded_batchnorm import FoldedBatchNorm

__all__ = ["FoldModel", "StrategyModels", "batch_size_for"]

logger = logging.getLogger(__name__)

#: The backbone layer whose spatial mean is the GAP vector.
LAST_CONV_LAYER = "out_relu"
#: Images per slice of a pass (bounds the memory of the maps).
_PASS_IMAGES = 2048


def batch_size_for(image_size: int, *, pixels: int = 256 * 64 * 64) -> int:
    """Images per eager batch: ``pixels`` per batch (256 images at 64 px, 26 at 200 px), at least 8.

    Eager calls pay a fixed cost per layer and call, so small images go in
    large batches; large images in small ones, to bound memory.

    Examples
    --------
    >>> batch_size_for(64), batch_size_for(200), batch_size_for(512)
    (256, 26, 8)
    """
    return int(max(8, min(256, pixels // max(1, int(image_size) ** 2))))


class StrategyModels:
    """The fold models of one strategy on one architecture, weights swapped per fold.

    Attributes
    ----------
    paths : dict of int to Path
        The ``model.keras`` of every opened fold.
    """

    def __init__(self) -> None:
        self.paths: dict[int, Path] = {}
        self._model: Any = None
        self._prefix: Any = None
        self._fmap: Any = None
        self._folded: FoldedBatchNorm | None = None
        self._weights: dict[int, list[np.ndarray]] = {}
        self._folded_weights: dict[int, list[np.ndarray]] = {}
        self._current: int | None = None
        self._maps_model: Any = None
        self._maps_function: Any = None

    def _build(self, path: Path) -> None:
        from biomark.train.predict import load_model

        self._use_architecture(load_model(path))

    def _use_architecture(self, model: Any) -> None:
        self._model = model
        self._prefix = keras.Model(
            model.inputs, model.get_layer(PREPROCESS_LAYER).output, name="report_prefix"
        )
        backbone = get_backbone(model)
        self._fmap = keras.Model(
            backbone.inputs, backbone.get_layer(LAST_CONV_LAYER).output, name="report_maps"
        )
        self._folded = FoldedBatchNorm(self._fmap)
        self._folded_weights.clear()
        self._maps_model = self._maps_function = None

    def open(self, fold: int, path: str | Path) -> FoldModel:
        """Load one fold's model (the first fold builds the architecture) and return its view.

        Raises
        ------
        RunError
            If there is no file at ``path``, or it is not a model archive.
        ValueError
            If the weights do not fit the architecture of the first fold and
            the file cannot be loaded on its own either.
        """
        from biomark.train.predict import check_model_archive

        path = check_model_archive(path)
        if self._model is None:
            self._build(path)
        else:
            try:
                self._model.load_weights(path)
            except (ValueError, KeyError, OSError) as err:
                # A fold saved with another architecture (should not happen within a run): load it
                # whole.
                logger.warning(
                    "%s: weights do not fit the strategy's first model (%s); loading it on its own",
                    path,
                    err,
                )
                self._build(path)
                self._weights.clear()
        self._remember(int(fold))
        self.paths[int(fold)] = path
        return FoldModel(self, int(fold))

    def adopt(self, fold: int, model: Any, name: str) -> FoldModel:
        """Use a model built in memory (not read from a file) as fold ``fold``; returns its view.

        The first model adopted gives the architecture; a later one (built the
        same way) gives only its weights, so the compiled pass is reused. The
        first model itself, adopted again with other weights assigned to it
        (:func:`biomark.train.random_units.random_unit_models`), is kept as it is.

        Parameters
        ----------
        fold : int
        model : keras.Model
            Built like the run's models (:func:`biomark.models.mobilenet.build_model`).
        name : str
            Stands for the file in messages (``FoldModel.path``).

        Raises
        ------
        ValueError
            If a later model's weights do not fit the first one's architecture.
        """
        if self._model is None:
            self._use_architecture(model)
        elif model is not self._model:  # the same model object already holds its weights
            self._model.set_weights(model.get_weights())
        self._remember(int(fold))
        self.paths[int(fold)] = Path(name)
        return FoldModel(self, int(fold))

    def _remember(self, fold: int) -> None:
        """Keep the model's current weights (and their folded copy) as fold ``fold``'s."""
        assert self._folded is not None  # set with the architecture
        self._weights[fold] = [np.array(w, copy=True) for w in self._model.get_weights()]
        self._folded_weights[fold] = self._folded.folded_weights()
        self._folded.assign(self._folded_weights[fold])
        self._current = fold

    def maps_model(self) -> Any:
        """Input image -> ``out_relu`` maps, one compiled model for every fold.

        ``predict`` traces its step once per strategy (the folds only swap
        weights into the same layers), instead of running the layers eagerly
        from Python for every batch: 2-4x faster per pass at 96 px. The
        backbone is the inference copy with its BatchNormalization folded into
        the convolutions (:mod:`biomark.train.folded_batchnorm`).
        """
        if self._maps_model is None:
            assert self._folded is not None  # set with the architecture
            inputs = self._model.inputs
            self._maps_model = keras.Model(
                inputs, self._folded.model(self._prefix(inputs)), name="report_pass"
            )
            # traced at its first call, so nothing is spent where predict is used instead
            self._maps_function = inference_function(self._maps_model)
        return self._maps_model

    def maps_function(self) -> Any:
        """:meth:`maps_model` traced for batches of any size
        (:func:`biomark.train.accelerate.inference_function`), or None where the
        backend has none (then ``predict``, with padded batches)."""
        self.maps_model()
        return self._maps_function

    def _use(self, fold: int) -> None:
        if self._current != fold:
            assert self._folded is not None  # set with the architecture
            self._model.set_weights(self._weights[fold])
            self._folded.assign(self._folded_weights[fold])
            self._current = fold

    def close(self) -> None:
        """Drop the models and the kept weights."""
        self._model = self._prefix = self._fmap = self._maps_model = self._folded = None
        self._maps_function = None
        self._weights.clear()
        self._folded_weights.clear()
        self._current = None


class FoldModel:
    """One fold of :class:`StrategyModels`.

    Attributes
    ----------
    fold : int
    path : Path
        The fold's ``model.keras``.
    image_size : int
        Model input side.
    n_features : int
        GAP features (channels of ``out_relu``).
    """

    def __init__(self, models: StrategyModels, fold: int) -> None:
        self._models = models
        self.fold = fold
        self.path = models.paths[fold]
        self.image_size = int(models._model.input_shape[1])
        self.n_features = int(models._fmap.output.shape[-1])

    def head_arrays(self) -> dict[str, np.ndarray]:
        """The head's inference weights (:func:`biomark.train.head.extract_head`)."""
        from biomark.train.head import extract_head

        self._models._use(self.fold)
        return extract_head(self._models._model)

    def forward(
        self,
        images: np.ndarray,
        *,
        maps: bool = False,
        channels: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """GAP vector, and on request ``out_relu`` maps, of some images.

        Parameters
        ----------
        images : ndarray of shape (n_images, side, side), uint8
            Cache format; resized once when ``side`` is not the model's input side.
        maps : bool, default False
            Also return the maps.
        channels : sequence of int, optional
            Channels of the maps to return (default all).
        batch_size : int, optional
            Default :func:`batch_size_for` the model's input side.

        Returns
        -------
        dict of str to ndarray, float32
            ``"gap"`` (n_images, n_features) and, with ``maps``, ``"maps"``
            (n_images, n_channels, h, w).

        Raises
        ------
        ValueError
            If no images are given or a channel is out of range.
        """
        from biomark.train.loader import ImageBatches

        images = np.asarray(images)
        if images.ndim != 3 or images.shape[0] == 0:
            raise ValueError(
                f"{self.path}: images must have shape (n >= 1, side, side), got {images.shape}"
            )
        chosen = (
            np.arange(self.n_features) if channels is None else np.asarray(channels, dtype=np.int64)
        )
        if chosen.size and (chosen.min() < 0 or chosen.max() >= self.n_features):
            raise ValueError(
                f"channels must lie in [0, {self.n_features - 1}], got "
                f"{chosen.min()}..{chosen.max()}"
            )
        self._models._use(self.fold)
        size = batch_size or batch_size_for(self.image_size)
        run = self._models.maps_function()
        gaps, fmaps = [], []
        for start in range(0, len(images), _PASS_IMAGES):  # bounded memory for the maps
            part = images[start : start + _PASS_IMAGES]
            data = ImageBatches(
                part, batch_size=size, image_size=self.image_size, pad_to_batch=run is None
            )
            if run is not None:
                fmap = np.concatenate([np.asarray(run(data[i])) for i in range(len(data))])
            else:
                fmap = np.asarray(self._models.maps_model().predict(data, verbose=0))[: len(part)]
            gaps.append(fmap.mean(axis=(1, 2), dtype=np.float64).astype(np.float32))
            if maps:
                fmaps.append(np.transpose(fmap[..., chosen], (0, 3, 1, 2)).astype(np.float32))
        result = {"gap": np.concatenate(gaps)}
        if maps:
            result["maps"] = np.concatenate(fmaps)
        return result

    def close(self) -> None:
        """Close the whole strategy's models (every fold's view)."""
        self._models.close()
