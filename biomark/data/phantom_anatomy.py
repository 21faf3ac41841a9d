"""Anatomy of the phantom chest radiograph: body, lungs, heart, bones, vessels.

The phantom is drawn in *density* units (bright = dense, 0 = air outside the
body) on a grid of normalised coordinates ``x, y`` in ``[0, 1]`` (``y`` grows
downwards, the patient faces the viewer, so the patient's right lung is on the
image's left). :mod:`biomark.data.phantom` maps density to 8-bit grey values
with a random exposure.

The pieces, each a pure function of an :class:`Anatomy` (one per patient):

* :func:`sample_anatomy` draws a patient (body and lung size, position,
  rotation, heart, rib spacing and phase, clavicles, breast shadows);
* :func:`jitter_anatomy` makes a follow-up film of the same patient (small
  changes of position, rotation and inspiration depth);
* :func:`build_frame` evaluates the geometry on a pixel grid: lung masks and
  the lung-local coordinates the disease signatures are placed with;
* :func:`anatomy_density` draws the normal chest into a density map.

Examples
--------
>>> import numpy as np
>>> frame = build_frame(Anatomy(), 64)
>>> frame.lung_mask.shape, bool(frame.lung_mask.any())
((64, 64), True)
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "Anatomy",
    "Frame",
    "View",
    "anatomy_density",
    "blur",
    "build_frame",
    "jitter_anatomy",
    "sample_anatomy",
    "smooth_noise",
    "smoothstep",
]

logger = logging.getLogger(__name__)

View = Literal["PA", "AP"]

_AP_HEART_MAGNIFICATION = 1.12
_AP_CLAVICLE_RISE = 0.03


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest, in normalised image coordinates.

    Lengths are fractions of the image side; ``y`` grows downwards. The
    defaults are an average adult on a well-centred PA film.

    Attributes
    ----------
    center_x : float
        Midline (spine) position.
    center_y : float
        Vertical offset added to every structure (positioning).
    rotation_deg : float
        In-plane rotation of the whole chest about the image centre.
    body_half_width, neck_half_width : float
        Half-width of the torso and of the neck.
    shoulder_y : float
        Where the neck widens into the shoulders.
    lung_half_width : float
        Half the width of one lung.
    mediastinum_half_width : float
        Distance from the midline to the medial border of a lung.
    apex_y : float
        Top of the lungs.
    base_y : float
        Level of the lateral costophrenic angles (lowest point of the lungs).
    dome_height : float
        Height of the right hemidiaphragm dome above ``base_y``.
    dome_asymmetry : float
        How much lower the left dome is than the right.
    heart_half_width, heart_half_height, heart_shift : float
        Heart ellipse; ``heart_shift`` moves it to the patient's left.
    lung_density : float
        Density removed by aerated lung (larger = darker lung fields).
    soft_tissue : float
        Density of the body at its thickest.
    rib_spacing : float
        Vertical distance between posterior ribs.
    rib_phase : float
        Phase of the rib pattern, a fraction of ``rib_spacing``.
    rib_curvature : float
        How strongly the posterior ribs arch.
    clavicle_y : float
        Height of the clavicles at their middle.
    breast_shadow : float
        Density of soft-tissue (breast) shadows over the lower lateral zones
        (0 for none): a benign nuisance that mimics basal opacities.
    vessel_pruning : float
        Loss of peripheral vessel markings in ``[0, 1]`` (0 normal); set by
        the emphysema signature.
    texture_seed : int
        Seed of the patient's vessel pattern and lung texture, so that a
        patient's films share them.
    """

    center_x: float = 0.5
    center_y: float = 0.0
    rotation_deg: float = 0.0
    body_half_width: float = 0.41
    neck_half_width: float = 0.11
    shoulder_y: float = 0.12
    lung_half_width: float = 0.155
    mediastinum_half_width: float = 0.06
    apex_y: float = 0.15
    base_y: float = 0.74
    dome_height: float = 0.07
    dome_asymmetry: float = 0.02
    heart_half_width: float = 0.155
    heart_half_height: float = 0.11
    heart_shift: float = 0.06
    lung_density: float = 0.30
    soft_tissue: float = 0.55
    rib_spacing: float = 0.07
    rib_phase: float = 0.0
    rib_curvature: float = 0.3
    clavicle_y: float = 0.17
    breast_shadow: float = 0.0
    vessel_pruning: float = 0.0
    texture_seed: int = 0


