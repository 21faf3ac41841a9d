"""A synthetic 7-class chest-radiograph dataset with planted, known biomarkers.

The phantom is the fixture of every later step: training, radiomics, CKA and
the biomarker report can be checked against a known answer. Each class
carries one documented signature in the lung fields (:data:`SIGNATURES`),
scaled by a continuous per-image ``severity`` stored as ground truth, on top
of realistic nuisance variation (position, rotation, body and lung size,
exposure, gamma, noise, blur, rib phase and spacing, breast shadows, PA/AP
view). An optional *source confounder* burns a bright text-like tag into a
top corner, outside the lungs, with a frequency that depends on the class.
``data/PHANTOM.md`` documents the anatomy, every signature and the measured
difficulty.

Randomness comes only from ``np.random.SeedSequence(seed)``: every patient
and image has its own child sequence addressed by ``spawn_key``, so the output
does not depend on the order of generation, and one seed gives byte-identical
PNGs and CSV.

Examples
--------
>>> import numpy as np
>>> image, mask = render_phantom("Effusion", 0.8, np.random.default_rng(0), size=128)
>>> image.shape, image.dtype.name, sorted(np.unique(mask).tolist())
((128, 128), 'uint8', [0, 1])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from biomark.data.phantom_anatomy import (
    Anatomy,
    View,
    anatomy_density,
    build_frame,
    jitter_anatomy,
    sample_anatomy,
)
from biomark.data.phantom_signatures import LOBES, PHANTOM_CLASSES, SIGNATURES, disease_anatomy, signature_density
from biomark.exceptions import ConfigError
from biomark.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from biomark.progress import progress

__all__ = [
    "Anatomy",
    "LOBES",
    "MANIFEST_COLUMNS",
    "PAPER_CLASS_COUNTS",
    "PHANTOM_CLASSES",
    "PhantomCase",
    "SETTINGS_FILE",
    "SEVERITY_RANGE",
    "SIGNATURES",
    "generate_phantom",
    "parse_class_counts",
    "render_phantom",
    "render_phantom_case",
]

logger = logging.getLogger(__name__)

#: The generator's settings, written next to ``phantom.csv`` (before it).
SETTINGS_FILE = "phantom.json"

#: Severity of a diseased image is drawn in this range (Normal is 0).
SEVERITY_RANGE: tuple[float, float] = (0.15, 1.0)

#: Columns of ``phantom.csv``, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "label",
    "patient_id",
    "source",
    "view",
    "severity",
    "mask_path",
    "artifact",
    "side",
    "lobe",
    "height",
    "width",
    "signature_strength",
)

#: Images per class in Apostolopoulos et al. (2020), section 2.1 (3,905 in all), in
#: :data:`PHANTOM_CLASSES` order; the targets of ``data/recipes/apostolopoulos2020.yaml``.
PAPER_CLASS_COUNTS: dict[str, int] = {
    "COVID-19": 455,
    "Edema": 293,
    "Effusion": 311,
    "Emphysema": 315,
    "Fibrosis": 280,
    "Pneumonia": 910,
    "Normal": 1341,
}

#: Images per class when neither ``n_per_class`` nor ``class_counts`` is given.
DEFAULT_N_PER_CLASS = 40

_AP_PROBABILITY = 0.3
_NONSQUARE_FRACTION = 0.25
_NONSQUARE_ASPECT = 7 / 8  # 256 x 224 at 256 px
_SEVERITY_JITTER = 0.12  # follow-up films: severity = patient level + N(0, 0.12)
_CONFOUNDED_CLASS = "COVID-19"


@dataclass(frozen=True)
class PhantomCase:
    """One rendered phantom image with its ground truth.

    Attributes
    ----------
    image : np.ndarray of shape (size, size), uint8
        The radiograph.
    mask : np.ndarray of shape (size, size), uint8
        Lung fields in ``{0, 1}``.
    side : str
        Where the signature is: "right", "left", "bilateral" or "none".
    lobe : str
        Consolidated lobe for Pneumonia (one of :data:`LOBES`), else "none".
    artifact : np.ndarray of shape (size, size), bool
        Pixels of the burned-in confounder tag (all False without artifact).
    """

    image: np.ndarray
    mask: np.ndarray
    side: str
    lobe: str
    artifact: np.ndarray


def _check_label(label: str) -> None:
    if label not in PHANTOM_CLASSES:
        raise ConfigError(f"label={label!r} is not a phantom class; use one of {', '.join(PHANTOM_CLASSES)}")


def _expose(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Density -> grey values in [0, 1] with a random exposure, blur and noise."""
    size = density.shape[0]
    gain = rng.uniform(0.82, 1.18)
    offset = rng.uniform(-0.02, 0.06)
    gamma = rng.uniform(0.8, 1.25)
    blur = rng.uniform(0.3, 1.1) * size / 256
    noise = rng.uniform(0.006, 0.025)
    grey = np.clip(offset + gain * density / 0.85, 0.0, 1.0) ** gamma
    grey = ndimage.gaussian_filter(grey, blur) if blur > 0.2 else grey
    # Uniform noise with standard deviation ``noise`` (cheaper than Gaussian, same look).
    grey = grey + (noise * 3.4641016) * (rng.random(grey.shape, dtype=np.float32) - 0.5)
    return np.clip(grey, 0.0, 1.0)


