"""The typed content of a run folder's ``run.json``.

``run.json`` is read and written only through :class:`biomark.features.run_folder.RunFolder`,
which turns it into a :class:`RunInfo` (frozen dataclasses) and back. Code
reads fields (``info.classes``, ``info.dataset.manifest_sha256``,
``info.k``), never dict keys.

Reading is lenient, as it always was: a key a run folder lacks (one written by
an older biomark, or a hand-made one in a test) takes the documented default,
and top-level keys this version does not know are kept and written back
unchanged. The recorded plan stays the mapping the run wrote
(:attr:`RunInfo.plan`): :meth:`RunInfo.plan_settings` validates it into a
:class:`~biomark.config.Plan` where a run needs one, and the typed properties
(:attr:`RunInfo.weights`, :attr:`RunInfo.image_size`, ...) give single values
with the fallbacks the readers used.

Examples
--------
>>> info = RunInfo.from_json({"name": "quick", "classes": ["COVID-19", "Normal"],
...                           "plan": {"seed": 3, "cv": {"k": 5}}})
>>> info.classes, info.k, info.seed, info.weights
(('COVID-19', 'Normal'), 5, 3, 'none')
>>> RunInfo.from_json(info.to_json()) == info
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from biomark.config import (
    CompareSettings,
    Plan,
    ReportPlanSettings,
    StrategySpec,
    from_mapping,
    plan_from_mapping,
)
from biomark.exceptions import ConfigError

__all__ = [
    "DatasetRecord",
    "FoldsRecord",
    "JobRecord",
    "RunInfo",
    "RunTimings",
    "json_ready",
    "now_utc",
]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: Top-level keys of ``run.json``, in the order they are written.
_KEYS = (
    "name",
    "created",
    "updated",
    "plan",
    "plan_hash",
    "seed",
    "dataset",
    "classes",
    "positive_class",
    "folds",
    "strategies",
    "environment",
    "jobs",
    "timings",
    "url",
)


def json_ready(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON), recursing into dicts and lists.

    Examples
    --------
    >>> json_ready({"a": float("nan"), "b": [1.5, np.int64(2)]})
    {'a': None, 'b': [1.5, 2]}
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def now_utc() -> str:
    """The current time as ISO 8601 in UTC, to the second (``run.json``'s time stamps)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class DatasetRecord:
    """``run.json`` -> ``dataset``: the dataset a run trained on.

    Attributes
    ----------
    dir : str
        Its folder on the machine that prepared the run ("" when not recorded).
    manifest_sha256 : str
        SHA-256 of its ``manifest.csv`` (the folds apply to this manifest only).
    n_images, image_size : int or None
    class_counts : dict of str to int
    url : str or None
        The fsspec URL it was copied from (credentials redacted), if any.
    """

    dir: str = ""
    manifest_sha256: str = ""
    n_images: int | None = None
    image_size: int | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    url: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> DatasetRecord:
        """Read the ``dataset`` section (missing keys take the defaults)."""
        d = _mapping(data)
        return cls(
            dir=str(d.get("dir") or ""),
            manifest_sha256=str(d.get("manifest_sha256") or ""),
            n_images=_optional_int(d.get("n_images")),
            image_size=_optional_int(d.get("image_size")),
            class_counts={str(k): int(v) for k, v in _mapping(d.get("class_counts")).items()},
            url=None if d.get("url") is None else str(d["url"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``dataset`` section as written (``url`` only when there is one)."""
        out: dict[str, Any] = {"dir": self.dir}
        if self.url is not None:
            out["url"] = self.url
        out.update(
            manifest_sha256=self.manifest_sha256,
            n_images=self.n_images,
            image_size=self.image_size,
            class_counts=dict(self.class_counts),
        )
        return out


@dataclass(frozen=True)
class FoldsRecord:
    """``run.json`` -> ``folds``: how the images were split (the table itself is ``folds.csv``).

    Attributes
    ----------
    k : int or None
        Number of folds.
    file : str
    grouping : str or None
        ``patient``, ``none``, ... as the plan's ``cv.grouping``.
    seed : int or None
    sizes : tuple of int
        Test images per fold.
    per_class : dict of str to list of int
        Class -> test images per fold.
    """

    k: int | None = None
    file: str = "folds.csv"
    grouping: str | None = None
    seed: int | None = None
    sizes: tuple[int, ...] = ()
    per_class: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> FoldsRecord:
        """Read the ``folds`` section (missing keys take the defaults)."""
        d = _mapping(data)
        return cls(
            k=_optional_int(d.get("k")),
            file=str(d.get("file") or "folds.csv"),
            grouping=None if d.get("grouping") is None else str(d["grouping"]),
            seed=_optional_int(d.get("seed")),
            sizes=tuple(int(s) for s in d.get("sizes") or ()),
            per_class={
                str(c): [int(n) for n in v] for c, v in _mapping(d.get("per_class")).items()
            },
        )

    def to_json(self) -> dict[str, Any]:
        """The ``folds`` section as written."""
        return {
            "file": self.file,
            "grouping": self.grouping,
            "seed": self.seed,
            "k": self.k,
            "sizes": list(self.sizes),
            "per_class": {c: list(v) for c, v in self.per_class.items()},
        }


@dataclass(frozen=True)
class JobRecord:
    """``run.json`` -> ``jobs`` -> ``"<strategy>/fold_XX"``: one finished (strategy, fold) job.

    Attributes
    ----------
    finished : str
        When the run noted it (ISO 8601, UTC).
    seconds : float
        The job's own time (``timings.json``'s ``total_seconds``).
    epochs_run : int
    accuracy : float or None
        Test-fold accuracy.
    worker, host : str
        Where it ran (``"local"`` and this host for the serial executor).
    """

    finished: str = ""
    seconds: float = 0.0
    epochs_run: int = 0
    accuracy: float | None = None
    worker: str | None = None
    host: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> JobRecord:
        """Read one job entry."""
        d = _mapping(data)
        return cls(
            finished=str(d.get("finished") or ""),
            seconds=float(d.get("seconds") or 0.0),
            epochs_run=int(d.get("epochs_run") or 0),
            accuracy=_optional_float(d.get("accuracy")),
            worker=None if d.get("worker") is None else str(d["worker"]),
            host=None if d.get("host") is None else str(d["host"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The entry as written (``worker``/``host`` only when known)."""
        out: dict[str, Any] = {
            "finished": self.finished,
            "seconds": self.seconds,
            "epochs_run": self.epochs_run,
            "accuracy": self.accuracy,
        }
        out.update(
            {k: v for k, v in (("worker", self.worker), ("host", self.host)) if v is not None}
        )
        return out


@dataclass(frozen=True)
class RunTimings:
    """``run.json`` -> ``timings``: how the last invocation of the run went, for every executor
    alike.

    Attributes
    ----------
    last_invocation_seconds : float or None
        Wall time of the last ``biomark extract`` on this run (preparing, jobs, summaries).
    jobs_seconds : float or None
        Sum of the finished jobs' own times (:attr:`JobRecord.seconds`).
    executor : str or None
        Where the last invocation ran its jobs (``serial``, ``dask local:2``,
        ``dask tcp://10.0.0.5:8786``; ``+ url`` with the run folder at a URL).
    retries : int or None
        Extra attempts a failed job was given.
    """

    last_invocation_seconds: float | None = None
    jobs_seconds: float | None = None
    executor: str | None = None
    retries: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> RunTimings:
        """Read the ``timings`` section (``last_invocation_scheduler`` of older runs is the
        executor)."""
        d = _mapping(data)
        executor = d.get("executor", d.get("last_invocation_scheduler"))
        return cls(
            last_invocation_seconds=_optional_float(d.get("last_invocation_seconds")),
            jobs_seconds=_optional_float(d.get("jobs_seconds")),
            executor=None if executor is None else str(executor),
            retries=_optional_int(d.get("retries")),
        )

    def to_json(self) -> dict[str, Any]:
        """The section as written (only what is known)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class RunInfo:
    """Everything ``run.json`` records about a run (see :mod:`biomark.features.run_folder`).

    Attributes
    ----------
    name : str
        The plan's name ("" when ``run.json`` does not record it).
    created, updated : str
        ISO 8601 time stamps (UTC).
    plan : dict
        The plan as the run recorded it (:func:`biomark.config.plan_to_dict`);
        read it through the properties and :meth:`plan_settings`.
    plan_hash : str
    seed : int
        The run's seed (the plan's when ``run.json`` has no top-level seed; 0 when neither).
    dataset : DatasetRecord
    classes : tuple of str
        The dataset's classes, in label order.
    positive_class : str or None
        The 2-class task's positive class.
    folds : FoldsRecord
    strategies : tuple of str
        Strategy labels in run order (the plan's when ``run.json`` has no list).
    environment : dict
        Provenance: package versions, platform, ``keras`` (backend, devices).
    jobs : dict of str to JobRecord
        ``"<strategy dir>/fold_XX"`` -> the finished job.
    timings : RunTimings
    url : str or None
        The run folder's URL, for a run kept at one (credentials redacted).
    extra : dict
        Top-level keys this version does not know, kept as they were.
    source : str
        The file it was read from ("" for a new one), for messages; not written.
    """

    name: str = ""
    created: str = ""
    updated: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    plan_hash: str = ""
    seed: int = 0
    dataset: DatasetRecord = field(default_factory=DatasetRecord)
    classes: tuple[str, ...] = ()
    positive_class: str | None = None
    folds: FoldsRecord = field(default_factory=FoldsRecord)
    strategies: tuple[str, ...] = ()
    environment: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    timings: RunTimings = field(default_factory=RunTimings)
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "") -> RunInfo:
        """Read a parsed ``run.json`` (see the module notes on missing keys)."""
        plan = _mapping(data.get("plan"))
        seed = data.get("seed", plan.get("seed"))
        strategies = data.get("strategies", plan.get("strategies")) or ()
        return cls(
            name=str(data.get("name") or ""),
            created=str(data.get("created") or ""),
            updated=str(data.get("updated") or ""),
            plan=plan,
            plan_hash=str(data.get("plan_hash") or ""),
            seed=int(seed or 0),
            dataset=DatasetRecord.from_json(data.get("dataset")),
            classes=tuple(str(c) for c in data.get("classes") or ()),
            positive_class=str(data["positive_class"]) if data.get("positive_class") else None,
            folds=FoldsRecord.from_json(data.get("folds")),
            strategies=tuple(str(s) for s in strategies),
            environment=_mapping(data.get("environment")),
            jobs={str(k): JobRecord.from_json(v) for k, v in _mapping(data.get("jobs")).items()},
            timings=RunTimings.from_json(data.get("timings")),
            url=None if data.get("url") is None else str(data["url"]),
            extra={k: v for k, v in data.items() if k not in _KEYS},
            source=source,
        )

    def to_json(self) -> dict[str, Any]:
        """The content of ``run.json`` (strict JSON: NaN becomes null)."""
        out: dict[str, Any] = {
            "name": self.name,
            "created": self.created,
            "updated": self.updated,
            "plan": self.plan,
            "plan_hash": self.plan_hash,
            "seed": self.seed,
            "dataset": self.dataset.to_json(),
            "classes": list(self.classes),
            "positive_class": self.positive_class,
            "folds": self.folds.to_json(),
            "strategies": list(self.strategies),
            "environment": self.environment,
            "jobs": {k: v.to_json() for k, v in self.jobs.items()},
            "timings": self.timings.to_json(),
        }
        if self.url is not None:
            out["url"] = self.url
        out.update(self.extra)
        return json_ready(out)

    # ------------------------------------------------------------ the plan
    def plan_value(self, key: str, default: Any = None) -> Any:
        """A value of the recorded plan by dotted key (``"model.alpha"``), or ``default``.

        Examples
        --------
        >>> RunInfo(plan={"model": {"alpha": 0.35}}).plan_value("model.alpha")
        0.35
        >>> RunInfo().plan_value("training.epochs", "?")
        '?'
        """
        node: Any = self.plan
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def plan_settings(self) -> Plan:
        """The recorded plan, validated (what a job trains with).

        Raises
        ------
        ConfigError
            A setting this version does not accept (the file is named).
        """
        try:
            return plan_from_mapping(self.plan)
        except ConfigError as err:
            raise ConfigError(f"{self.source or 'run.json'}: {err}") from err

    def compare_settings(self) -> CompareSettings:
        """The plan's ``compare:`` section, or the defaults.

        Raises
        ------
        ConfigError
            An unknown or invalid setting (the file is named).
        """
        return self._plan_section(CompareSettings, "compare")

    def report_settings(self) -> ReportPlanSettings:
        """The plan's ``report:`` section (thresholds of the pages), or the defaults.

        Raises
        ------
        ConfigError
            An unknown or invalid setting (the file is named).
        """
        return self._plan_section(ReportPlanSettings, "report")

    def _plan_section(self, cls: type[T], key: str) -> T:
        """The plan's ``key:`` section as ``cls`` (defaults when absent); errors name
        ``run.json``."""
        try:
            return from_mapping(cls, self.plan.get(key), where=f"{key}.")
        except ConfigError as err:
            raise ConfigError(f"{self.source or 'run.json'}: {err}") from err

    @property
    def k(self) -> int | None:
        """Number of folds: ``folds.k``, else the plan's ``cv.k`` (None when neither)."""
        if self.folds.k is not None:
            return self.folds.k
        k = self.plan_value("cv.k")
        return None if k is None else int(k)

    @property
    def weights(self) -> str:
        """The plan's ``model.weights`` (``"none"`` when not recorded)."""
        return str(self.plan_value("model.weights", "none"))

    @property
    def pretrained(self) -> bool:
        """Whether the plan gave pretrained weights (``model.weights`` other than ``none``)."""
        return self.weights.lower() != "none"

    def shared_backbone(self, strategy: str) -> bool:
        """Whether every fold of ``strategy`` reads the images through the same backbone.

        Only ``frozen`` with pretrained weights does: its units are the same
        features in every fold. Every other strategy trains a backbone per fold
        (``scratch``, ``finetune:N``), whose unit ``j`` is unrelated to another
        fold's unit ``j`` until units are matched
        (:func:`biomark.analysis.alignment.align_folds`). ``frozen`` with
        ``model.weights: none`` shares one seeded random backbone, but each
        fold estimates its BatchNormalization statistics on its own training
        images (and runs made before the backbone was shared drew one per
        fold), so its units are matched too.
        """
        return StrategySpec.parse(strategy).name == "frozen" and self.pretrained

    def random_control(self, strategy: str) -> bool:
        """Whether ``strategy`` would start from pretrained weights but the plan gave none.

        ``frozen`` and ``finetune:N`` with ``model.weights: none`` start from
        one seeded random backbone: random-features controls, not ImageNet
        features; nothing they show bears on the paper's claim about
        pretrained features.
        """
        return StrategySpec.parse(strategy).name != "scratch" and not self.pretrained

    @property
    def image_size(self) -> int:
        """The plan's ``model.image_size`` (0 when not recorded)."""
        return int(self.plan_value("model.image_size", 0) or 0)

    @property
    def plan_strategies(self) -> tuple[str, ...]:
        """The plan's ``strategies`` as recorded."""
        return tuple(str(s) for s in self.plan.get("strategies") or ())

    @property
    def keras(self) -> dict[str, Any]:
        """``environment.keras``: version, backend and devices of the training."""
        return _mapping(self.environment.get("keras"))

    # -------------------------------------------------------------- changes
    def with_job(self, key: str, job: JobRecord) -> RunInfo:
        """A copy with one more finished job (and ``updated`` set to its time)."""
        return dataclasses.replace(
            self, jobs={**self.jobs, key: job}, updated=job.finished or self.updated
        )

    def with_timings(self, **values: Any) -> RunInfo:
        """A copy whose :class:`RunTimings` has ``values`` (the others kept)."""
        return dataclasses.replace(self, timings=dataclasses.replace(self.timings, **values))

    @property
    def jobs_seconds(self) -> float:
        """The finished jobs' own times, summed."""
        return round(sum(job.seconds for job in self.jobs.values()), 3)
