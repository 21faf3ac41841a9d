"""The folder ``biomark radiomics`` writes for one dataset, params and region, and reading it back.

``DATA_DIR/radiomics/<params-stem>_<region>/`` (:func:`output_dir`) holds
``features.parquet``, ``failures.csv``, ``masks.csv``, ``masks.npy``,
``radiomics.json`` (:data:`TABLES`), the negative controls under
``controls/<variant>/`` (:data:`CONTROL_VARIANTS`) and the mask gallery;
:func:`load_radiomics` reads it into a :class:`RadiomicsRun`.
:mod:`biomark.features.radiomics_run` writes it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from biomark.features.radiomics_params import RadiomicsParams
from biomark.features.radiomics_result_cache import RECORD

logger = logging.getLogger(__name__)

__all__ = [
    "CONTROL_VARIANTS",
    "TABLES",
    "RadiomicsRun",
    "load_radiomics",
    "output_dir",
    "reused_run",
    "written_files",
]

#: Negative-control variants (see :mod:`biomark.analysis.controls`).
CONTROL_VARIANTS: tuple[str, ...] = ("shuffled", "outside")

#: The files of every output folder (the controls' tables and the gallery's thumbnails come on top).
TABLES = ("masks.npy", "masks.csv", "features.parquet", "failures.csv", "radiomics.json")

#: The text columns of ``masks.csv`` (an empty ``flags`` is no flag, not a missing value).
_MASK_TEXT_COLUMNS = ("image_id", "mask_source", "flags")


@dataclass(frozen=True)
class RadiomicsRun:
    """Everything ``biomark radiomics`` wrote for one dataset, params and region.

    Attributes
    ----------
    out_dir : Path
        ``DATA_DIR/radiomics/<params-stem>_<region>/``.
    features : DataFrame of shape (n_ok, 1 + n_features)
        ``image_id`` + feature columns (``features.parquet``).
    failures : DataFrame
        ``variant`` + :data:`biomark.features.radiomics.FAILURE_COLUMNS` (``failures.csv``).
    masks : DataFrame
        Per image: ``image_id, mask_source, area_fraction, n_components,
        touches_border, lr_balance, flags, plausible, used`` (``masks.csv``).
    controls : dict of str to DataFrame
        Control variant -> its feature table (``controls/<variant>/features.parquet``).
    info : dict
        The content of ``radiomics.json``.
    """

    out_dir: Path
    features: pd.DataFrame
    failures: pd.DataFrame
    masks: pd.DataFrame
    controls: dict[str, pd.DataFrame]
    info: dict[str, Any]


def output_dir(data_dir: str | os.PathLike[str], params: RadiomicsParams, region: str) -> Path:
    """``DATA_DIR/radiomics/<params-stem>_<region>/``."""
    return Path(data_dir) / "radiomics" / f"{params.stem}_{region}"


def _read_masks_table(path: Path) -> pd.DataFrame:
    """``masks.csv`` as the run held it: text columns with "" kept, a check's missing value as
    NaN."""
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(
        path,
        dtype={c: str for c in _MASK_TEXT_COLUMNS},
        keep_default_na=False,
        na_values={c: [""] for c in columns if c not in _MASK_TEXT_COLUMNS},
    )


def load_radiomics(out_dir: str | os.PathLike[str]) -> RadiomicsRun:
    """Read an output folder written by :func:`run_radiomics`.

    Raises
    ------
    DataError
        If ``features.parquet`` or ``radiomics.json`` is missing.
    """
    import json

    from biomark.exceptions import DataError

    out = Path(out_dir)
    for needed in ("features.parquet", "radiomics.json", "failures.csv", "masks.csv"):
        if not (out / needed).is_file():
            raise DataError(
                f"{out / needed}: missing; run `biomark radiomics --data DATA_DIR` first"
            )
    controls = {
        name: pd.read_parquet(out / "controls" / name / "features.parquet")
        for name in CONTROL_VARIANTS
        if (out / "controls" / name / "features.parquet").is_file()
    }
    return RadiomicsRun(
        out_dir=out,
        features=pd.read_parquet(out / "features.parquet"),
        failures=pd.read_csv(out / "failures.csv", dtype={"image_id": str}, keep_default_na=False),
        masks=_read_masks_table(out / "masks.csv"),
        controls=controls,
        info=json.loads((out / "radiomics.json").read_text(encoding="utf-8")),
    )


def written_files(info: Mapping[str, Any]) -> list[str]:
    """Every file a run wrote into its output folder (relative paths), from its
    ``radiomics.json``."""
    return [
        *TABLES,
        *(f"controls/{name}/features.parquet" for name in info["controls"]),
        *(f"gallery/{name}" for name in info["gallery"]),
    ]


def reused_run(out: Path) -> RadiomicsRun:
    """The finished outputs of an earlier identical run
    (:mod:`~biomark.features.radiomics_result_cache`).

    ``radiomics.json`` stays as that run wrote it; the returned ``info``
    counts what this run did: nothing computed, everything from the cache.
    """
    run = load_radiomics(out)
    info = copy.deepcopy(run.info)
    for counts in [info["counts"], *info["controls"].values()]:
        counts["from_cache"] = counts["computed"] + counts["from_cache"]
        counts["computed"] = 0
    controls = {name: table for name, table in run.controls.items() if name in info["controls"]}
    logger.info(
        "radiomics: inputs and settings unchanged since %s was written; its outputs are reused",
        out / RECORD,
    )
    return dataclasses.replace(run, controls=controls, info=info)