# 3x5 glyphs of a tiny pixel font: the tag looks like burned-in text.
_GLYPHS = np.array(
    [
        [0b111, 0b101, 0b101, 0b101, 0b111],
        [0b010, 0b110, 0b010, 0b010, 0b111],
        [0b111, 0b001, 0b111, 0b100, 0b111],
        [0b111, 0b001, 0b111, 0b001, 0b111],
        [0b101, 0b101, 0b111, 0b001, 0b001],
        [0b100, 0b100, 0b100, 0b100, 0b111],
        [0b111, 0b100, 0b110, 0b100, 0b111],
        [0b110, 0b101, 0b110, 0b101, 0b110],
        [0b101, 0b111, 0b111, 0b101, 0b101],
        [0b111, 0b101, 0b111, 0b100, 0b100],
    ],
    dtype=np.uint8,
)


def _artifact_tag(size: int, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean map of a text-like tag in a top corner, kept off the lungs."""
    n_chars = int(rng.integers(3, 7))
    codes = rng.integers(0, len(_GLYPHS), size=n_chars)
    bits = (_GLYPHS[codes][:, :, None] >> np.arange(2, -1, -1)) & 1  # (n, 5, 3)
    text = np.concatenate([np.pad(b, ((0, 0), (0, 1))) for b in bits], axis=1)  # (5, 4n)
    scale = max(1, round(size * 0.008))
    text = np.kron(text, np.ones((scale, scale), dtype=np.uint8)).astype(bool)
    tag = np.zeros((size, size), dtype=bool)
    top = int(size * rng.uniform(0.02, 0.05))
    margin = int(size * rng.uniform(0.02, 0.05))
    height, width = text.shape
    width = min(width, size - 2 * margin)
    left = margin if rng.random() < 0.5 else size - margin - width
    tag[top : top + height, left : left + width] = text[:, :width]
    keep_out = ndimage.binary_dilation(mask.astype(bool), iterations=max(2, size // 64))
    return tag & ~keep_out


def render_phantom_case(
    label: str,
    severity: float,
    rng: np.random.Generator,
    *,
    size: int = 256,
    artifact: bool = False,
    anatomy: Anatomy | None = None,
    view: View = "PA",
    signature_strength: float = 1.0,
) -> PhantomCase:
    """Render one phantom radiograph with its lung mask and ground truth.

    The random draws from ``rng`` do not depend on ``label``, ``severity``
    or ``artifact``: with generators in the same state, two calls that differ
    only in those show the same patient, positioning and exposure.

    Parameters
    ----------
    label : str
        One of :data:`PHANTOM_CLASSES`.
    severity : float
        Strength of the signature in ``[0, 1]``; ignored for "Normal".
    rng : numpy.random.Generator
        Source of all randomness of this image.
    size : int, default 256
        Side of the square image in pixels (at least 64).
    artifact : bool, default False
        Burn the confounder tag into a top corner, outside the lungs.
    anatomy : Anatomy or None
        The patient; None draws a new one from ``rng``. The film still gets
        its own small positioning jitter (:func:`jitter_anatomy`).
    view : {"PA", "AP"}, default "PA"
        AP films magnify the heart and raise the clavicles.
    signature_strength : float, default 1.0
        Multiplies the signature's amplitude (see
        :func:`biomark.data.phantom_signatures.signature_density`); the
        random draws do not depend on it.

    Returns
    -------
    PhantomCase

    Raises
    ------
    ConfigError
        Unknown ``label`` or ``view``, ``severity`` outside ``[0, 1]``, or
        ``size`` below 64.
    """
    _check_label(label)
    if not (isinstance(severity, (int, float, np.floating)) and 0.0 <= float(severity) <= 1.0):
        raise ConfigError(f"severity={severity!r} is outside [0, 1]; pass a float between 0 and 1")
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise ConfigError(f"size={size!r} is too small; use an integer of at least 64 pixels")
    if view not in ("PA", "AP"):
        raise ConfigError(f"view={view!r} is not a view; use 'PA' or 'AP'")
    size = int(size)
    severity = 0.0 if label == "Normal" else float(severity)

    patient = sample_anatomy(rng) if anatomy is None else anatomy
    film = jitter_anatomy(patient, rng)
    sig_seed, noise_seed, tag_seed = rng.integers(0, 2**63 - 1, size=3)

    diseased = disease_anatomy(label, severity, film, signature_strength)
    frame = build_frame(diseased, size, view)
    density = anatomy_density(frame, diseased, view)
    delta, info = signature_density(label, severity, frame, diseased, np.random.default_rng(sig_seed),
                                    signature_strength)
    grey = _expose(density + delta, np.random.default_rng(noise_seed))
    image = np.round(grey * 255.0).astype(np.uint8)
    mask = frame.lung_mask
    tag = np.zeros((size, size), dtype=bool)
    if artifact:
        tag_rng = np.random.default_rng(tag_seed)
        tag = _artifact_tag(size, mask, tag_rng)
        image[tag] = np.uint8(tag_rng.integers(235, 256))
    return PhantomCase(image=image, mask=mask, side=info["side"], lobe=info["lobe"], artifact=tag)


def render_phantom(
    label: str,
    severity: float,
    rng: np.random.Generator,
    *,
    size: int = 256,
    artifact: bool = False,
    anatomy: Anatomy | None = None,
    view: View = "PA",
) -> tuple[np.ndarray, np.ndarray]:
    """Render one phantom radiograph (pure: all randomness from ``rng``).

    Parameters are those of :func:`render_phantom_case`.

    Returns
    -------
    image : np.ndarray of shape (size, size), uint8
    mask : np.ndarray of shape (size, size), uint8
        The two lung fields, values in ``{0, 1}``.

    Raises
    ------
    ConfigError
        Invalid ``label``, ``severity``, ``size`` or ``view``.
    """
    case = render_phantom_case(label, severity, rng, size=size, artifact=artifact, anatomy=anatomy, view=view)
    return case.image, case.mask


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def parse_class_counts(text: str, scale: float = 1.0) -> dict[str, int]:
    """Per-class image counts from a command-line value, optionally scaled.

    Parameters
    ----------
    text : str
        ``"paper"`` for :data:`PAPER_CLASS_COUNTS` (3,905 images), or seven
        comma-separated whole numbers in :data:`PHANTOM_CLASSES` order, e.g.
        ``"455,293,311,315,280,910,1341"``.
    scale : float, default 1.0
        Multiplies every count, rounded half up and at least 1 per class, so a
        smaller (or larger) dataset keeps the proportions.

    Returns
    -------
    dict of str to int
        Class name to number of images, in :data:`PHANTOM_CLASSES` order.

    Raises
    ------
    ConfigError
        ``text`` is neither ``paper`` nor seven whole numbers of at least 1,
        or ``scale`` is not a positive finite number.

    Examples
    --------
    >>> counts = parse_class_counts("paper", scale=0.1)
    >>> list(counts.values()), sum(counts.values())
    ([46, 29, 31, 32, 28, 91, 134], 391)
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not 0 < scale < math.inf:
        raise ConfigError(f"scale={scale!r} is invalid; use a positive number (0.1 keeps a tenth of every class)")
    value = str(text).strip()
    if value.lower() == "paper":
        counts = list(PAPER_CLASS_COUNTS.values())
    else:
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != len(PHANTOM_CLASSES) or not all(p.isdigit() for p in parts):
            raise ConfigError(
                f"counts={text!r} is invalid; use 'paper' or {len(PHANTOM_CLASSES)} comma-separated whole "
                f"numbers, one per class in the order {', '.join(PHANTOM_CLASSES)}"
            )
        counts = [int(p) for p in parts]
        zero = [c for c, n in zip(PHANTOM_CLASSES, counts) if n < 1]
        if zero:
            raise ConfigError(f"counts={text!r}: every class needs at least 1 image ({', '.join(zero)} got 0)")
    scaled = [max(1, math.floor(n * float(scale) + 0.5)) for n in counts]
    return dict(zip(PHANTOM_CLASSES, scaled))


