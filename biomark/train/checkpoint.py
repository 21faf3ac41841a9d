"""Everything a fold needs to resume exactly: one file, written atomically after every epoch.

A fold that is killed (or whose Dask worker dies) and trained again into the
same folder must end with the same model, features and metrics as a fold that
ran without interruption. That needs more than the weights (Keras's
``BackupAndRestore`` keeps weights and the epoch, but not early stopping's
best value, patience count and best weights), so :class:`FoldCheckpoint`
stores, in ``checkpoint.npz``:

* every variable of the model (weights, BatchNormalization statistics and the
  augmentation and dropout random-generator states) and of the optimizer
  (step counter, moments);
* the best weights seen so far (when early stopping restores them);
* a JSON state: epochs finished, the early-stopping state
  (:class:`StoppingState`), the history rows, the fit check, and a
  fingerprint of everything that determines the training (strategy, seed,
  settings, which images) -- a checkpoint of other settings is never resumed.

The order of the training images in each epoch is a function of the seed and
the epoch alone (:meth:`biomark.train.loader.ImageBatches.set_epoch`), so it
needs no saving. A single file replaced with :func:`os.replace` means a kill
at any moment leaves either the previous epoch's checkpoint or the new one,
never a torn one; an unreadable or mismatching file makes the fold start
over from epoch 1, and the log says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomark.io.atomic import atomic_path

__all__ = ["CHECKPOINT_FILE", "FoldCheckpoint", "StoppingState", "fingerprint"]

logger = logging.getLogger(__name__)

#: File name of a fold's checkpoint, in the fold's folder.
CHECKPOINT_FILE = "checkpoint.npz"
_FORMAT = 1


@dataclass
class StoppingState:
    """Early stopping's memory, as Keras's ``EarlyStopping`` keeps it (``min_delta`` 0).

    Attributes
    ----------
    mode : {"min", "max"}
        ``min`` for losses, ``max`` for accuracies.
    patience : int
    best : float or None
        Best monitored value so far.
    best_epoch : int
        1-based epoch of ``best`` (0 before the first epoch).
    wait : int
        Epochs since the last improvement.
    stopped_epoch : int
        1-based epoch after which training stopped (0 while running).

    Examples
    --------
    >>> state = StoppingState("min", patience=1)
    >>> [state.update(v, e) for e, v in enumerate([3.0, 2.0, 2.5, 2.4], start=1)]
    [True, True, False, False]
    >>> state.best, state.best_epoch, state.stopped_epoch
    (2.0, 2, 3)
    """

    mode: str
    patience: int
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    stopped_epoch: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record epoch ``epoch``'s monitored value; return whether it improved.

        Sets :attr:`stopped_epoch` when ``patience`` epochs in a row did not
        improve. A NaN never improves.
        """
        value = float(value)
        if self.best is None:
            improved = not math.isnan(value)
        elif self.mode == "min":
            improved = value < self.best
        else:
            improved = value > self.best
        if improved:
            self.best, self.best_epoch, self.wait = value, int(epoch), 0
        else:
            self.wait += 1
            if self.wait >= self.patience and not self.stopped_epoch:
                self.stopped_epoch = int(epoch)
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether training must stop now."""
        return self.stopped_epoch > 0


def fingerprint(**parts: Any) -> str:
    """SHA-256 (16 hex digits) of JSON-able parts; numpy arrays are hashed by content.

    Examples
    --------
    >>> key = fingerprint(strategy="finetune:3", rows=np.arange(4))
    >>> len(key), key == fingerprint(rows=np.arange(4), strategy="finetune:3")  # order-free
    (16, True)
    >>> key == fingerprint(strategy="finetune:3", rows=np.arange(1, 5))  # other images
    False
    """
    digest = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        digest.update(key.encode())
        if isinstance(value, np.ndarray):
            digest.update(str(value.dtype).encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(json.dumps(value, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@dataclass
class FoldCheckpoint:
    """The state of a fold after some epochs (see the module docstring).

    Attributes
    ----------
    key : str
        :func:`fingerprint` of the fold's settings and images.
    epoch : int
        Epochs finished.
    stopping : StoppingState or None
    history : list of dict
        ``history.csv`` rows of the finished epochs.
    fit_check : dict or None
    model_variables, optimizer_variables : list of ndarray
        In the order of ``model.variables`` and ``optimizer.variables``.
    best_weights : list of ndarray or None
        ``model.get_weights()`` of the best epoch so far.
    """

    key: str
    epoch: int
    stopping: StoppingState | None
    history: list[dict[str, Any]] = field(default_factory=list)
    fit_check: dict[str, Any] | None = None
    model_variables: list[np.ndarray] = field(default_factory=list)
    optimizer_variables: list[np.ndarray] = field(default_factory=list)
    best_weights: list[np.ndarray] | None = None

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader sees the previous checkpoint or this one)."""
        state = {
            "format": _FORMAT,
            "key": self.key,
            "epoch": self.epoch,
            "stopping": None if self.stopping is None else asdict(self.stopping),
            "history": self.history,
            "fit_check": self.fit_check,
            "n_model": len(self.model_variables),
            "n_optimizer": len(self.optimizer_variables),
            "n_best": -1 if self.best_weights is None else len(self.best_weights),
        }
        arrays: dict[str, Any] = {
            "state": np.frombuffer(json.dumps(state, default=_json_number).encode(), dtype=np.uint8)
        }
        for prefix, values in (
            ("m", self.model_variables),
            ("o", self.optimizer_variables),
            ("b", self.best_weights or []),
        ):
            arrays.update({f"{prefix}{i:05d}": np.asarray(v) for i, v in enumerate(values)})
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, key: str) -> FoldCheckpoint | None:
        """Read a checkpoint; None (with a log line saying why) when absent, unreadable or not this
        fold's."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                state = json.loads(bytes(data["state"]).decode())
                if state.get("format") != _FORMAT:
                    raise ValueError(f"format {state.get('format')!r}, expected {_FORMAT}")
                model = [data[f"m{i:05d}"] for i in range(state["n_model"])]
                optimizer = [data[f"o{i:05d}"] for i in range(state["n_optimizer"])]
                best = (
                    None
                    if state["n_best"] < 0
                    else [data[f"b{i:05d}"] for i in range(state["n_best"])]
                )
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            logger.warning(
                "%s: unreadable checkpoint (%s: %s); the fold starts over from epoch 1",
                path,
                type(err).__name__,
                err,
            )
            return None
        if state["key"] != key:
            logger.warning(
                "%s: checkpoint of other settings or images (fingerprint %s, this fold %s); "
                "the fold starts over from epoch 1",
                path,
                state["key"],
                key,
            )
            return None
        stopping = None if state["stopping"] is None else StoppingState(**state["stopping"])
        return cls(
            key=key,
            epoch=int(state["epoch"]),
            stopping=stopping,
            history=list(state["history"]),
            fit_check=state["fit_check"],
            model_variables=model,
            optimizer_variables=optimizer,
            best_weights=best,
        )


def _json_number(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
