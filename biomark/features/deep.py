"""Deep (GAP) feature dumps of a run folder: schema, writer and loader.

A run folder written by ``biomark extract`` holds, per strategy and fold::

    <run>/<strategy>/fold_XX/features.parquet      out-of-fold GAP vectors
    <run>/<strategy>/fold_XX/features_all.parquet  (dump: all) every image
    <run>/<strategy>/fold_XX/blocks.npz            (dump.blocks) per-block pooled outputs

``<strategy>`` is the strategy's folder name (``scratch``, ``frozen``,
``finetune_3``); functions here accept either spelling (``finetune:3``).

Each feature table has the metadata columns :data:`META_COLUMNS`, one
``prob_<class>`` column per class, then the feature columns ``f0000``,
``f0001``, ... (1280 for MobileNetV2).

This module reads and writes files only; it imports no deep-learning library.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from biomark.exceptions import RunError
from biomark.io.atomic import atomic_path, write_parquet_atomic

__all__ = [
    "META_COLUMNS",
    "check_same_width",
    "feature_columns",
    "fold_dir",
    "list_folds",
    "load_block_features",
    "load_features",
    "strategy_dir",
    "write_block_features",
    "write_features",
]

#: Metadata columns of every feature table, in this order.
META_COLUMNS: tuple[str, ...] = (
    "image_id",
    "label",
    "patient_id",
    "source",
    "fold",
    "strategy",
    "pred",
)

_FEATURE_RE = re.compile(r"f\d{4,}")


def feature_columns(n_features: int) -> list[str]:
    """Column names ``f0000 ... f{n-1}`` of the feature block.

    Examples
    --------
    >>> feature_columns(3)
    ['f0000', 'f0001', 'f0002']
    """
    return [f"f{j:04d}" for j in range(n_features)]


def strategy_dir(run_dir: str | Path, strategy: str) -> Path:
    """The folder of ``strategy`` (``finetune:3`` or ``finetune_3``) in a run."""
    return Path(run_dir) / strategy.replace(":", "_")


def fold_dir(run_dir: str | Path, strategy: str, fold: int) -> Path:
    """The folder of one (strategy, fold) job: ``<run>/<strategy>/fold_XX``.

    Examples
    --------
    >>> fold_dir("runs/quick", "finetune:3", 2).as_posix()
    'runs/quick/finetune_3/fold_02'
    """
    return strategy_dir(run_dir, strategy) / f"fold_{fold:02d}"


def list_folds(run_dir: str | Path, strategy: str, filename: str = "features.parquet") -> list[int]:
    """Folds of ``strategy`` whose ``filename`` exists, sorted."""
    base = strategy_dir(run_dir, strategy)
    folds = []
    for path in base.glob("fold_*"):
        match = re.fullmatch(r"fold_(\d+)", path.name)
        if match and (path / filename).is_file():
            folds.append(int(match.group(1)))
    return sorted(folds)


def write_features(
    path: str | Path,
    meta: pd.DataFrame,
    features: np.ndarray,
    probabilities: np.ndarray | None = None,
    classes: tuple[str, ...] | list[str] = (),
) -> Path:
    """Write one feature table atomically as Parquet.

    Parameters
    ----------
    path : str or Path
        Destination ``.parquet`` file.
    meta : DataFrame of shape (n_images, ...)
        Must hold :data:`META_COLUMNS`; extra columns are kept.
    features : ndarray of shape (n_images, n_features)
        GAP vectors, rows aligned with ``meta``.
    probabilities : ndarray of shape (n_images, n_classes), optional
        Softmax outputs, written as ``prob_<class>`` columns.
    classes : sequence of str
        Class names for the probability columns.

    Returns
    -------
    Path
    """
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"feature metadata lacks column(s) {missing}")
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != len(meta):
        raise ValueError(
            f"features of shape {features.shape} do not match {len(meta)} metadata rows"
        )
    parts = [meta.reset_index(drop=True)]
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        parts.append(pd.DataFrame(probabilities, columns=[f"prob_{c}" for c in classes]))
    parts.append(pd.DataFrame(features, columns=feature_columns(features.shape[1])))
    return write_parquet_atomic(path, pd.concat(parts, axis=1))


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    columns = [c for c in frame.columns if _FEATURE_RE.fullmatch(str(c))]
    meta = frame.drop(columns=columns)
    return meta.reset_index(drop=True), frame[columns].to_numpy(dtype=np.float32)


def load_features(
    run_dir: str | Path,
    strategy: str,
    fold: int | None = None,
    *,
    kind: Literal["oof", "all"] = "oof",
) -> tuple[pd.DataFrame, np.ndarray]:
    """Load GAP features of one strategy from a run folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder written by ``biomark extract``.
    strategy : str
        ``scratch``, ``frozen``, ``finetune:N`` (or ``finetune_N``).
    fold : int, optional
        One fold; by default all folds, concatenated in fold order (for
        ``oof`` this is every image exactly once).
    kind : {"oof", "all"}, default "oof"
        ``oof``: each fold's test images; ``all``: every image through the
        fold's model (needs ``dump: features: all``).

    Returns
    -------
    meta : DataFrame of shape (n_images, n_meta)
        :data:`META_COLUMNS` and ``prob_<class>`` columns.
    X : ndarray of shape (n_images, n_features), float32

    Raises
    ------
    RunError
        If the strategy or fold has no feature table, or a table is truncated
        or corrupt (the message names the file and the fold).

    Examples
    --------
    Two folds of three test images each, with 1280 features:

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> with tempfile.TemporaryDirectory() as run:
    ...     for fold in (0, 1):
    ...         meta = pd.DataFrame({
    ...             "image_id": [f"img{fold}{j}" for j in range(3)],
    ...             "label": ["COVID-19", "Normal", "Normal"],
    ...             "patient_id": [f"p{fold}{j}" for j in range(3)],
    ...             "source": "phantom", "fold": fold, "strategy": "finetune:3",
    ...             "pred": ["COVID-19", "Normal", "COVID-19"],
    ...         })
    ...         path = fold_dir(run, "finetune:3", fold) / "features.parquet"
    ...         _ = write_features(path, meta, rng.normal(size=(3, 1280)),
    ...                            rng.dirichlet([1, 1], size=3), ["COVID-19", "Normal"])
    ...     meta, X = load_features(run, "finetune_3")  # every fold, in fold order
    ...     meta_1, X_1 = load_features(run, "finetune:3", fold=1)
    >>> X.shape, X.dtype.name, meta["fold"].tolist()
    ((6, 1280), 'float32', [0, 0, 0, 1, 1, 1])
    >>> meta.columns.tolist()[-3:], meta_1["image_id"].tolist(), X_1.shape
    (['pred', 'prob_COVID-19', 'prob_Normal'], ['img10', 'img11', 'img12'], (3, 1280))
    """
    filename = "features.parquet" if kind == "oof" else "features_all.parquet"
    folds = list_folds(run_dir, strategy, filename)
    if not folds:
        raise RunError(
            f"{strategy_dir(run_dir, strategy)}: no {filename} found for strategy "
            f"{strategy!r}; run `biomark extract` with this strategy in the plan"
            + (" and `dump: {features: all}`" if kind == "all" else "")
        )
    if fold is not None:
        if fold not in folds:
            raise RunError(
                f"{fold_dir(run_dir, strategy, fold)}: fold {fold} of strategy {strategy!r} "
                f"has no {filename} (finished folds: {folds}); re-run `biomark extract` to finish "
                "it"
            )
        folds = [fold]
    frames = [
        read_fold_table(fold_dir(run_dir, strategy, f) / filename, strategy, f) for f in folds
    ]
    widths = {
        f: _feature_width(frame, fold_dir(run_dir, strategy, f) / filename, strategy, f)
        for f, frame in zip(folds, frames, strict=True)
    }
    check_same_width(widths, run_dir, strategy, filename)
    return _split(pd.concat(frames, ignore_index=True))


def check_same_width(
    widths: Mapping[int, int],
    run_dir: str | Path,
    strategy: str,
    filename: str = "features.parquet",
) -> None:
    """Every fold of a strategy must hold as many features as the others: one network, one width.

    Raises
    ------
    RunError
        Naming each fold's width (a fold re-run after the plan's model changed).
    """
    if len(set(widths.values())) > 1:
        raise RunError(
            f"{strategy_dir(run_dir, strategy)}: the folds' {filename} of strategy {strategy!r} "
            "hold different numbers of features "
            f"({', '.join(f'fold {f}: {d}' for f, d in widths.items())}), so they come from "
            "different networks (a fold re-run after the plan's model changed?). Re-run `biomark "
            f"extract --force --strategies {strategy}` so that every fold uses the same model"
        )


def redo_fold(folder: Path) -> str:
    """What to do about a damaged file of a finished fold: ``biomark extract`` redoes a fold whose
    folder is gone, and only that fold."""
    return (
        f"Delete the fold folder {folder} and re-run `biomark extract` with the same plan: it "
        "redoes only that fold"
    )


def _unreadable(path: Path, strategy: str, fold: int, what: str, err: BaseException) -> RunError:
    """The error for a fold file that exists but cannot be read: which file, which fold, how to redo
    it."""
    return RunError(
        f"{path}: the {what} of strategy {strategy!r} fold {fold} cannot be read "
        f"({type(err).__name__}: {err}); the file is truncated or corrupt (an interrupted copy or "
        f"a full disk?). {redo_fold(path.parent)}"
    )


def _feature_width(frame: pd.DataFrame, path: Path, strategy: str, fold: int) -> int:
    """The number of GAP features of one fold's table, checked to be ``f0000`` ... ``f<d-1>`` in
    order.

    ``biomark extract`` always writes them so; anything else (columns dropped
    or renamed by hand, another tool's table) would shift every unit's identity.
    """
    columns = [str(c) for c in frame.columns if _FEATURE_RE.fullmatch(str(c))]
    expected = [f"f{j:04d}" for j in range(len(columns))]
    if columns != expected:
        missing = sorted(set(expected) - set(columns))
        raise RunError(
            f"{path}: the feature columns of strategy {strategy!r} fold {fold} are not f0000 ... "
            f"f{len(columns) - 1:04d} in order ({len(columns)} columns"
            + (
                f"; missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
                if missing
                else ""
            )
            + f"), so this is not the table `biomark extract` wrote. {redo_fold(path.parent)}"
        )
    return len(columns)


def read_fold_table(
    path: Path, strategy: str, fold: int, columns: list[str] | None = None
) -> pd.DataFrame:
    """A fold's feature table (``columns`` of it, default all).

    Raises
    ------
    RunError
        If it cannot be read or lacks one of ``columns``: naming the file and
        how to redo the fold (:func:`redo_fold`).
    """
    try:
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid (also a missing column)
        raise _unreadable(path, strategy, fold, "feature table", err) from err


def write_block_features(
    path: str | Path, image_ids: list[str] | np.ndarray, blocks: dict[str, np.ndarray]
) -> Path:
    """Write per-block pooled outputs (rows aligned with ``image_ids``) as ``.npz``."""
    arrays: dict[str, Any] = {
        name: np.asarray(value, dtype=np.float32) for name, value in blocks.items()
    }
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, image_id=np.asarray(image_ids, dtype=str), **arrays)
    return Path(path)


def load_block_features(
    run_dir: str | Path, strategy: str, fold: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Load per-block pooled outputs of one (strategy, fold).

    Returns
    -------
    image_ids : ndarray of shape (n_images,), str
    blocks : dict of str to ndarray of shape (n_images, n_channels)
        Keyed by Keras block name (``block_1`` ... ``block_16``, ``Conv_1``), in network order.

    Raises
    ------
    RunError
        If the run did not dump block outputs for this fold, or the file is
        truncated or corrupt.

    Examples
    --------
    >>> import tempfile
    >>> blocks = {"block_1": np.ones((2, 16)), "Conv_1": np.zeros((2, 1280))}
    >>> with tempfile.TemporaryDirectory() as run:
    ...     path = fold_dir(run, "scratch", 0) / "blocks.npz"
    ...     _ = write_block_features(path, ["a", "b"], blocks)
    ...     image_ids, loaded = load_block_features(run, "scratch", 0)
    >>> image_ids.tolist(), {name: x.shape for name, x in loaded.items()}
    (['a', 'b'], {'block_1': (2, 16), 'Conv_1': (2, 1280)})
    """
    path = fold_dir(run_dir, strategy, fold) / "blocks.npz"
    if not path.is_file():
        raise RunError(
            f"{path}: no per-block outputs; re-run `biomark extract` with `dump: {{blocks: true}}` "
            "in the plan"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            image_ids = data["image_id"]
            blocks = {name: data[name] for name in data.files if name != "image_id"}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise _unreadable(path, strategy, fold, "per-block outputs", err) from err
    return image_ids, blocks