def _resolve_counts(
    n_per_class: int | None, class_counts: Mapping[str, int] | Sequence[int] | None
) -> tuple[int, ...]:
    """Images per class in :data:`PHANTOM_CLASSES` order, checked."""
    if n_per_class is not None and class_counts is not None:
        raise ConfigError(
            "n_per_class and class_counts are both given; use n_per_class for equal classes "
            "or class_counts for per-class numbers, not both"
        )
    if class_counts is None:
        n = DEFAULT_N_PER_CLASS if n_per_class is None else n_per_class
        if not _is_int(n) or n < 1:
            raise ConfigError(f"n_per_class={n!r} is invalid; use an integer of at least 1")
        return (int(n),) * len(PHANTOM_CLASSES)
    if isinstance(class_counts, Mapping):
        unknown = sorted(set(class_counts) - set(PHANTOM_CLASSES))
        missing = [c for c in PHANTOM_CLASSES if c not in class_counts]
        if unknown or missing:
            raise ConfigError(
                f"class_counts: {'unknown class(es) ' + ', '.join(map(str, unknown)) if unknown else ''}"
                f"{'; ' if unknown and missing else ''}"
                f"{'missing class(es) ' + ', '.join(missing) if missing else ''}; "
                f"give a count for each of {', '.join(PHANTOM_CLASSES)}"
            )
        counts = [class_counts[c] for c in PHANTOM_CLASSES]
    elif isinstance(class_counts, (str, bytes)) or not isinstance(class_counts, Sequence):
        raise ConfigError(
            f"class_counts={class_counts!r} is invalid; give a mapping of class to count or "
            f"{len(PHANTOM_CLASSES)} counts in the order {', '.join(PHANTOM_CLASSES)}"
        )
    else:
        counts = list(class_counts)
        if len(counts) != len(PHANTOM_CLASSES):
            raise ConfigError(
                f"class_counts has {len(counts)} values; give {len(PHANTOM_CLASSES)}, one per class "
                f"in the order {', '.join(PHANTOM_CLASSES)}"
            )
    bad = [f"{c}={n!r}" for c, n in zip(PHANTOM_CLASSES, counts) if not _is_int(n) or n < 1]
    if bad:
        raise ConfigError(f"class_counts: {', '.join(bad)} invalid; every class needs a whole number of at least 1")
    return tuple(int(n) for n in counts)


