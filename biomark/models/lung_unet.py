"""A small U-Net that segments the lung fields of a chest X-ray, trained on reference masks.

Why a learned model next to the shape template
----------------------------------------------
The template segmenter (:func:`biomark.data.lungs.segment_lungs`) fits one lung
shape by image contrast. Scored against hand-drawn masks of 61 of the real
films in ``../shared/data`` (V7 Labs' lung annotations of the Kermany and Cohen
sets, see ``benchmarks/v7_references.py``) its masks are precise (median 0.96
of the mask is lung) but miss about a third of the lung (median recall 0.64):
it follows aerated lung, so the opacified lower lungs of COVID-19 and
pneumonia films, the very regions a biomarker should look at, fall outside.
Tuning the template did not fix that (``benchmarks/RESULTS.md``). A U-Net
trained on reference masks learns the anatomical outline, opacity included:
trained on 76 references (those 61 films scored out of fold, 11 Shenzhen, 4
JSRT) its Dice is 0.923 on the V7 films (template 0.769), 0.920 on Shenzhen
(0.888) and 0.908 on JSRT (0.902), and 90 of the 94 frontal films of
``../shared/data`` pass the mask checks (template 84), 90 usable by eye
(``benchmarks/lung_unet.py``).

The model is small on purpose: 128 px input, four levels of 16-128 filters
(about 1.9 M weights), so it trains on a few dozen references in minutes on
two CPU cores. Users train it from public lung-mask sets with ``biomark data
mask-model`` and apply it offline from the saved ``.keras`` file with ``biomark
data masks --model``. Nothing is downloaded.

Method
------
* **Input.** A letterboxed film (any side) is resized to ``size`` px and
  standardised per image (zero mean, unit variance), so exposure and windowing
  do not matter.
* **Training.** Binary cross-entropy plus soft Dice loss, Adam (1e-3); each
  batch is augmented with the same random rotation (+-10 degrees), shift
  (+-8 %) and zoom (+-15 %) for film and mask, and a random gamma (0.67-1.5)
  of the film.
* **Prediction.** Probabilities are resized back to the film's side and cut at
  0.5; the two largest connected regions are kept, their holes filled, and
  the letterbox padding cleared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomark.exceptions import DataError, WeightsError
from biomark.models.memory import check_training_fits

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "LUNG_UNET_SIZE",
    "build_lung_unet",
    "load_lung_unet",
    "predict_lung_masks",
    "save_lung_unet",
    "train_lung_unet",
]

logger = logging.getLogger(__name__)

#: Default input side of the model, in pixels.
LUNG_UNET_SIZE = 128


def build_lung_unet(
    size: int = LUNG_UNET_SIZE, base_filters: int = 16, depth: int = 4
) -> keras.Model:
    """A U-Net with ``depth`` down/up levels; one sigmoid output channel (lung probability).

    Parameters
    ----------
    size : int, default 128
        Input side; a multiple of ``2 ** depth``.
    base_filters : int, default 16
        Filters of the first level; doubled at each level down.
    depth : int, default 4

    Raises
    ------
    ValueError
        If ``size`` is not a multiple of ``2 ** depth``.
    """
    import keras
    from keras import layers

    if size % 2**depth:
        raise ValueError(f"size {size} must be a multiple of 2**depth = {2**depth}")

    def convolutions(x: Any, filters: int) -> Any:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return x

    inputs = keras.Input((size, size, 1), name="film")
    x, skips = inputs, []
    for level in range(depth):
        x = convolutions(x, base_filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = convolutions(x, base_filters * 2**depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = convolutions(x, base_filters * 2**level)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="lung")(x)
    return keras.Model(inputs, outputs, name="lung_unet")


def _resize(stack: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize each (S, S) float32 plane to (size, size)."""
    from PIL import Image

    if stack.shape[1] == size:
        return stack.astype(np.float32)
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.stack(
        [
            np.asarray(Image.fromarray(plane.astype(np.float32)).resize((size, size), method))
            for plane in stack
        ]
    ).astype(np.float32)


def _standardise(films: np.ndarray) -> np.ndarray:
    """Per-image zero mean, unit variance; shape (n, s, s) -> (n, s, s, 1)."""
    mean = films.mean(axis=(1, 2), keepdims=True)
    spread = films.std(axis=(1, 2), keepdims=True) + 1e-6
    return ((films - mean) / spread)[..., None].astype(np.float32)


