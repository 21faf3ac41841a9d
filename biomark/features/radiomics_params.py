"""The pyradiomics parameter file of a radiomics run: load, validate, hash.

A run of ``biomark radiomics`` is described by one ordinary pyradiomics
parameter file (``analyses/radiomics_cxr2d.yaml``). It is validated exactly as
:class:`radiomics.featureextractor.RadiomicsFeatureExtractor` validates it:
with pykwalify against pyradiomics's own schema
(``radiomics/schemas/paramSchema.yaml``) and custom checks
(``radiomics/schemas/schemaFuncs.py``), found through
:func:`radiomics.getParameterValidationFiles`. An unknown or misspelt key, a
value of the wrong type or out of range, an unknown feature class or image
type is a :class:`~biomark.exceptions.ConfigError` naming the file and the key.

On top of pyradiomics's schema biomark checks what its 2-D design needs:
``setting.force2D: true`` and ``setting.force2Ddimension: 0`` (each X-ray is
one 2-D image), ``setting.label: 1`` (biomark writes every region as 1), no
``shape`` (3-D) feature class, and no voxel-based settings (biomark extracts
one value per image).

Two hashes are recorded: :attr:`RadiomicsParams.file_sha256` (the file's
bytes, for provenance) and :attr:`RadiomicsParams.settings_hash` (the
canonical JSON of the validated content plus the pyradiomics version), which
keys the feature cache: editing a comment does not recompute anything,
changing a setting or upgrading pyradiomics does.

This module belongs to the radiomics "room" (house rule 2): pyradiomics is
imported inside :func:`validate_params` only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomark.config.load import read_yaml_file
from biomark.exceptions import ConfigError
from biomark.provenance import bytes_sha256

__all__ = [
    "DEFAULT_PARAMS",
    "RadiomicsParams",
    "load_params",
    "params_from_mapping",
    "validate_params",
]

logger = logging.getLogger(__name__)

#: The parameter file used when none is given (relative to the repository root).
DEFAULT_PARAMS = "analyses/radiomics_cxr2d.yaml"


@dataclass(frozen=True)
class RadiomicsParams:
    """A validated pyradiomics parameter file.

    Attributes
    ----------
    path : Path
        The file it came from (``<mapping>`` for in-memory parameters).
    content : dict
        The parsed YAML (``imageType``, ``featureClass``, ``setting``).
    file_sha256 : str
        SHA-256 of the file's bytes (of the canonical JSON for a mapping).
    settings_hash : str
        First 16 hex digits of the SHA-256 of the canonical JSON of
        ``content`` and the pyradiomics version; the cache key part.
    pyradiomics_version : str
        Version of the pyradiomics that validated it.
    """

    path: Path
    content: dict[str, Any] = field(repr=False)
    file_sha256: str
    settings_hash: str
    pyradiomics_version: str

    @property
    def stem(self) -> str:
        """The file name without suffix (names the output folder)."""
        return self.path.stem

    @property
    def image_types(self) -> dict[str, dict[str, Any]]:
        """Enabled image types (pyradiomics's default is ``Original`` only)."""
        types = self.content.get("imageType") or {"Original": {}}
        return {name: dict(value or {}) for name, value in types.items()}

    @property
    def settings(self) -> dict[str, Any]:
        """The ``setting`` block."""
        return dict(self.content.get("setting") or {})

    def extractor_params(self) -> dict[str, Any]:
        """A deep copy of the content, as given to ``RadiomicsFeatureExtractor``."""
        return copy.deepcopy(self.content)


def _schema_error_text(err: Exception) -> str:
    """The readable part of a pykwalify/pyradiomics validation error."""
    text = str(getattr(err, "msg", None) or err).strip()
    text = text.replace("Schema validation failed:", "")
    parts = [line.strip().lstrip("- ").strip(" .") for line in text.splitlines()]
    return "; ".join(p for p in parts if p)


def validate_params(content: Mapping[str, Any], where: str | Path = "<parameters>") -> str:
    """Validate a pyradiomics parameter mapping against pyradiomics's schema.

    Parameters
    ----------
    content : mapping
        Parsed parameter file (``imageType``, ``featureClass``, ``setting``,
        ``voxelSetting``).
    where : str or Path
        Named in error messages (usually the file path).

    Returns
    -------
    str
        The pyradiomics version that validated it.

    Raises
    ------
    ConfigError
        On any schema violation (unknown key, wrong type, value out of range,
        unknown feature class / image type / feature) or a biomark 2-D
        requirement that is not met; the message names ``where`` and the key.
    """
    import pykwalify.core
    import pykwalify.errors
    import radiomics

    schema_file, schema_funcs = radiomics.getParameterValidationFiles()
    # pykwalify logs the failure itself before raising; keep that out of the
    # user's output (the error we raise carries the same text).
    pyk_logger = logging.getLogger("pykwalify")
    previous = pyk_logger.level
    pyk_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            core = pykwalify.core.Core(
                source_data=json.loads(json.dumps(dict(content))),
                schema_files=[schema_file],
                extensions=[schema_funcs],
            )
        with warnings.catch_warnings():
            # pykwalify loads schemaFuncs.py with the deprecated load_module()
            warnings.simplefilter("ignore", DeprecationWarning)
            core.validate(raise_exception=True)
    except (pykwalify.errors.PyKwalifyException, ValueError, TypeError) as err:
        text = _schema_error_text(err)
        raise ConfigError(
            f"{where}: invalid pyradiomics parameter file: {text}. Check the key against "
            "pyradiomics's parameter schema (radiomics/schemas/paramSchema.yaml; "
            "https://pyradiomics.readthedocs.io/en/latest/customization.html)"
        ) from err
    finally:
        pyk_logger.setLevel(previous)
    _check_biomark_requirements(content, where)
    return str(radiomics.__version__)


def _check_biomark_requirements(content: Mapping[str, Any], where: str | Path) -> None:
    setting = dict(content.get("setting") or {})
    if setting.get("force2D") is not True:
        raise ConfigError(
            f"{where}: setting.force2D must be true: biomark extracts 2-D features from "
            "each X-ray; add `force2D: true` under `setting:`"
        )
    if setting.get("force2Ddimension", 0) != 0:
        raise ConfigError(
            f"{where}: setting.force2Ddimension={setting.get('force2Ddimension')!r}: use 0 "
            "(each X-ray is one 2-D plane)"
        )
    if setting.get("label", 1) != 1:
        raise ConfigError(
            f"{where}: setting.label={setting.get('label')!r}: biomark writes every region "
            "(lung, image, control) with label 1; set `label: 1`"
        )
    classes = content.get("featureClass") or {}
    if "shape" in classes:
        raise ConfigError(f"{where}: featureClass.shape is 3-D; for X-rays use `shape2D` instead")
    if content.get("voxelSetting"):
        raise ConfigError(
            f"{where}: voxelSetting is not supported: biomark computes one value per "
            "image (segment-based extraction); remove the voxelSetting block"
        )
    for key in ("resampledPixelSpacing", "resegmentRange"):
        if setting.get(key) is not None:
            raise ConfigError(
                f"{where}: setting.{key} is not supported: features are computed on the "
                "exact cached pixels the CNN saw; remove the setting"
            )


def _settings_hash(content: Mapping[str, Any], version: str) -> str:
    text = json.dumps({"content": content, "pyradiomics": version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def params_from_mapping(content: dict[str, Any], name: str = "params") -> RadiomicsParams:
    """Validate in-memory parameters (tests, notebooks) into :class:`RadiomicsParams`.

    Parameters
    ----------
    content : dict
        As a parameter file would hold (kept, not copied).
    name : str, default "params"
        Stands in for the file stem (names the output folder).

    Raises
    ------
    ConfigError
        As :func:`validate_params`.
    """
    content = json.loads(json.dumps(dict(content)))
    version = validate_params(content, where=f"<{name}>")
    canonical = json.dumps(content, sort_keys=True).encode()
    return RadiomicsParams(
        path=Path(f"{name}.yaml"),
        content=content,
        file_sha256=bytes_sha256(canonical),
        settings_hash=_settings_hash(content, version),
        pyradiomics_version=version,
    )


def load_params(path: str | Path = DEFAULT_PARAMS) -> RadiomicsParams:
    """Load and validate a pyradiomics parameter file.

    Parameters
    ----------
    path : str or Path, default ``analyses/radiomics_cxr2d.yaml``
        A pyradiomics YAML parameter file.

    Returns
    -------
    RadiomicsParams

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, not a mapping, or fails validation
        (the message names the file and the key).

    Examples
    --------
    >>> params = load_params("analyses/radiomics_cxr2d.yaml")  # doctest: +SKIP
    >>> params.settings["binWidth"]  # doctest: +SKIP
    8
    """
    path = Path(path)
    raw, content = read_yaml_file(
        path,
        kind="parameter file",
        advice="give a pyradiomics YAML file with --params "
        f"(the default is {DEFAULT_PARAMS} in the repository)",
    )
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError(
            f"{path}: expected a mapping (imageType, featureClass, setting) at the top level"
        )
    version = validate_params(content, where=path)
    content = json.loads(json.dumps(content))
    return RadiomicsParams(
        path=path,
        content=content,
        file_sha256=bytes_sha256(raw),
        settings_hash=_settings_hash(content, version),
        pyradiomics_version=version,
    )
