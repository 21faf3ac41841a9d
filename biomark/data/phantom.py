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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from biomark.config.seeds import check_seed
from biomark.data.phantom_anatomy import Anatomy, View, sample_anatomy
from biomark.data.phantom_render import PhantomCase, render_phantom, render_phantom_case
from biomark.data.phantom_signatures import LOBES, PHANTOM_CLASSES, SIGNATURES
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
    "burden",
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
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float, np.number))
        or not 0 < scale < math.inf
    ):
        raise ConfigError(
            f"scale={scale!r} is invalid; use a positive number (0.1 keeps a tenth of every class)"
        )
    value = str(text).strip()
    if value.lower() == "paper":
        counts = list(PAPER_CLASS_COUNTS.values())
    else:
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != len(PHANTOM_CLASSES) or not all(p.isdigit() for p in parts):
            raise ConfigError(
                f"counts={text!r} is invalid; use 'paper' or {len(PHANTOM_CLASSES)} "
                "comma-separated whole numbers, one per class in the order "
                f"{', '.join(PHANTOM_CLASSES)}"
            )
        counts = [int(p) for p in parts]
        zero = [c for c, n in zip(PHANTOM_CLASSES, counts, strict=True) if n < 1]
        if zero:
            raise ConfigError(
                f"counts={text!r}: every class needs at least 1 image ({', '.join(zero)} got 0)"
            )
    scaled = [max(1, math.floor(n * float(scale) + 0.5)) for n in counts]
    return dict(zip(PHANTOM_CLASSES, scaled, strict=True))


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
                "class_counts: "
                f"{'unknown class(es) ' + ', '.join(map(str, unknown)) if unknown else ''}"
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
                f"class_counts has {len(counts)} values; give {len(PHANTOM_CLASSES)}, one per "
                f"class in the order {', '.join(PHANTOM_CLASSES)}"
            )
    bad = [
        f"{c}={n!r}"
        for c, n in zip(PHANTOM_CLASSES, counts, strict=True)
        if not _is_int(n) or n < 1
    ]
    if bad:
        raise ConfigError(
            f"class_counts: {', '.join(bad)} invalid; every class needs a whole number of at least "
            "1"
        )
    return tuple(int(n) for n in counts)


def _check_generate_args(
    seed: int,
    image_size: int,
    images_per_patient: float,
    confounder_strength: float,
    nonsquare_fraction: float,
) -> None:
    check_seed(seed, "seed")
    if not _is_int(image_size) or image_size < 64:
        raise ConfigError(
            f"image_size={image_size!r} is too small; use an integer of at least 64 pixels"
        )
    if (
        not isinstance(images_per_patient, (int, float, np.number))
        or isinstance(images_per_patient, bool)
        or not 1 <= images_per_patient < math.inf
    ):
        raise ConfigError(
            f"images_per_patient={images_per_patient!r} is invalid; use a finite number of at "
            "least 1 (the mean number of films per patient)"
        )
    if (
        not isinstance(confounder_strength, (int, float, np.floating))
        or not 0.5 <= confounder_strength <= 1.0
    ):
        raise ConfigError(
            f"confounder_strength={confounder_strength!r} is invalid; use a number in [0.5, 1] "
            "(0.5 = artifact independent of class, 1 = artifact exactly on COVID-19)"
        )
    if (
        not isinstance(nonsquare_fraction, (int, float, np.floating))
        or not 0.0 <= nonsquare_fraction <= 1.0
    ):
        raise ConfigError(
            f"nonsquare_fraction={nonsquare_fraction!r} is invalid; use a number in [0, 1]"
        )


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
    items: list[tuple[int, int, int, int, str, bool]],
    settings: tuple[int, int, int, float, float, Path],
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
        severity = (
            0.0
            if label == "Normal"
            else float(np.clip(level + _SEVERITY_JITTER * rng.standard_normal(), lo, hi))
        )
        view: View = "AP" if rng.random() < _AP_PROBABILITY else "PA"
        crop = bool(rng.random() < nonsquare_fraction)
        case = render_phantom_case(
            label,
            severity,
            rng,
            size=size,
            artifact=burned,
            anatomy=patient,
            view=view,
            signature_strength=strength,
        )
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
                "burden": round(case.burden, 6),
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
    _check_generate_args(
        seed, image_size, images_per_patient, confounder_strength, nonsquare_fraction
    )
    if (
        isinstance(signature_strength, bool)
        or not isinstance(signature_strength, (int, float, np.number))
        or not (0.0 < float(signature_strength) <= 4.0)
    ):
        raise ConfigError(
            f"signature_strength={signature_strength!r} is invalid; use a number in (0, 4] (1 = "
            "the default phantom)"
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
        sizes = _patient_sizes(
            counts[c],
            float(images_per_patient),
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, c))),
        )
        for p, k in enumerate(sizes):
            u = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, c, p))).random()
            if confounder:
                p_site_b = (
                    confounder_strength if label == _CONFOUNDED_CLASS else 1.0 - confounder_strength
                )
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
    write_json_atomic(
        out / SETTINGS_FILE,
        {
            "class_counts": dict(zip(PHANTOM_CLASSES, (int(c) for c in counts), strict=True)),
            "seed": int(seed),
            "image_size": size,
            "images_per_patient": float(images_per_patient),
            "confounder": bool(confounder),
            "confounder_strength": float(confounder_strength),
            "nonsquare_fraction": float(nonsquare_fraction),
            "signature_strength": float(signature_strength),
        },
    )
    write_csv_atomic(csv_path, frame)
    logger.info(
        "wrote %d phantom images (%d patients) to %s",
        len(frame),
        frame["patient_id"].nunique(),
        out,
    )
    return csv_path