def _check_generate_args(
    seed: int,
    image_size: int,
    images_per_patient: float,
    confounder_strength: float,
    nonsquare_fraction: float,
) -> None:
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed={seed!r} is invalid; use a non-negative integer")
    if not _is_int(image_size) or image_size < 64:
        raise ConfigError(f"image_size={image_size!r} is too small; use an integer of at least 64 pixels")
    if (
        not isinstance(images_per_patient, (int, float, np.number))
        or isinstance(images_per_patient, bool)
        or not 1 <= images_per_patient < math.inf
    ):
        raise ConfigError(
            f"images_per_patient={images_per_patient!r} is invalid; use a finite number of at least 1 "
            "(the mean number of films per patient)"
        )
    if not isinstance(confounder_strength, (int, float, np.floating)) or not 0.5 <= confounder_strength <= 1.0:
        raise ConfigError(
            f"confounder_strength={confounder_strength!r} is invalid; use a number in [0.5, 1] "
            "(0.5 = artifact independent of class, 1 = artifact exactly on COVID-19)"
        )
    if not isinstance(nonsquare_fraction, (int, float, np.floating)) or not 0.0 <= nonsquare_fraction <= 1.0:
        raise ConfigError(f"nonsquare_fraction={nonsquare_fraction!r} is invalid; use a number in [0, 1]")


def _patient_sizes(n: int, mean: float, rng: np.random.Generator) -> list[int]:
    """Split ``n`` images into patients of ``1 + Poisson(mean - 1)`` images."""
    sizes: list[int] = []
    while sum(sizes) < n:
        k = 1 + int(rng.poisson(mean - 1.0))
        sizes.append(min(k, n - sum(sizes)))
    return sizes


