"""The run folder of ``biomark extract``: one typed object for its paths and files.

Layout (``<output_dir>/<plan.name>/``)::

    run.json                  the plan, its hash, dataset dir + manifest hash, classes,
                              fold summary, seed, environment (versions, Keras backend,
                              devices), one entry per finished job, timings
                              (:class:`~biomark.features.run_info.RunInfo`)
    folds.csv                 image_id, fold, label, patient_id: computed once per run,
                              shared by every strategy
    summary.md                one page: the paper's Tables 1/4/5 for every strategy
                              (mean ± std over folds) and pooled confusion matrices
    .cluster/attempts/        one small record per attempt at a job (worker, host, pid)
    .cluster/locks/           one lock file per job, held while a process on this machine
                              runs it (:func:`biomark.pipelines.attempt.job_lock`)
    <strategy>/               scratch, frozen, finetune_3, ...
        summary.json          pooled_metrics over the folds (with bootstrap 95% CIs)
        metrics.csv           one row per fold: metrics, epochs
        timings.csv           one row per fold: seconds, images/second, resumed epochs
        confusion.csv         pooled n x n confusion matrix, rows predicted, columns actual
        confusion_2class.csv  pooled positive-class-vs-rest matrix, same orientation
        fold_XX/
            model.keras       trained model
            history.csv       one row per epoch
            split.csv         image_id, role (train / val / test)
            features.parquet  test-fold images: metadata, prob_<class>, f0000...
            features_all.parquet  (dump.features: all) every image, + in_test_fold
            blocks.npz        (dump.blocks) pooled output of every MobileNetV2 block
            metrics.json      what was trained: fold_metrics, epochs, early stopping,
                              fit check (identical for a resumed and an uninterrupted fold)
            timings.json      how it ran: seconds, images/second, resume, pipeline
            checkpoint.npz    while training: the state to resume from exactly
            done.json         written last: the fold is complete

:class:`RunFolder` (like :class:`biomark.data.dataset.DatasetPaths` for a
dataset) is the one reader and writer of these files: every other module asks
it for a path, a table or the typed ``run.json``. The feature tables' format is
:mod:`biomark.features.deep`'s. This module imports no deep-learning library.

Examples
--------
>>> run = RunFolder("runs/quick")
>>> run.fold_dir("finetune:3", 2).as_posix()
'runs/quick/finetune_3/fold_02'
>>> run.name
'quick'
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from biomark.config import StrategySpec
from biomark.exceptions import ConfigError, RunError
from biomark.features import deep
from biomark.features.run_info import RunInfo, json_ready
from biomark.io.atomic import write_csv_atomic, write_json_atomic, write_text_atomic

__all__ = [
    "ATTEMPTS_DIR",
    "DONE_FILE",
    "FOLDS_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_FILE",
    "STRATEGY_SUMMARY",
    "SUMMARY_MD",
    "TIMINGS_FILE",
    "RunFolder",
    "fold_table_summary",
]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
FOLDS_FILE = "folds.csv"


def _json_object(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in ``path``, or None and why not (unreadable, truncated, not an object)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError too
        return None, f"{type(err).__name__}: {err}"
    return (record, "") if isinstance(record, dict) else (None, "not a JSON object")


#: What to do about an unreadable run.json. Deleting it is safe only when nothing changed: without
#: it `biomark extract` cannot tell that the plan or the data differ from those the folds saw.
_RUN_JSON_WAY_BACK = (
    "restore it from a copy; if the plan and the data are unchanged since the folds trained, "
    "delete it and re-run `biomark extract` with the same plan, which rewrites it and keeps the "
    "finished folds; otherwise start over with `biomark extract --force`"
)
SUMMARY_MD = "summary.md"
STRATEGY_SUMMARY = "summary.json"
METRICS_FILE = "metrics.json"
TIMINGS_FILE = "timings.json"
DONE_FILE = "done.json"
MODEL_FILE = "model.keras"
#: Per-attempt records of jobs, relative to the run folder.
ATTEMPTS_DIR = Path(".cluster") / "attempts"
#: Per-job lock files of processes on one machine, relative to the run folder.
LOCKS_DIR = Path(".cluster") / "locks"

_STRATEGY_TABLES = ("metrics.csv", "timings.csv")


def fold_table_summary(folds: pd.DataFrame, classes: Sequence[str]) -> dict[str, Any]:
    """Images per fold, overall and per class (for ``run.json``'s ``folds``).

    Parameters
    ----------
    folds : DataFrame with columns fold, label
    classes : sequence of str

    Returns
    -------
    dict
        ``k``, ``sizes`` (images per fold), ``per_class`` (class -> images per fold).

    Examples
    --------
    >>> folds = pd.DataFrame({"fold": [0, 1, 0, 1, 1],
    ...                       "label": ["COVID-19", "Normal", "Normal", "Normal", "COVID-19"]})
    >>> fold_table_summary(folds, ["COVID-19", "Normal"])
    {'k': 2, 'sizes': [2, 3], 'per_class': {'COVID-19': [1, 1], 'Normal': [1, 2]}}
    """
    k = int(folds["fold"].max()) + 1
    counts = pd.crosstab(folds["label"], folds["fold"]).reindex(
        index=list(classes), columns=range(k), fill_value=0
    )
    return {
        "k": k,
        "sizes": folds["fold"].value_counts().reindex(range(k), fill_value=0).astype(int).tolist(),
        "per_class": {c: counts.loc[c].astype(int).tolist() for c in classes},
    }


def _label(name: str) -> str:
    return StrategySpec.parse(name).label


@dataclass(frozen=True)
class RunFolder:
    """Paths and files of one run folder (see the module notes for the layout).

    Parameters
    ----------
    root : path
        ``<output_dir>/<plan.name>``.

    Notes
    -----
    Strategies may be given as labels (``finetune:3``) or folder names
    (``finetune_3``). Nothing is read when the object is made.

    Examples
    --------
    >>> import tempfile
    >>> folds = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "fold": [0, 1, 0, 1],
    ...                       "label": ["COVID-19", "Normal", "Normal", "COVID-19"],
    ...                       "patient_id": ["007", "008", "009", "010"]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     run = RunFolder(Path(tmp) / "quick")
    ...     _ = run.write_folds(folds)
    ...     run.name, run.has_info(), run.fold_ids(), run.read_folds()["patient_id"].tolist()
    ('quick', False, (0, 1), ['007', '008', '009', '010'])
    >>> run.fold_key("finetune:3", 2)
    'finetune_3/fold_02'
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # ----------------------------------------------------------------- paths
    @property
    def name(self) -> str:
        """The folder's name (names the report folder)."""
        return self.root.resolve().name

    @property
    def run_json(self) -> Path:
        """``run.json``."""
        return self.root / RUN_FILE

    @property
    def folds_csv(self) -> Path:
        """``folds.csv``."""
        return self.root / FOLDS_FILE

    @property
    def summary_md(self) -> Path:
        """``summary.md``."""
        return self.root / SUMMARY_MD

    @property
    def attempts_dir(self) -> Path:
        """``.cluster/attempts``: one record per attempt at a job."""
        return self.root / ATTEMPTS_DIR

    def strategy_dir(self, strategy: str) -> Path:
        """``<run>/<strategy folder>``."""
        return deep.strategy_dir(self.root, strategy)

    def fold_dir(self, strategy: str, fold: int) -> Path:
        """``<run>/<strategy folder>/fold_XX``: everything one (strategy, fold) job writes."""
        return deep.fold_dir(self.root, strategy, fold)

    def fold_key(self, strategy: str, fold: int) -> str:
        """``"<strategy folder>/fold_XX"``: the job's key in ``run.json`` and its path relative to
        the run."""
        return self.fold_dir(strategy, fold).relative_to(self.root).as_posix()

    def model_path(self, strategy: str, fold: int) -> Path | None:
        """``model.keras`` of a fold when it exists, else None."""
        path = self.fold_dir(strategy, fold) / MODEL_FILE
        return path if path.is_file() else None

    # -------------------------------------------------------------- run.json
    def has_info(self) -> bool:
        """Whether the folder has a ``run.json``."""
        return self.run_json.is_file()

    def read_info(self, *, missing_ok: bool = False) -> RunInfo:
        """Read ``run.json`` as a :class:`~biomark.features.run_info.RunInfo`.

        Parameters
        ----------
        missing_ok : bool, default False
            Return an empty RunInfo (every field at its default) when the file is absent.

        Raises
        ------
        RunError
            No ``run.json`` (unless ``missing_ok``), or one that is not valid JSON.
        """
        path = self.run_json
        if not path.is_file():
            if missing_ok:
                return RunInfo(source=str(path))
            raise RunError(
                f"{path}: not a run folder (no {RUN_FILE}); start the run with `biomark extract "
                "--plan ...`"
            )
        data, why = _json_object(path)
        if data is None:
            raise RunError(f"{path}: unreadable as a run description ({why}); {_RUN_JSON_WAY_BACK}")
        return RunInfo.from_json(data, source=str(path))

    def write_info(self, info: RunInfo) -> Path:
        """Write ``run.json`` atomically."""
        return write_json_atomic(self.run_json, info.to_json())

    def update_info(self, change: Callable[[RunInfo], RunInfo]) -> RunInfo:
        """Read ``run.json``, apply ``change``, write the result atomically and return it."""
        info = change(self.read_info())
        self.write_info(info)
        return info

    # ------------------------------------------------------------- folds.csv
    def write_folds(self, folds: pd.DataFrame) -> Path:
        """Write ``folds.csv`` (image_id, fold, label, patient_id) atomically."""
        return write_csv_atomic(self.folds_csv, folds)

    def read_folds(self) -> pd.DataFrame:
        """Read ``folds.csv`` with text identifiers.

        Raises
        ------
        RunError
            If the file is missing, cannot be read, or lacks the ``image_id``
            or integer ``fold`` column (truncated or not biomark's).
        """
        if not self.folds_csv.is_file():
            raise RunError(
                f"{self.folds_csv}: fold table missing; re-run `biomark extract` to recreate it"
            )
        try:
            folds = pd.read_csv(
                self.folds_csv,
                dtype={"image_id": str, "patient_id": str, "label": str},
                keep_default_na=False,
            )
        except (OSError, ValueError) as err:  # pandas' ParserError and EmptyDataError too
            raise RunError(self._folds_unreadable(f"{type(err).__name__}: {err}")) from err
        missing = [c for c in ("image_id", "fold") if c not in folds.columns]
        if missing:
            raise RunError(self._folds_unreadable(f"no {' or '.join(missing)} column"))
        if not pd.api.types.is_integer_dtype(folds["fold"]):
            raise RunError(self._folds_unreadable("a fold that is not a whole number"))
        return folds

    def _folds_unreadable(self, detail: str) -> str:
        return (
            f"{self.folds_csv}: the run's fold table cannot be read ({detail}); it is truncated "
            "or corrupt. Copy the run folder again, or delete the file and re-run `biomark "
            "extract` with the same plan: it computes the same folds from the plan's seed and "
            "keeps the finished ones"
        )

    def fold_ids(self) -> tuple[int, ...] | None:
        """The folds ``folds.csv`` defines, sorted (None when the run has no ``folds.csv``).

        Raises
        ------
        RunError
            A ``folds.csv`` that cannot be read (truncated or corrupt).
        """
        if not self.folds_csv.is_file():
            return None
        try:
            return tuple(
                sorted(
                    int(f) for f in pd.read_csv(self.folds_csv, usecols=["fold"])["fold"].unique()
                )
            )
        except (
            OSError,
            ValueError,
        ) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
            raise RunError(self._folds_unreadable(f"{type(err).__name__}: {err}")) from err

    # -------------------------------------------------------------- strategies
    def strategies_found(self, info: RunInfo | None = None) -> tuple[str, ...]:
        """Strategy labels of the plan (unknown names skipped with a warning), then folders with
        features.

        Parameters
        ----------
        info : RunInfo, optional
            The run's ``run.json`` (default: read it; an absent one lists the folders only).
        """
        info = info if info is not None else self.read_info(missing_ok=True)
        labels: list[str] = []
        for name in info.plan_strategies:
            try:
                labels.append(_label(name))
            except ConfigError:
                logger.warning(
                    "%s: unknown strategy %r in the plan is ignored", self.run_json, name
                )
        if self.root.is_dir():
            for child in sorted(self.root.iterdir()):
                if child.is_dir() and any(child.glob("fold_*/features.parquet")):
                    try:
                        label = _label(child.name)
                    except ConfigError:
                        continue
                    if label not in labels:
                        labels.append(label)
        return tuple(labels)

    def strategy_folders(self) -> list[str]:
        """Strategy folders (``finetune_3``) that hold out-of-fold features, sorted.

        Raises
        ------
        RunError
            The folder does not exist or holds no feature table.
        """
        if not self.root.is_dir():
            raise RunError(
                f"{self.root}: run folder not found; give the folder `biomark extract` wrote"
            )
        found = sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and self.folds_with(p.name)
        )
        if not found:
            raise RunError(
                f"{self.root}: no <strategy>/fold_XX/features.parquet found; run `biomark extract` "
                "first"
            )
        return found

    def expected_folds(self, info: RunInfo, strategies: Sequence[str] = ()) -> tuple[int, ...]:
        """The folds every strategy must have: those of ``folds.csv``, else ``info.k`` of them.

        Without ``folds.csv`` the folds are numbered from 0, or from 1 when the
        ``strategies``' folders start at 1; without either, none are expected.
        """
        listed = self.fold_ids()
        if listed is not None:
            return listed
        if info.k is None:
            return ()
        found = {f for s in strategies for f in self.folds_with(s)}
        start = 0 if (not found or 0 in found) else 1
        return tuple(range(start, start + info.k))

    def folds_with(self, strategy: str, filename: str = "features.parquet") -> list[int]:
        """Folds of ``strategy`` whose ``filename`` exists, sorted."""
        return deep.list_folds(self.root, strategy, filename)

    def is_done(self, strategy: str, fold: int) -> bool:
        """Whether the (strategy, fold) job finished (its ``done.json`` exists)."""
        return (self.fold_dir(strategy, fold) / DONE_FILE).is_file()

    def finished_folds(self, strategy: str) -> list[int]:
        """Folds with a feature table and ``done.json``, sorted."""
        return [f for f in self.folds_with(strategy) if self.is_done(strategy, f)]

    # -------------------------------------------------------------- one fold
    def clear_fold(self, strategy: str, fold: int, *, keep_checkpoint: bool = True) -> None:
        """Empty a fold folder for a redo.

        With ``keep_checkpoint`` the training checkpoint (and the history it
        extends) stays, so the redo continues from its last finished epoch;
        without it the folder is removed.
        """
        from biomark.train.checkpoint import CHECKPOINT_FILE  # the file name only: no Keras

        path = self.fold_dir(strategy, fold)
        if not path.exists():
            return
        if not keep_checkpoint:
            shutil.rmtree(path)
            return
        keep = {CHECKPOINT_FILE, "history.csv"} if (path / CHECKPOINT_FILE).is_file() else set()
        for child in path.iterdir():
            if child.name in keep:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def write_split(self, strategy: str, fold: int, split: pd.DataFrame) -> Path:
        """Write a fold's ``split.csv`` (image_id, role) atomically."""
        return write_csv_atomic(self.fold_dir(strategy, fold) / "split.csv", split)

    def write_features(
        self,
        strategy: str,
        fold: int,
        meta: pd.DataFrame,
        features: np.ndarray,
        probabilities: np.ndarray,
        classes: Sequence[str],
        *,
        kind: Literal["oof", "all"] = "oof",
    ) -> Path:
        """Write a fold's ``features.parquet`` (``kind="all"``: ``features_all.parquet``); see
        :func:`deep.write_features`."""
        name = "features.parquet" if kind == "oof" else "features_all.parquet"
        return deep.write_features(
            self.fold_dir(strategy, fold) / name, meta, features, probabilities, list(classes)
        )

    def write_blocks(
        self, strategy: str, fold: int, image_ids: np.ndarray, blocks: dict[str, np.ndarray]
    ) -> Path:
        """Write a fold's ``blocks.npz``; see :func:`deep.write_block_features`."""
        return deep.write_block_features(
            self.fold_dir(strategy, fold) / "blocks.npz", image_ids, blocks
        )

    def features(
        self, strategy: str, fold: int | None = None, *, kind: Literal["oof", "all"] = "oof"
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """A strategy's feature table (one fold, or all in fold order); see
        :func:`deep.load_features`."""
        return deep.load_features(self.root, strategy, fold, kind=kind)

    def reference_features(
        self, strategy: str, folds: Sequence[int]
    ) -> tuple[dict[int, np.ndarray], pd.Index]:
        """Every fold's ``features_all.parquet`` on the images all of ``folds`` dumped.

        Each fold's model embedded every image (``dump: {features: all}``), so
        these are the common reference on which units are matched across the
        folds' networks (:func:`biomark.analysis.alignment.align_folds`).

        Parameters
        ----------
        strategy : str
        folds : sequence of int

        Returns
        -------
        reference : dict of int to ndarray of shape (n_images, n_features)
            Per fold, rows in the same order in every fold; empty when some
            fold has no ``features_all.parquet`` or fewer than 3 images are
            shared.
        image_ids : Index
            The images of those rows.
        """
        none = pd.Index([], dtype=object)
        if not folds or set(folds) - set(self.folds_with(strategy, "features_all.parquet")):
            return {}, none
        parts = {f: self.features(strategy, f, kind="all") for f in folds}
        common: pd.Index | None = None
        for m, _ in parts.values():
            ids = pd.Index(m["image_id"].astype(str))
            common = ids if common is None else common.intersection(ids, sort=False)
        if common is None or len(common) < 3:
            return {}, none
        out = {}
        for f, (m, x) in parts.items():
            out[f] = x[pd.Index(m["image_id"].astype(str)).get_indexer(common)]
        return out, common

    def blocks(self, strategy: str, fold: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """A fold's per-block outputs; see :func:`deep.load_block_features`."""
        return deep.load_block_features(self.root, strategy, fold)

    def has_blocks(self, strategy: str, fold: int) -> bool:
        """Whether the fold dumped ``blocks.npz``."""
        return (self.fold_dir(strategy, fold) / "blocks.npz").is_file()

    def write_fold_results(
        self,
        strategy: str,
        fold: int,
        record: dict[str, Any],
        timings: dict[str, Any],
        done: dict[str, Any],
    ) -> None:
        """Write ``metrics.json``, ``timings.json`` and, last, ``done.json`` (which lists the fold's
        files)."""
        from biomark.train.checkpoint import CHECKPOINT_FILE

        out = self.fold_dir(strategy, fold)
        write_json_atomic(out / METRICS_FILE, json_ready(record))
        write_json_atomic(out / TIMINGS_FILE, json_ready(timings))
        files = sorted(
            p.name
            for p in out.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name != CHECKPOINT_FILE
        )
        write_json_atomic(out / DONE_FILE, {**done, "files": files})
        (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # the fold's outputs are safe now

    def fold_metrics(self, strategy: str, fold: int) -> dict[str, Any] | None:
        """A fold's ``metrics.json`` (None when absent).

        Raises
        ------
        RunError
            If the file cannot be read or holds no JSON object.
        """
        path = self.fold_dir(strategy, fold) / METRICS_FILE
        return self._fold_json(path) if path.is_file() else None

    def _fold_json(self, path: Path) -> dict[str, Any]:
        """A fold's JSON record; a RunError naming it, and how to redo the fold alone, when it is
        truncated or not a record."""
        record, why = _json_object(path)
        if record is None:
            raise RunError(
                f"{path}: cannot be read ({why}); it is truncated or corrupt. "
                f"{deep.redo_fold(path.parent)}"
            )
        return record

    def backbone_seeds(
        self, strategy: str, folds: Sequence[int] | None = None
    ) -> dict[int | None, list[int]]:
        """The folds of a random-features control grouped by the ``backbone_seed`` their
        ``metrics.json`` records (None: no seed recorded, a backbone of the fold's own, as
        biomark drew them before its controls shared one).

        ``folds`` defaults to the folds with a ``metrics.json``. Folds whose ``metrics.json``
        is absent, unreadable or records a seed that is no number are left out
        (the classification tables report them). A run whose controls' folds
        all record the run's one seed gives one group, the same seed for
        ``frozen`` and every ``finetune:N``.
        """
        by_seed: dict[int | None, list[int]] = {}
        for f in self.folds_with(strategy, METRICS_FILE) if folds is None else folds:
            try:
                record = self.fold_metrics(strategy, f)
                if not isinstance(record, dict):  # no metrics.json, or not a record
                    continue
                seed = record.get("backbone_seed")
                key = None if seed is None else int(seed)
            except (OSError, ValueError, TypeError, RunError):
                continue
            by_seed.setdefault(key, []).append(f)
        return by_seed

    def one_random_backbone(self, strategies: Sequence[str]) -> bool:
        """Whether the folds of these random-features controls all record one backbone seed.

        True as well when no fold records anything readable (nothing to tell
        otherwise: biomark draws one backbone per run); False when a fold
        records no seed (a backbone of its own) or the folds record several
        (one per strategy, as biomark drew them before).
        """
        seeds: set[int | None] = set()
        for strategy in strategies:
            seeds.update(self.backbone_seeds(strategy))
        return len(seeds) <= 1 and None not in seeds

    def fold_record(self, strategy: str, fold: int) -> dict[str, Any]:
        """A finished fold's ``metrics.json`` merged with its ``timings.json`` (when present).

        The merged record has the keys of both files: ``strategy``, ``fold``,
        ``training``, ``metrics``, ... and ``timings``, ``images_per_second``,
        ``execution``.

        Raises
        ------
        RunError
            The fold has no ``metrics.json``, or it or ``timings.json`` cannot be
            read.
        """
        record = self.fold_metrics(strategy, fold)
        if record is None:
            raise RunError(
                f"{self.fold_dir(strategy, fold)}: no {METRICS_FILE}; re-run `biomark extract` to "
                "finish it"
            )
        timings = self.fold_dir(strategy, fold) / TIMINGS_FILE
        if timings.is_file():
            record.update(self._fold_json(timings))
        return record

    # ------------------------------------------------------- strategy files
    def strategy_summary(self, strategy: str) -> dict[str, Any] | None:
        """A strategy's ``summary.json`` (None until every fold finished and the run summarised
        it).

        Raises
        ------
        RunError
            If the file cannot be read or holds no JSON object (truncated or
            not biomark's).
        """
        path = self.strategy_dir(strategy) / STRATEGY_SUMMARY
        if not path.is_file():
            return None
        summary, why = _json_object(path)
        if summary is None:
            raise RunError(
                f"{path}: the strategy's summary cannot be read ({why}); it is truncated or "
                "corrupt. Re-run `biomark extract` with the same plan: it rewrites the summary "
                "from the finished folds without training them again"
            )
        return summary

    def strategy_table(
        self, strategy: str, name: Literal["metrics.csv", "timings.csv"]
    ) -> pd.DataFrame | None:
        """A strategy's ``metrics.csv`` or ``timings.csv`` (None when absent)."""
        path = self.strategy_dir(strategy) / name
        return pd.read_csv(path) if path.is_file() else None

    def write_strategy_files(
        self,
        strategy: str,
        summary: dict[str, Any],
        tables: dict[str, pd.DataFrame],
        confusions: dict[str, pd.DataFrame],
    ) -> Path:
        """Write a strategy's ``summary.json``, its per-fold tables and its confusion CSVs; return
        the folder.

        Parameters
        ----------
        strategy : str
        summary : dict
            Content of ``summary.json``.
        tables : dict of str to DataFrame
            ``metrics.csv`` and ``timings.csv`` (no index).
        confusions : dict of str to DataFrame
            ``confusion.csv`` and ``confusion_2class.csv`` (with their index).
        """
        base = self.strategy_dir(strategy)
        write_json_atomic(base / STRATEGY_SUMMARY, json_ready(summary))
        for name, frame in tables.items():
            if name not in _STRATEGY_TABLES:
                raise ValueError(f"{name}: not a strategy table ({', '.join(_STRATEGY_TABLES)})")
            write_csv_atomic(base / name, frame)
        for name, frame in confusions.items():
            write_csv_atomic(base / name, frame, index=True)
        return base

    def write_summary_md(self, text: str) -> Path:
        """Write ``summary.md`` atomically."""
        return write_text_atomic(self.summary_md, text)

    def attempts(self) -> list[dict[str, Any]]:
        """The attempt records of the run's jobs, oldest first (by their ``started`` time).

        Not by file name: it holds the process id, and ``"10123" < "9980"``, so a
        rerun in a process with a longer id would sort before the attempt it replaced.
        """
        records = [
            json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(self.attempts_dir.glob("*.json"))
        ]
        return sorted(records, key=lambda r: str(r.get("started", "")))
