"""One phantom radiograph: anatomy, the class signature, exposure and the optional source tag.

:func:`render_phantom_case` draws one image and its lung mask from a generator
(pure: all randomness from ``rng``); :func:`biomark.data.phantom.generate_phantom`
calls it for every film of a phantom dataset. ``data/PHANTOM.md`` documents the
anatomy and every signature.

Examples
--------
>>> import numpy as np
>>> case = render_phantom_case("Effusion", 0.8, np.random.default_rng(0), size=128)
>>> case.image.shape, case.side in ("left", "right")
((128, 128), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from biomark.data.phantom_anatomy import (
    Anatomy,
    Frame,
    View,
    anatomy_density,
    build_frame,
    jitter_anatomy,
    sample_anatomy,
)
from biomark.data.phantom_signatures import PHANTOM_CLASSES, disease_anatomy, signature_density
from biomark.exceptions import ConfigError

__all__ = ["PhantomCase", "render_phantom", "render_phantom_case", "signature_burden"]


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
    burden : float
        How much signature the film holds: the density the signature adds,
        summed over the image, as a share of the density the patient's
        aerated lungs remove (:func:`signature_burden`). 0 for Normal; NaN
        for Emphysema, whose signature changes the anatomy instead of adding
        density.
    """

    image: np.ndarray
    mask: np.ndarray
    side: str
    lobe: str
    artifact: np.ndarray
    burden: float = float("nan")


def signature_burden(label: str, delta: np.ndarray, frame: Frame, anatomy: Anatomy) -> float:
    """The amount of signature in one film, as a share of the lungs' aeration.

    The planted ``severity`` says how strong a signature is where it lies; the
    burden also counts how much lung it covers. They differ where the extent
    is drawn at random: a Pneumonia of one severity consolidates whichever
    lobe was drawn, and the lobes differ in size (on the demo phantom the
    median ratio of burden to severity is 0.15 in the right lower lobe and
    0.38 in the left upper), so a feature that sums a finding over the image (a
    GAP unit, a whole-lung radiomic feature) can track the burden while it
    tracks the severity only loosely.

    Parameters
    ----------
    label : str
        One of :data:`PHANTOM_CLASSES`.
    delta : np.ndarray of shape (size, size)
        The density the signature adds
        (:func:`biomark.data.phantom_signatures.signature_density`).
    frame : Frame
        The geometry the signature was drawn on.
    anatomy : Anatomy
        The disease-modified patient (its ``lung_density``).

    Returns
    -------
    float
        ``sum(delta) / sum(lung_density * lung_soft)``: 0 for Normal, NaN for
        Emphysema (a geometric signature: larger, darker lungs).
    """
    if label == "Emphysema":
        return float("nan")
    aeration = float(np.sum(frame.lung_soft, dtype=np.float64)) * float(anatomy.lung_density)
    if aeration <= 0:
        return float("nan")
    return float(np.sum(delta, dtype=np.float64)) / aeration


def _check_label(label: str) -> None:
    if label not in PHANTOM_CLASSES:
        raise ConfigError(
            f"label={label!r} is not a phantom class; use one of {', '.join(PHANTOM_CLASSES)}"
        )


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
    delta, info = signature_density(
        label, severity, frame, diseased, np.random.default_rng(sig_seed), signature_strength
    )
    grey = _expose(density + delta, np.random.default_rng(noise_seed))
    image = np.round(grey * 255.0).astype(np.uint8)
    mask = frame.lung_mask
    tag = np.zeros((size, size), dtype=bool)
    if artifact:
        tag_rng = np.random.default_rng(tag_seed)
        tag = _artifact_tag(size, mask, tag_rng)
        image[tag] = np.uint8(tag_rng.integers(235, 256))
    return PhantomCase(
        image=image,
        mask=mask,
        side=info["side"],
        lobe=info["lobe"],
        artifact=tag,
        burden=signature_burden(label, delta, frame, diseased),
    )


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
    case = render_phantom_case(
        label, severity, rng, size=size, artifact=artifact, anatomy=anatomy, view=view
    )
    return case.image, case.mask