def _crop_width(image: np.ndarray, mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop columns to ``width``, centred on the lungs (a collimated film)."""
    columns = np.flatnonzero(mask.any(axis=0))
    centre = (columns[0] + columns[-1] + 1) // 2 if columns.size else image.shape[1] // 2
    left = int(np.clip(centre - width // 2, 0, image.shape[1] - width))
    return image[:, left : left + width], mask[:, left : left + width]


def _save_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array, mode="L").save(tmp, format="PNG", optimize=False)


def _render_chunk(
    items: list[tuple[int, int, int, int, str, bool]], settings: tuple[int, int, int, float, float, Path]
) -> list[dict[str, object]]:
    """Draw and save some phantom images; return their manifest rows (a joblib task)."""
    seed, size, narrow, nonsquare_fraction, strength, out = settings
    lo, hi = SEVERITY_RANGE
    rows = []
    for n, c, p, i, source, burned in items:
        label = PHANTOM_CLASSES[c]
        patient_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, c, p)))
        patient = sample_anatomy(patient_rng)
        level = patient_rng.uniform(lo, hi)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, c, p, i)))
        severity = 0.0 if label == "Normal" else float(np.clip(level + _SEVERITY_JITTER * rng.standard_normal(), lo, hi))
        view: View = "AP" if rng.random() < _AP_PROBABILITY else "PA"
        crop = bool(rng.random() < nonsquare_fraction)
        case = render_phantom_case(label, severity, rng, size=size, artifact=burned, anatomy=patient, view=view,
                                   signature_strength=strength)
        image, mask = case.image, case.mask
        if crop:
            image, mask = _crop_width(image, mask, narrow)
        image_id = f"ph{n:06d}"
        _save_png(out / "images" / f"{image_id}.png", image)
        _save_png(out / "masks" / f"{image_id}.png", (mask * 255).astype(np.uint8))
        rows.append(
            {
                "image_id": image_id,
                "path": f"images/{image_id}.png",
                "label": label,
                "patient_id": f"pat{c}{p:04d}",
                "source": source,
                "view": view,
                "severity": round(severity, 6),
                "mask_path": f"masks/{image_id}.png",
                "artifact": burned,
                "side": case.side,
                "lobe": case.lobe,
                "height": image.shape[0],
                "width": image.shape[1],
                "signature_strength": strength,
            }
        )
    return rows


def generate_phantom(
    out_dir: str | Path,
    *,
    n_per_class: int | None = None,
    class_counts: Mapping[str, int] | Sequence[int] | None = None,
    seed: int = 0,
    image_size: int = 256,
    images_per_patient: float = 2,
    confounder: bool = False,
    confounder_strength: float = 0.8,
    nonsquare_fraction: float = _NONSQUARE_FRACTION,
    signature_strength: float = 1.0,
    jobs: int = 1,
) -> Path:
    """Write a phantom dataset: images, lung masks and a manifest CSV.

    Layout: ``out_dir/images/<image_id>.png`` (8-bit grey),
    ``out_dir/masks/<image_id>.png`` (lung fields, 0 or 255) and
    ``out_dir/phantom.csv`` with :data:`MANIFEST_COLUMNS`. The CSV is written
    last and atomically (an existing one is removed first), so an interrupted
    run leaves no manifest.

    Each class gets ``n_per_class`` images (or its ``class_counts`` entry) from patients of ``1 +
    Poisson(images_per_patient - 1)`` films each; a patient's films share the
    anatomy (with small positioning/inspiration changes), the label and the
    source, and differ in severity (patient level + N(0, 0.12), clipped to
    :data:`SEVERITY_RANGE`), view (AP with probability 0.3) and exposure. A
    ``nonsquare_fraction`` of films is cropped to ``image_size x
    round(7/8 image_size)`` (portrait), centred on the lungs.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
    n_per_class : int, optional
        Images per class (at least 1); 40 when neither this nor
        ``class_counts`` is given.
    class_counts : mapping of str to int, or sequence of int, optional
        Images per class instead of ``n_per_class`` (give one or the other):
        a mapping with every class of :data:`PHANTOM_CLASSES`, or one count
        per class in that order; each at least 1. ``PAPER_CLASS_COUNTS``
        gives the paper's 3,905 images; :func:`parse_class_counts` scales
        them. With equal counts the files are those of ``n_per_class``.
    seed : int, default 0
        Seed of ``np.random.SeedSequence``; one seed gives identical files.
    image_size : int, default 256
        Height of every image in pixels (at least 64).
    images_per_patient : float, default 2
        Mean number of films per patient (at least 1).
    confounder : bool, default False
        Plant the source confounder: a patient is from ``site_B`` with
        probability ``confounder_strength`` if COVID-19 and ``1 -
        confounder_strength`` otherwise, and every ``site_B`` film carries the
        burned-in tag (``artifact`` is True exactly for ``site_B``). When
        False, ``source`` is ``site_A``/``site_B`` with probability 1/2
        independent of class, and no tag is drawn.
    confounder_strength : float, default 0.8
        In ``[0.5, 1]``; only used when ``confounder`` is True.
    nonsquare_fraction : float, default 0.25
        Fraction of films cropped to a portrait shape (exercises letterboxing).
    signature_strength : float, default 1.0
        Multiplies every planted signature's amplitude (in ``(0, 4]``; see
        :func:`biomark.data.phantom_signatures.signature_density`). The default
        phantom is hard on purpose; a demo that must train in minutes on a
        CPU may plant stronger signatures. Recorded in the manifest's
        ``signature_strength`` column. Everything else (patients, positions,
        exposure, severities) is the same for every strength.
    jobs : int, default 1
        Processes drawing the images (-1: all cores). The files do not depend
        on it.

    Returns
    -------
    Path
        ``out_dir/phantom.csv``.

    Raises
    ------
    ConfigError
        An argument is out of range, or both ``n_per_class`` and
        ``class_counts`` are given (the message names it and the fix).

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     csv = generate_phantom(tmp, n_per_class=2, image_size=64)
    ...     len(pd.read_csv(csv))
    14
    """
    import pandas as pd

    counts = _resolve_counts(n_per_class, class_counts)
    _check_generate_args(seed, image_size, images_per_patient, confounder_strength, nonsquare_fraction)
    if isinstance(signature_strength, bool) or not isinstance(signature_strength, (int, float, np.number)) or not (
        0.0 < float(signature_strength) <= 4.0
    ):
        raise ConfigError(
            f"signature_strength={signature_strength!r} is invalid; use a number in (0, 4] (1 = the default phantom)"
        )
    out = Path(out_dir)
    csv_path = out / "phantom.csv"
    if csv_path.exists():
        logger.info("removing the previous manifest %s before regenerating", csv_path)
        csv_path.unlink()
    size = int(image_size)
    narrow = int(round(size * _NONSQUARE_ASPECT))

    # The plan: who is who, from their own streams (order-independent).
    plan: list[tuple[int, int, int, str, bool]] = []  # (class, patient, film, source, artifact)
    for c, label in enumerate(PHANTOM_CLASSES):
        sizes = _patient_sizes(counts[c], float(images_per_patient), np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, c))))
        for p, k in enumerate(sizes):
            u = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, c, p))).random()
            if confounder:
                p_site_b = confounder_strength if label == _CONFOUNDED_CLASS else 1.0 - confounder_strength
                on = bool(u < p_site_b)
                source, burned = ("site_B" if on else "site_A"), on
            else:
                source, burned = ("site_B" if u < 0.5 else "site_A"), False
            plan.extend((c, p, i, source, burned) for i in range(k))

    from joblib import Parallel, delayed

    settings = (int(seed), size, narrow, float(nonsquare_fraction), float(signature_strength), out)
    items = [(n, *entry) for n, entry in enumerate(plan)]
    chunk = max(1, min(64, len(items) // (4 * max(1, abs(int(jobs)))) or 1))
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    rows: list[dict[str, object]] = []
    with progress(total=len(items), desc="phantom", unit="img") as bar:
        # Every image draws from its own SeedSequence child, so the files are
        # the same whatever the number of processes or the chunking.
        for done in Parallel(n_jobs=jobs, return_as="generator")(
            delayed(_render_chunk)(part, settings) for part in chunks
        ):
            rows.extend(done)
            bar.update(len(done))
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    write_json_atomic(out / SETTINGS_FILE, {
        "class_counts": dict(zip(PHANTOM_CLASSES, (int(c) for c in counts))), "seed": int(seed),
        "image_size": size, "images_per_patient": float(images_per_patient), "confounder": bool(confounder),
        "confounder_strength": float(confounder_strength), "nonsquare_fraction": float(nonsquare_fraction),
        "signature_strength": float(signature_strength),
    })
    write_csv_atomic(csv_path, frame)
    logger.info("wrote %d phantom images (%d patients) to %s", len(frame), frame["patient_id"].nunique(), out)
    return csv_path