@dataclass(frozen=True)
class Frame:
    """The anatomy evaluated on a ``size x size`` pixel grid.

    Attributes
    ----------
    size : int
        Side of the image in pixels.
    x, y : np.ndarray of shape (size, size), float32
        Normalised coordinates of every pixel in the chest's own (rotated)
        frame.
    dx : np.ndarray of shape (size, size)
        ``x - center_x``: signed distance from the midline (positive = the
        patient's left = image right).
    right_lung, left_lung : np.ndarray of shape (size, size), bool
        The patient's right lung (image left) and left lung.
    t : np.ndarray of shape (size, size)
        Lung-local height: 0 at the apex, 1 at the costophrenic angle.
    s : np.ndarray of shape (size, size)
        Lung-local lateral position: 0 at the medial border, 1 lateral.
    diaphragm_y : np.ndarray of shape (size, size)
        Height of the hemidiaphragm below each pixel.
    body : np.ndarray of shape (size, size)
        Relative body thickness in ``[0, 1]`` (0 = air outside the body).
    lung_soft : np.ndarray of shape (size, size)
        The lung mask slightly blurred (anti-aliased edges), in ``[0, 1]``.
    hila : tuple of (float, float)
        ``(dx, y)`` of the right and left hilum.
    """

    size: int
    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    right_lung: np.ndarray
    left_lung: np.ndarray
    t: np.ndarray
    s: np.ndarray
    diaphragm_y: np.ndarray
    body: np.ndarray
    lung_soft: np.ndarray
    hila: tuple[tuple[float, float], tuple[float, float]]

    @property
    def lung_mask(self) -> np.ndarray:
        """Both lung fields, ``uint8`` in ``{0, 1}``."""
        return (self.right_lung | self.left_lung).astype(np.uint8)

    def px(self, length: float) -> float:
        """A normalised length in pixels."""
        return length * self.size


