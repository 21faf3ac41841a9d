"""Backbone weights that work offline: ImageNet cache, local files, or none.

``model.weights`` in a plan (``biomark.config.ModelSettings``) is one of

``imagenet``
    Keras's pretrained MobileNetV2 weights. A file already in Keras's cache
    (``$KERAS_HOME/models/`` or ``~/.keras/models/``) is used directly;
    otherwise Keras downloads it. Without network and without the file,
    :class:`~biomark.exceptions.WeightsError` says which file to place where.
``/path/to/file.h5`` or ``/path/to/file.weights.h5``
    A local weights file for MobileNetV2 *without its top* (``include_top=False``),
    with the plan's ``model.alpha``. Keras's legacy ``.h5`` (the format of
    the ImageNet download) and Keras 3's ``.weights.h5`` both load.
``none``
    No pretrained weights. ``scratch`` always uses this; for a pretrained
    strategy (``frozen``, ``finetune:N``) the backbone then starts from seeded
    random weights - a "random features" control, logged as a warning.

Examples
--------
>>> imagenet_filename(1.0, 224)
'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5'
>>> imagenet_filename(0.35, 200)  # Keras falls back to the 224 weights
'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5'
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from biomark.config import ModelSettings, StrategySpec
from biomark.exceptions import WeightsError
from biomark.models.strategies import BACKBONE_NAME, needs_pretrained

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "IMAGENET_ALPHAS",
    "IMAGENET_BASE_URL",
    "IMAGENET_FILENAME",
    "IMAGENET_ROWS",
    "imagenet_cache_path",
    "imagenet_filename",
    "imagenet_rows",
    "imagenet_url",
    "load_backbone",
    "resolve_backbone_weights",
]

logger = logging.getLogger(__name__)

#: Strategies already warned about a random backbone in this process.
_WARNED_RANDOM: set[str] = set()

#: Where Keras downloads MobileNetV2 weights from (``keras.src.applications.mobilenet_v2``).
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
#: Width multipliers with published ImageNet weights.
IMAGENET_ALPHAS: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
#: Input sides with published ImageNet weights; any other size gets the 224 file.
IMAGENET_ROWS: tuple[int, ...] = (96, 128, 160, 192, 224)
#: The file for alpha=1.0 at 224 px without the classification top.
IMAGENET_FILENAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5")


def imagenet_rows(image_size: int) -> int:
    """The input side whose ImageNet weights Keras loads for ``image_size``.

    Examples
    --------
    >>> imagenet_rows(160), imagenet_rows(200)
    (160, 224)
    """
    return image_size if image_size in IMAGENET_ROWS else 224


def imagenet_filename(alpha: float = 1.0, rows: int = 224) -> str:
    """Keras's file name for the no-top ImageNet weights (same rule as Keras)."""
    return (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
        f"{float(alpha)}_{imagenet_rows(int(rows))}_no_top.h5"
    )


def imagenet_url(alpha: float = 1.0, rows: int = 224) -> str:
    """The URL Keras downloads the no-top ImageNet weights from.

    Examples
    --------
    >>> imagenet_url(0.35, 96)
    'https://storage.googleapis.com/.../mobilenet_v2/mobilenet_v2_..._0.35_96_no_top.h5'
    """
    return IMAGENET_BASE_URL + imagenet_filename(alpha, rows)


def _keras_home() -> Path:
    # Mirrors keras.src.backend.config: $KERAS_HOME, else ~/.keras (or
    # /tmp/.keras when the home folder is not writable). Read at call time.
    env = os.environ.get("KERAS_HOME")
    if env:
        return Path(env).expanduser()
    home = Path("~").expanduser()
    base = home if os.access(home, os.W_OK) else Path("/tmp")
    return base / ".keras"


def imagenet_cache_path(alpha: float = 1.0, rows: int = 224) -> Path:
    """Where Keras caches the no-top ImageNet weights for ``alpha``/``rows``.

    Parameters
    ----------
    alpha : float, default 1.0
        MobileNetV2 width multiplier.
    rows : int, default 224
        Input side; sizes without published weights map to 224, as in Keras.

    Returns
    -------
    Path
        ``$KERAS_HOME/models/<file>`` or ``~/.keras/models/<file>``.

    Examples
    --------
    >>> path = imagenet_cache_path(1.0, 200)
    >>> path.parent.name, path.name == imagenet_filename(1.0, 224)
    ('models', True)
    """
    return _keras_home() / "models" / imagenet_filename(alpha, rows)