def _soft_dice_loss(truth: Any, predicted: Any) -> Any:
    from keras import ops

    overlap = ops.sum(truth * predicted, axis=(1, 2, 3))
    total = ops.sum(truth, axis=(1, 2, 3)) + ops.sum(predicted, axis=(1, 2, 3))
    return 1.0 - ops.mean((2.0 * overlap + 1.0) / (total + 1.0))


def _loss(truth: Any, predicted: Any) -> Any:
    import keras

    return keras.ops.mean(keras.losses.binary_crossentropy(truth, predicted)) + _soft_dice_loss(
        truth, predicted
    )


def _batches(
    films: np.ndarray, masks: np.ndarray, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless augmented batches: one geometric transform per film and mask pair, gamma on the
    film."""
    import keras
    from keras import layers

    rng = np.random.default_rng(seed)
    geometry = keras.Sequential(
        [
            layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom((-0.15, 0.15), fill_mode="constant", seed=seed + 2),
        ]
    )
    while True:
        order = rng.permutation(len(films))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            pair = np.stack([films[rows], masks[rows]], axis=-1)
            moved = np.asarray(geometry(pair, training=True))
            gamma = np.exp(rng.uniform(-0.4, 0.4, size=(len(rows), 1, 1)))
            film = np.clip(moved[..., 0], 0.0, 1.0) ** gamma
            yield _standardise(film), (moved[..., 1:] > 0.5).astype(np.float32)


def _train_one(
    films: np.ndarray,
    truth: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    base_filters: int,
    depth: int,
    seed: int,
    on_epoch: Callable[[int, float], None] | None,
    run_eagerly: bool = False,
) -> keras.Model:
    import keras

    keras.utils.set_random_seed(seed)
    model = build_lung_unet(films.shape[1], base_filters, depth)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss, run_eagerly=run_eagerly)
    callbacks = []
    if on_epoch is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(
                    epoch + 1, float((logs or {}).get("loss", np.nan))
                )
            )
        )
    model.fit(
        _batches(films, truth, batch_size, seed),
        steps_per_epoch=len(films) // batch_size,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model


def train_lung_unet(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    size: int = LUNG_UNET_SIZE,
    epochs: int = 60,
    batch_size: int = 8,
    base_filters: int = 16,
    depth: int = 4,
    seed: int = 0,
    members: int = 1,
    on_epoch: Callable[[int, float], None] | None = None,
    run_eagerly: bool = False,
) -> keras.Model:
    """Train :func:`build_lung_unet` on letterboxed films and their masks.

    Parameters
    ----------
    images : ndarray of shape (n, S, S), uint8
        Letterboxed films (e.g. :func:`biomark.data.lung_references.read_lung_references`).
    masks : ndarray of shape (n, S, S)
        Their lung masks; non-zero is lung.
    size : int, default 128
        Model input side.
    epochs : int, default 60
        Passes over the films (each of ``n // batch_size`` augmented batches).
    batch_size : int, default 8
        Lowered to ``n`` for fewer films.
    base_filters, depth : int
        See :func:`build_lung_unet`.
    seed : int, default 0
        Seeds the weights, the augmentation and the batch order.
    members : int, default 1
        Train this many U-Nets (seeds ``seed``, ``seed + 1``, ...) and return one model that
        averages their lung probabilities: a model trained on a few dozen films varies from seed
        to seed in which films it gets wrong, and the average is steadier. Costs ``members``
        times the training.
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, loss)`` after each epoch (1-based, counted over all
        members: ``members * epochs`` calls), for progress.
    run_eagerly : bool, default False
        Keras's ``run_eagerly``: train op by op instead of tracing the step.
        Tracing costs seconds per model (about 10 s on 2 cores), so only a
        training of a handful of steps (a smoke run, a test) is faster eagerly.

    Returns
    -------
    keras.Model

    Raises
    ------
    DataError
        If images and masks differ in shape, or there are fewer than 2 films.
    ValueError
        If ``members`` is below 1.
    ConfigError
        If one training step cannot fit in the machine's memory
        (:func:`biomark.models.memory.check_training_fits`).
    """
    import keras

    images, masks = np.asarray(images), np.asarray(masks)
    if images.shape != masks.shape or images.ndim != 3:
        raise DataError(f"images {images.shape} and masks {masks.shape} must both be (n, S, S)")
    if len(images) < 2:
        raise DataError(
            f"{len(images)} reference film(s); a lung model needs at least 2 (dozens to be useful)"
        )
    if members < 1:
        raise ValueError(f"members={members}: give at least 1")
    # before the films are enlarged to the input size, which at a size no step could train at
    # would itself take the machine's memory
    check_training_fits(
        build_lung_unet(size, base_filters, depth),
        min(batch_size, len(images)),
        name="the lung U-Net",
        size_setting="--size",
        batch_setting=None,
    )
    films = _resize(images.astype(np.float32) / 255.0, size)
    truth = (_resize((masks > 0).astype(np.float32), size, nearest=True) > 0.5).astype(np.float32)
    batch_size = min(batch_size, len(films))
    trained = []
    for member in range(members):

        def progress(epoch: int, loss: float, done: int = member * epochs) -> None:
            if on_epoch is not None:
                on_epoch(done + epoch, loss)

        trained.append(
            _train_one(
                films,
                truth,
                epochs=epochs,
                batch_size=batch_size,
                base_filters=base_filters,
                depth=depth,
                seed=seed + member,
                on_epoch=progress,
                run_eagerly=run_eagerly,
            )
        )
    if members == 1:
        return trained[0]
    inputs = keras.Input((size, size, 1), name="film")
    outputs = []
    for member, model in enumerate(trained):
        # An uncompiled copy: a nested model keeps its compile settings (the custom loss) in the
        # saved file, which then would not load without that function registered.
        copy = build_lung_unet(size, base_filters, depth)
        copy.set_weights(model.get_weights())
        copy.name = f"lung_unet_{member}"
        outputs.append(copy(inputs))
    average = keras.layers.Average(name="lung")(outputs)
    return keras.Model(inputs, average, name="lung_unet_average")


def _clean(mask: np.ndarray) -> np.ndarray:
    """The two largest connected regions with their holes filled."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count > 2:
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        mask = np.isin(labels, np.argsort(sizes)[-2:] + 1)
    return ndimage.binary_fill_holes(mask)


def predict_lung_masks(model: keras.Model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Lung masks of letterboxed films.

    Parameters
    ----------
    model : keras.Model
        From :func:`train_lung_unet` or :func:`load_lung_unet`.
    images : ndarray of shape (n, S, S), uint8
        Letterboxed films; the padding is exactly 0.
    batch_size : int, default 16

    Returns
    -------
    ndarray of shape (n, S, S), uint8 in {0, 1}
        Zero in the letterbox padding (outside the box of the film's non-zero
        rows and columns); black pixels inside the film may be lung.
    """
    from biomark.data.lung_checks import content_mask

    images = np.asarray(images)
    side, size = images.shape[1], int(model.input_shape[1])
    out = np.zeros(images.shape, dtype=np.uint8)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        films = _standardise(_resize(chunk.astype(np.float32) / 255.0, size))
        probability = np.asarray(model.predict(films, verbose=0))[..., 0]
        back = _resize(probability, side)
        for k, (plane, film) in enumerate(zip(back, chunk, strict=True)):
            out[start + k] = _clean(plane > 0.5) & content_mask(film)
    return out


def save_lung_unet(model: keras.Model, path: str | Path, info: dict[str, Any]) -> Path:
    """Save the model to ``path`` (``.keras``) and ``info`` beside it (``<path>.json``), atomically.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.keras``.
    """
    from biomark.io.atomic import atomic_path, write_json_atomic

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a lung model file must end in .keras")
    with atomic_path(path, suffix=".keras", keep_suffix=True) as tmp:
        model.save(tmp)
    write_json_atomic(Path(f"{path}.json"), info)
    return path


def load_lung_unet(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Load a model saved by :func:`save_lung_unet`, with its info (empty when the JSON is absent).

    Raises
    ------
    WeightsError
        If the file is missing or not a Keras model.
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no lung model file; train one with `biomark data mask-model`")
    try:
        model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise WeightsError(
            f"{path}: not a lung model saved by biomark ({err}); train it again"
        ) from err
    if (
        len(model.input_shape) != 4
        or model.input_shape[1] != model.input_shape[2]
        or model.output_shape[-1] != 1
    ):
        raise WeightsError(
            f"{path}: input {model.input_shape} / output {model.output_shape} is not a lung U-Net"
        )
    sidecar = Path(f"{path}.json")
    info = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    return model, info