def smoothstep(value: np.ndarray | float, lo: float, hi: float) -> np.ndarray:
    """Smooth 0 -> 1 ramp between ``lo`` and ``hi`` (cubic Hermite)."""
    z = np.clip((np.asarray(value, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return z * z * (3.0 - 2.0 * z)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; consumed in a fixed order.

    Returns
    -------
    Anatomy
    """
    u = rng.uniform
    scale = u(0.88, 1.04)  # overall body size
    lung_scale = u(0.92, 1.06)
    apex = u(0.11, 0.17)
    height = u(0.54, 0.62) * scale * lung_scale
    return Anatomy(
        center_x=0.5 + u(-0.04, 0.04),
        center_y=u(-0.03, 0.03),
        rotation_deg=u(-3.0, 3.0),
        body_half_width=0.41 * scale * u(0.95, 1.05),
        neck_half_width=0.11 * scale * u(0.85, 1.15),
        shoulder_y=apex - u(0.0, 0.04),
        lung_half_width=0.152 * scale * lung_scale,
        mediastinum_half_width=0.058 * scale * u(0.85, 1.15),
        apex_y=apex,
        base_y=apex + height,
        dome_height=u(0.045, 0.085) * scale,
        dome_asymmetry=u(0.0, 0.03),
        heart_half_width=0.15 * scale * u(0.88, 1.1),
        heart_half_height=0.105 * scale * u(0.9, 1.1),
        heart_shift=u(0.045, 0.075) * scale,
        lung_density=u(0.26, 0.33),
        soft_tissue=u(0.5, 0.6),
        rib_spacing=u(0.062, 0.078) * scale,
        rib_phase=u(0.0, 1.0),
        rib_curvature=u(0.22, 0.36),
        clavicle_y=apex + u(0.0, 0.04),
        breast_shadow=float(u(0.03, 0.07)) if rng.random() < 0.45 else 0.0,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def jitter_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient on another film: new position, rotation, inspiration.

    Parameters
    ----------
    anatomy : Anatomy
        The patient.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    Anatomy
        A copy with small changes of ``center_x``, ``center_y``,
        ``rotation_deg``, inspiration depth (``base_y``, ``dome_height``) and
        ``rib_phase``; identity (size, heart, texture) is kept.
    """
    u = rng.uniform
    breath = u(-0.02, 0.02)
    return dataclasses.replace(
        anatomy,
        center_x=anatomy.center_x + u(-0.015, 0.015),
        center_y=anatomy.center_y + u(-0.015, 0.015),
        rotation_deg=anatomy.rotation_deg + u(-1.5, 1.5),
        base_y=anatomy.base_y + breath,
        dome_height=anatomy.dome_height * u(0.9, 1.1),
        rib_phase=(anatomy.rib_phase + u(-0.15, 0.15)) % 1.0,
    )


def build_frame(anatomy: Anatomy, size: int, view: View = "PA") -> Frame:
    """Evaluate the anatomy's geometry on a ``size x size`` grid.

    Parameters
    ----------
    anatomy : Anatomy
        The patient (already modified by any disease that changes geometry).
    size : int
        Side of the image in pixels.
    view : {"PA", "AP"}
        AP films magnify the heart.

    Returns
    -------
    Frame
    """
    a = anatomy
    centers = (np.arange(size, dtype=np.float32) + 0.5) / size
    gy, gx = np.meshgrid(centers, centers, indexing="ij")
    theta = np.deg2rad(a.rotation_deg)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    x = cos * (gx - 0.5) + sin * (gy - 0.5) + 0.5
    y = -sin * (gx - 0.5) + cos * (gy - 0.5) + 0.5 - a.center_y
    dx = x - a.center_x

    # Body: a cylinder whose half-width narrows to the neck above the shoulders.
    shoulders = 1.12 * a.body_half_width
    half = (
        a.neck_half_width
        + (shoulders - a.neck_half_width) * smoothstep(y, a.shoulder_y - 0.07, a.shoulder_y + 0.03)
        - (shoulders - a.body_half_width) * smoothstep(y, a.shoulder_y + 0.03, a.shoulder_y + 0.35)
    )
    body = np.sqrt(np.clip(1.0 - (dx / half) ** 2, 0.0, 1.0))

    # Lungs: a superellipse per side, cut below by the diaphragm dome.
    m, w = a.mediastinum_half_width, a.lung_half_width
    side_dx = np.abs(dx)
    s = (side_dx - m) / (2.0 * w)
    t = (y - a.apex_y) / (a.base_y - a.apex_y)
    yc = a.base_y + 0.06
    b = yc - a.apex_y
    inside = (np.abs(s - 0.5) / 0.5) ** 2.4 + ((y - yc) / b) ** 2 <= 1.0
    dome_shape = np.clip(1.0 - ((s - 0.45) / 0.62) ** 2, 0.0, 1.0)
    left = (dx >= 0).astype(np.float32)
    dome = (a.dome_height - a.dome_asymmetry * left) * dome_shape
    diaphragm_y = a.base_y - dome + a.dome_asymmetry * left
    lungs = inside & (y < diaphragm_y) & (s > 0.0) & (body > 0.2)

    # Heart: an ellipse shifted to the patient's left; AP films magnify it.
    mag = _AP_HEART_MAGNIFICATION if view == "AP" else 1.0
    hw, hh = a.heart_half_width * mag, a.heart_half_height * mag
    hy = a.base_y - a.dome_height - 0.6 * hh
    heart = ((dx - a.heart_shift * mag) / hw) ** 2 + ((y - hy) / hh) ** 2 <= 1.0
    lungs &= ~heart

    right_lung = lungs & (dx < 0)
    left_lung = lungs & (dx >= 0)
    sigma = max(0.6, 0.004 * size)
    lung_soft = blur(lungs.astype(np.float32), sigma)
    hilum_y = a.apex_y + 0.5 * (a.base_y - a.apex_y)
    hilum_dx = m + 0.2 * w
    return Frame(
        size=size,
        x=x,
        y=y,
        dx=dx,
        right_lung=right_lung,
        left_lung=left_lung,
        t=t.astype(np.float32),
        s=s.astype(np.float32),
        diaphragm_y=diaphragm_y.astype(np.float32),
        body=body.astype(np.float32),
        lung_soft=lung_soft,
        hila=((-hilum_dx, hilum_y), (hilum_dx, hilum_y)),
    )


def _band(phase: np.ndarray, width: float) -> np.ndarray:
    """Periodic bright bands of relative ``width`` (period 1), flat-topped."""
    c = np.cos(2.0 * np.pi * phase)
    lo = np.cos(np.pi * width)
    return np.sqrt(np.clip((c - lo) / (1.0 - lo), 0.0, 1.0))


def _vessels(frame: Frame, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Tapering vessel markings fanning out from each hilum (lung boxes only)."""
    out = np.zeros((frame.size, frame.size), dtype=np.float32)
    n = 9
    for sign, lung, (hdx, hy) in zip(
        (-1.0, 1.0), (frame.right_lung, frame.left_lung), frame.hila, strict=True
    ):
        angles = np.sort(rng.uniform(-1.35, 1.45, size=n))
        lengths = rng.uniform(0.18, 0.32, size=n)
        rows, cols = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
        if rows.size == 0:
            continue
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        rx = (frame.dx[box] - hdx) * sign  # positive = lateral
        ry = frame.y[box] - hy
        acc = np.zeros(rx.shape, dtype=np.float32)
        for angle, length in zip(angles, lengths, strict=True):
            c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
            along = rx * c + ry * s
            perp = ry * c - rx * s
            taper = np.clip(1.0 - along / np.float32(length), 0.0, 1.0) * (along > 0)
            width = 0.0035 + 0.006 * taper
            acc += np.exp(-((perp / width) ** 2)) * taper
        if anatomy.vessel_pruning > 0:
            r = np.sqrt(rx * rx + ry * ry)
            acc *= 1.0 - anatomy.vessel_pruning * smoothstep(r, 0.08, 0.2)
        out[box] += acc
    return out


def _upsample(array: np.ndarray, size: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a square map; wide blurs run on a coarser grid.

    Parameters
    ----------
    array : np.ndarray of shape (size, size)
    sigma : float
        Standard deviation in pixels.

    Returns
    -------
    np.ndarray of shape (size, size), float32
    """
    array = np.asarray(array, dtype=np.float32)
    factor = int(sigma // 2)
    size = array.shape[0]
    if factor < 2:
        return ndimage.gaussian_filter(array, sigma, truncate=3.0)
    coarse_size = -(-size // factor)
    coarse = Image.fromarray(array, mode="F").resize(
        (coarse_size, coarse_size), Image.Resampling.BOX
    )
    coarse = ndimage.gaussian_filter(
        np.asarray(coarse, dtype=np.float32), sigma * coarse_size / size, truncate=3.0
    )
    return _upsample(coarse, size)


def smooth_noise(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian noise with correlation length ``sigma`` pixels.

    Wide noise is drawn on a coarser grid and upsampled bilinearly. The result
    has zero mean and unit standard deviation.

    Returns
    -------
    np.ndarray of shape (size, size), float32
    """
    factor = max(1, round(sigma / 1.5))
    coarse = -(-size // factor)
    noise = ndimage.gaussian_filter(
        rng.standard_normal((coarse, coarse), dtype=np.float32),
        sigma / factor,
        truncate=3.0,
        mode="wrap",
    )
    if factor > 1:
        noise = _upsample(noise, coarse * factor)[:size, :size]
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def anatomy_density(frame: Frame, anatomy: Anatomy, view: View = "PA") -> np.ndarray:
    """Draw the normal chest as a density map (0 = air outside the body).

    Parameters
    ----------
    frame : Frame
        Geometry from :func:`build_frame`.
    anatomy : Anatomy
        The same anatomy (bone and tissue settings, texture seed).
    view : {"PA", "AP"}
        AP films show the clavicles higher.

    Returns
    -------
    np.ndarray of shape (size, size), float32
    """
    a = anatomy
    size = frame.size
    rng = np.random.default_rng(a.texture_seed)
    dx, y, body = frame.dx, frame.y, frame.body
    in_body = (body > 0).astype(np.float32)
    density = a.soft_tissue * (0.35 + 0.65 * body) * in_body

    lungs = (frame.right_lung | frame.left_lung).astype(np.float32)
    thickness = 0.6 * frame.lung_soft + 0.4 * blur(lungs, 0.03 * size)
    air = a.lung_density * thickness * (0.8 + 0.3 * np.clip(frame.t, 0.0, 1.0))
    density -= air

    # Mediastinum, spine and trachea.
    adx = np.abs(dx)
    density += 0.06 * (adx < a.mediastinum_half_width) * (y < frame.diaphragm_y)
    vertebrae = 0.5 + 0.5 * np.cos(
        2 * np.pi * (y - a.rib_phase * a.rib_spacing) / (a.rib_spacing * 0.9)
    )
    density += (0.04 + 0.03 * vertebrae) * smoothstep(-adx, -0.035, -0.02)
    trachea = smoothstep(-adx, -0.02, -0.012) * smoothstep(
        -y, -(a.apex_y + 0.14), -(a.apex_y + 0.1)
    )
    density -= 0.1 * trachea * in_body
    knob = ((dx - a.mediastinum_half_width) ** 2 + (y - a.apex_y - 0.12) ** 2) < 0.028**2
    density += 0.05 * knob

    # Posterior ribs arch over each hemithorax; anterior ribs slant down medially.
    extent = a.mediastinum_half_width + 2.0 * a.lung_half_width
    u = adx / extent
    thorax = (
        (u > 0.06) * smoothstep(-u, -1.08, -1.0) * smoothstep(y, a.apex_y - 0.06, a.apex_y - 0.02)
    )
    thorax *= in_body
    posterior = _band(
        (y - a.rib_curvature * (u - 0.3) ** 2 * extent) / a.rib_spacing - a.rib_phase, 0.34
    )
    anterior = _band((y + 0.5 * u * extent) / (1.35 * a.rib_spacing) - a.rib_phase * 0.7, 0.3)
    density += 0.06 * posterior * thorax * (y < a.base_y + 0.03)
    density += 0.035 * anterior * thorax * smoothstep(u, 0.3, 0.45) * (y < a.base_y - 0.04)

    # Clavicles: S-shaped bands from the sternal notch to the shoulders.
    rise = _AP_CLAVICLE_RISE if view == "AP" else 0.0
    clav_y = a.clavicle_y - rise + 0.02 - 0.045 * u + 0.012 * np.sin(2 * np.pi * u)
    clavicle = (
        np.exp(-(((y - clav_y) / 0.012) ** 2))
        * smoothstep(u, 0.08, 0.14)
        * smoothstep(-u, -1.05, -0.9)
    )
    density += 0.13 * clavicle * in_body

    # Gastric bubble under the left dome, breast shadows, lung markings, texture.
    bubble = (
        ((dx - 0.6 * extent) / 0.045) ** 2 + ((y - frame.diaphragm_y - 0.045) / 0.025) ** 2
    ) < 1.0
    density -= 0.08 * bubble * (dx > 0) * float(rng.random() < 0.7)
    if a.breast_shadow > 0:
        breast = np.exp(-(((u - 0.75) / 0.3) ** 2 + ((y - a.base_y + 0.08) / 0.1) ** 2))
        density += a.breast_shadow * breast * in_body
    density += 0.05 * _vessels(frame, a, rng) * frame.lung_soft
    density += 0.012 * smooth_noise(size, 0.02 * size, rng) * frame.lung_soft
    return density.astype(np.float32)