def resolve_backbone_weights(spec: str, *, alpha: float, image_size: int) -> str | None:
    """Turn ``model.weights`` into what ``keras.applications.MobileNetV2`` takes.

    Parameters
    ----------
    spec : str
        ``"imagenet"``, ``"none"`` or a path to a weights file.
    alpha : float
        The plan's ``model.alpha``.
    image_size : int
        The plan's ``model.image_size``.

    Returns
    -------
    str or None
        A local file path (a cached ImageNet file or the given file),
        ``"imagenet"`` when Keras must download, or None for ``"none"``.

    Raises
    ------
    WeightsError
        If ImageNet weights do not exist for ``alpha``, or the file is
        missing, unreadable or not a Keras weights file.

    Examples
    --------
    >>> resolve_backbone_weights("none", alpha=1.0, image_size=224) is None
    True
    >>> resolve_backbone_weights("imagenet", alpha=0.2, image_size=224)
    Traceback (most recent call last):
    ...
    biomark.exceptions.WeightsError: model.weights=imagenet: ... only for model.alpha
    in 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, not 0.2; ...

    A local file is checked before Keras sees it (nothing is downloaded):

    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     local = Path(folder, "backbone.weights.h5")
    ...     try:
    ...         resolve_backbone_weights(str(local), alpha=1.0, image_size=224)
    ...     except WeightsError as err:
    ...         print(str(err).replace(str(local), "<file>"))
    ...     _ = local.write_bytes(b"")  # the file now exists
    ...     resolve_backbone_weights(str(local), alpha=1.0, image_size=224) == str(local)
    model.weights='<file>': file not found; give the path of a MobileNetV2 (include_top=False,
    alpha=1.0) weights file (.h5 or .weights.h5), or use 'imagenet' or 'none'
    True
    """
    text = str(spec).strip()
    if text.lower() == "none":
        return None
    if text.lower() == "imagenet":
        if float(alpha) not in IMAGENET_ALPHAS:
            raise WeightsError(
                f"model.weights=imagenet: Keras publishes MobileNetV2 ImageNet weights only "
                f"for model.alpha in {', '.join(map(str, IMAGENET_ALPHAS))}, not {alpha}; "
                "change model.alpha, or use model.weights: none or a path to a weights file"
            )
        cached = imagenet_cache_path(alpha, image_size)
        if cached.is_file():
            logger.debug("using cached ImageNet weights %s", cached)
            return str(cached)
        return "imagenet"
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"model.weights={text!r}: file not found; give the path of a MobileNetV2 "
            f"(include_top=False, alpha={alpha}) weights file (.h5 or .weights.h5), "
            "or use 'imagenet' or 'none'"
        )
    if not os.access(path, os.R_OK):
        raise WeightsError(f"model.weights={text!r}: the file is not readable; fix its permissions")
    if not path.name.lower().endswith(_WEIGHT_SUFFIXES):
        raise WeightsError(
            f"model.weights={text!r}: not a Keras weights file; use a file ending in "
            f"{' or '.join(_WEIGHT_SUFFIXES)}"
        )
    return str(path)


def _missing_imagenet_message(alpha: float, image_size: int, err: BaseException) -> str:
    path = imagenet_cache_path(alpha, image_size)
    return (
        f"model.weights=imagenet: the ImageNet weights could not be downloaded ({err}). "
        f"Without network access, download {imagenet_url(alpha, image_size)} elsewhere and "
        f"place it at {path} (set KERAS_HOME to use another cache folder), or set "
        "model.weights: /path/to/file.h5 in the plan to load a local copy "
        "(or model.weights: none for a random-features control)"
    )


def load_backbone(
    strategy: StrategySpec,
    settings: ModelSettings,
    input_shape: Sequence[int],
) -> keras.Model:
    """Build Keras's MobileNetV2 (no top, average pooling) with the right weights.

    Random initial weights come from Keras's global seed; call
    ``keras.utils.set_random_seed`` first (``build_model`` does).

    Parameters
    ----------
    strategy : StrategySpec
        ``scratch`` always starts from random weights; other strategies use
        ``settings.weights``.
    settings : ModelSettings
        ``weights`` and ``alpha`` are read.
    input_shape : sequence of int
        ``(rows, cols, 3)``.

    Returns
    -------
    keras.Model
        Named ``"mobilenetv2"``; its output is the pooled
        ``(batch, 1280)`` vector (``1280 * alpha`` rounded for alpha > 1).

    Raises
    ------
    WeightsError
        If the weights cannot be downloaded, found, read, or do not match the
        architecture (e.g. a file saved with another ``alpha``).
    """
    import keras

    rows = int(input_shape[0])
    weights: str | None = None
    if needs_pretrained(strategy):
        weights = resolve_backbone_weights(settings.weights, alpha=settings.alpha, image_size=rows)
        if weights is None:
            # Once per strategy and process: every fold of the strategy would say the same.
            log = logger.debug if strategy.label in _WARNED_RANDOM else logger.warning
            _WARNED_RANDOM.add(strategy.label)
            log(
                "strategy %s with model.weights=none: the backbone starts from seeded random "
                "weights - a random-features control, not ImageNet",
                strategy.label,
            )
    elif str(settings.weights).strip().lower() != "none":
        logger.debug("strategy %s trains from scratch; model.weights is ignored", strategy.label)

    def build(w: str | None) -> keras.Model:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = keras.applications.MobileNetV2(
                input_shape=tuple(input_shape),
                alpha=settings.alpha,
                include_top=False,
                weights=w,
                pooling="avg",
                name=BACKBONE_NAME,
            )
        for item in caught:
            logger.debug("keras: %s", item.message)
        return model

    if weights == "imagenet":
        try:
            return build("imagenet")
        # Keras's get_file raises a bare Exception on a failed download.
        except Exception as err:
            raise WeightsError(_missing_imagenet_message(settings.alpha, rows, err)) from err
    try:
        return build(weights)
    except ValueError as err:
        raise WeightsError(
            f"model.weights={settings.weights!r}: the weights in {weights} do not fit "
            f"MobileNetV2(alpha={settings.alpha}, include_top=False) - shapes differ "
            f"({str(err).splitlines()[0]}). Use a file saved from a MobileNetV2 without its "
            "top and with the plan's model.alpha, or change model.alpha to the file's"
        ) from err
    except OSError as err:
        raise WeightsError(
            f"model.weights={settings.weights!r}: {weights} could not be read as an HDF5 "
            f"weights file ({err}); replace it with an intact .h5/.weights.h5 file"
        ) from err
