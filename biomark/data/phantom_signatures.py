"""The planted disease signatures of the phantom, one per class.

Every signature lives in the lung fields and grows with a continuous
``severity`` in ``[0, 1]`` (0 = absent; the haze and texture signatures scale
as ``0.2 + 0.8 * severity`` so that mild cases are faint, not invisible).
Most add density to the lungs (an opacity); emphysema instead changes the
geometry and the aeration (larger, darker lungs with flat diaphragms), and
fibrosis adds a fine net-like texture with a little volume loss. The
amplitudes are in the density units of :mod:`biomark.data.phantom_anatomy`
(aerated lung removes about 0.26-0.33).

=========  ==================================================================
COVID-19   patchy ground-glass haze in the peripheral, lower zones, both lungs
Edema      perihilar ("bat-wing") haze, symmetric about the hila
Effusion   dense basal fluid with a meniscus rising laterally, one or both sides
Emphysema  hyperlucent, larger lungs, flat low diaphragm, pruned vessels
Fibrosis   basal, peripheral reticular (net-like, high-frequency) texture
Pneumonia  dense consolidation of one lobe with a sharp fissural border
Normal     none
=========  ==================================================================
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from biomark.data.labels import CANONICAL_CLASSES
from biomark.data.phantom_anatomy import Anatomy, Frame, smooth_noise, smoothstep

__all__ = [
    "LOBES",
    "PHANTOM_CLASSES",
    "SIGNATURES",
    "disease_anatomy",
    "signature_density",
]

logger = logging.getLogger(__name__)

#: The phantom has exactly the paper's seven classes, in the paper's order.
PHANTOM_CLASSES: tuple[str, ...] = CANONICAL_CLASSES

SIGNATURES: dict[str, str] = {
    "COVID-19": "bilateral patchy ground-glass haze in the peripheral lower lung zones",
    "Edema": "symmetric perihilar (central, bat-wing) haze fading towards the periphery",
    "Effusion": (
        "dense basal fluid with a meniscus rising laterally (blunted costophrenic angle), one or "
        "both sides"
    ),
    "Emphysema": (
        "hyperlucent, enlarged lungs with a low flattened diaphragm and pruned peripheral vessels"
    ),
    "Fibrosis": "basal peripheral reticular (net-like, high-frequency) texture",
    "Pneumonia": "dense lobar consolidation of one lobe with a sharp border along the fissure",
    "Normal": "none",
}

#: Lobes a pneumonia can consolidate: right upper/middle/lower, left upper/lower.
LOBES: tuple[str, ...] = ("RUL", "RML", "RLL", "LUL", "LLL")

# Amplitudes at severity 1, in density units.
COVID_HAZE = 0.36
EDEMA_HAZE = 0.24
EFFUSION_FILL = 0.9  # fraction of the lung's aeration replaced by fluid
FIBROSIS_NET = 0.22
PNEUMONIA_FILL = (0.3, 0.7)  # fill fraction = a + b * severity
EMPHYSEMA_AERATION = 0.3  # relative increase of lung_density


def disease_anatomy(
    label: str, severity: float, anatomy: Anatomy, strength: float = 1.0
) -> Anatomy:
    """Apply the geometric part of a signature to a patient's anatomy.

    Parameters
    ----------
    label : str
        One of :data:`PHANTOM_CLASSES`.
    severity : float
        In ``[0, 1]``.
    anatomy : Anatomy
        The patient.
    strength : float, default 1.0
        Multiplies every change (the dome flattening stops at flat).

    Returns
    -------
    Anatomy
        For Emphysema: lower and flatter diaphragm, wider and darker lungs,
        narrower heart, wider rib spacing, pruned vessels. Otherwise
        ``anatomy`` unchanged.
    """
    a, sev = anatomy, float(severity) * float(strength)
    if label == "Emphysema":
        return dataclasses.replace(
            a,
            base_y=a.base_y + 0.07 * sev,
            dome_height=a.dome_height * max(0.0, 1.0 - 0.75 * sev),
            lung_half_width=a.lung_half_width * (1.0 + 0.05 * sev),
            lung_density=a.lung_density * (1.0 + EMPHYSEMA_AERATION * sev),
            heart_half_width=a.heart_half_width * (1.0 - 0.12 * sev),
            rib_spacing=a.rib_spacing * (1.0 + 0.06 * sev),
            vessel_pruning=0.6 * sev,
        )
    return a


def _ramp(sev: float) -> float:
    """Amplitude factor of the haze/texture signatures: 0.2 + 0.8 severity (0 when absent)."""
    return 0.2 + 0.8 * sev if sev > 0 else 0.0


def _unit_noise(frame: Frame, sigma_frac: float, rng: np.random.Generator) -> np.ndarray:
    return smooth_noise(frame.size, max(0.5, sigma_frac * frame.size), rng)


def _side_mask(frame: Frame, side: str) -> np.ndarray:
    if side == "right":
        return (frame.dx < 0).astype(np.float32)
    if side == "left":
        return (frame.dx >= 0).astype(np.float32)
    return np.ones((frame.size, frame.size), dtype=np.float32)


def _covid(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    weight = smoothstep(frame.s, 0.4, 0.85) * smoothstep(frame.t, 0.3, 0.7)
    patches = np.clip(0.6 + 0.5 * _unit_noise(frame, 0.035, rng), 0.0, 1.4)
    sides = np.where(frame.dx < 0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)).astype(np.float32)
    return strength * COVID_HAZE * _ramp(sev) * weight * patches * sides * frame.lung_soft, {
        "side": "bilateral"
    }


def _edema(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    haze = np.zeros((frame.size, frame.size), dtype=np.float32)
    for sign, (hdx, hy) in zip((-1.0, 1.0), frame.hila, strict=True):
        d2 = ((frame.dx - hdx - sign * 0.04) / 0.1) ** 2 + ((frame.y - hy) / 0.13) ** 2
        haze += np.exp(-0.5 * d2) * _side_mask(frame, "left" if sign > 0 else "right")
    texture = 0.85 + 0.15 * _unit_noise(frame, 0.02, rng)
    return strength * EDEMA_HAZE * _ramp(sev) * haze * texture * frame.lung_soft, {
        "side": "bilateral"
    }


def _effusion(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3]))
    lung_height = anatomy.base_y - anatomy.apex_y
    height = min(1.0, (0.05 + 0.3 * sev) * strength) * lung_height
    # Concave-up meniscus: the fluid climbs the lateral chest wall.
    top = anatomy.base_y - height * (0.3 + 0.7 * np.clip(frame.s, 0.0, 1.0) ** 2)
    fluid = smoothstep(frame.y - top, -0.004, 0.006) * _side_mask(frame, side)
    layering = 0.85 + 0.15 * smoothstep(frame.y - top, 0.0, 0.08)
    fill = EFFUSION_FILL * anatomy.lung_density * layering
    return fill * fluid * frame.lung_soft, {"side": side}


def _fibrosis(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    band = _unit_noise(frame, 0.016, rng) - 0.5 * _unit_noise(frame, 0.05, rng)
    band /= band.std() + 1e-8
    net = np.exp(-((band / 0.4) ** 2))  # bright thin lines along the zero crossings
    weight = smoothstep(frame.t, 0.4, 0.85) * (0.45 + 0.55 * smoothstep(frame.s, 0.3, 0.8))
    return strength * FIBROSIS_NET * _ramp(sev) * (net - 0.1) * weight * frame.lung_soft, {
        "side": "bilateral"
    }


def _lobe_weight(frame: Frame, lobe: str) -> np.ndarray:
    """Soft region of one lobe with a sharp border along its fissure."""
    t, s = frame.t, frame.s
    sharp = lambda v: smoothstep(v, -0.012, 0.012)  # noqa: E731 - a local one-liner
    if lobe == "RUL":
        region = sharp(0.45 + 0.05 * s - t)
    elif lobe == "RML":
        region = (
            sharp(t - 0.45 - 0.05 * s)
            * smoothstep(0.62 - s, -0.05, 0.05)
            * smoothstep(0.9 - t, -0.05, 0.05)
        )
    elif lobe == "RLL":
        rml = smoothstep(0.62 - s, -0.05, 0.05) * smoothstep(0.9 - t, -0.05, 0.05)
        region = sharp(t - 0.45 - 0.05 * s) * (1.0 - rml)
    elif lobe == "LUL":
        region = sharp(0.58 - 0.12 * s - t)
    else:  # LLL
        region = sharp(t - 0.58 + 0.12 * s)
    return region * _side_mask(frame, "right" if lobe.startswith("R") else "left")


def _pneumonia(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    lobe = str(rng.choice(LOBES))
    patches = np.clip(0.85 + 0.15 * _unit_noise(frame, 0.02, rng), 0.6, 1.0)
    fill = (
        1.0 - (1.0 - (PNEUMONIA_FILL[0] + PNEUMONIA_FILL[1] * sev)) ** strength
    ) * anatomy.lung_density
    side = "right" if lobe.startswith("R") else "left"
    return fill * _lobe_weight(frame, lobe) * patches * frame.lung_soft, {
        "side": side,
        "lobe": lobe,
    }


def _none(
    frame: Frame, anatomy: Anatomy, sev: float, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, dict[str, str]]:
    return np.zeros((frame.size, frame.size), dtype=np.float32), {
        "side": "bilateral" if sev > 0 else "none"
    }


_DENSITY: dict[
    str,
    Callable[
        [Frame, Anatomy, float, np.random.Generator, float], tuple[np.ndarray, dict[str, str]]
    ],
] = {
    "COVID-19": _covid,
    "Edema": _edema,
    "Effusion": _effusion,
    "Emphysema": _none,  # geometric: see disease_anatomy
    "Fibrosis": _fibrosis,
    "Pneumonia": _pneumonia,
    "Normal": _none,
}


def signature_density(
    label: str,
    severity: float,
    frame: Frame,
    anatomy: Anatomy,
    rng: np.random.Generator,
    strength: float = 1.0,
) -> tuple[np.ndarray, dict[str, str]]:
    """The density a signature adds to the lung fields.

    Parameters
    ----------
    label : str
        One of :data:`PHANTOM_CLASSES`.
    severity : float
        In ``[0, 1]``; 0 gives a zero map.
    frame : Frame
        Geometry of the (disease-modified) anatomy.
    anatomy : Anatomy
        The disease-modified anatomy (its ``lung_density`` sets how much
        fluid or consolidation can whiten a lung).
    rng : numpy.random.Generator
        Randomness of the signature (patches, side, lobe, texture).
    strength : float, default 1.0
        Multiplies the signature's amplitude: the added density of the haze
        and texture signatures (COVID-19, Edema, Fibrosis), the height of an
        effusion (at most the lung's), and, for Pneumonia, the aeration left
        in the lobe is raised to this power (``1 - (1 - fill) ** strength``,
        so the fill stays below 1 and grows with severity). Severity keeps
        its meaning; ``strength`` > 1 makes every case easier to see.

    Returns
    -------
    delta : np.ndarray of shape (size, size), float32
        Added density; zero outside the (slightly blurred) lung fields.
    info : dict of str to str
        Ground truth: ``side`` ("right", "left", "bilateral" or "none") and,
        for Pneumonia, ``lobe`` (one of :data:`LOBES`).
    """
    delta, info = _DENSITY[label](frame, anatomy, float(severity), rng, float(strength))
    if label == "Normal" or severity <= 0:
        info = {"side": "none"}
        delta = np.zeros_like(delta)
    info.setdefault("lobe", "none")
    return delta.astype(np.float32), info
