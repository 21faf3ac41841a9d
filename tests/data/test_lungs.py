"""Lung-field segmentation, mask checks and the template fit (biomark.data.lungs, lung_checks,
lung_template).

Figures (``benchmarks/lung_masks.py``; the 21 phantom films below are the
first half of its 42): median Dice 0.910 on these 21 (0.884 with the threshold
segmenter this replaced), 0.888 / 0.902 against Shenzhen / JSRT sample masks,
89 % plausible on the 94 real films of ../shared/data (see biomark.data.lungs).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from biomark.data.lung_checks import POOR_FIT, outside_air, rank_normalise
from biomark.data.lung_template import LEFT_LUNG, RIGHT_LUNG, draw_template, fit_lung_template
from biomark.data.lungs import (
    MASK_FLAGS,
    ZONES,
    check_mask,
    content_mask,
    dice,
    lung_zones,
    region_masks,
    segment_lungs,
)
from biomark.data.phantom import PHANTOM_CLASSES, render_phantom

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def phantom_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    cases = []
    for i in range(21):
        label = PHANTOM_CLASSES[i % 7]
        rng = np.random.default_rng(100 + i)
        image, mask = render_phantom(label, float(rng.uniform(0.15, 1.0)), rng, size=200)
        cases.append((label, image, mask))
    return cases


@pytest.fixture(scope="module")
def segmented(phantom_cases) -> list[tuple[np.ndarray, object]]:
    return [segment_lungs(image) for _, image, _ in phantom_cases]


def _two_lungs(size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[20:80, 15:45] = 1
    mask[20:80, 55:85] = 1
    return mask


def _film(size: int = 100) -> np.ndarray:
    """Bright body, two dark lungs (the _two_lungs mask), dark air at both sides."""
    image = np.full((size, size), 170, dtype=np.uint8)
    image[_two_lungs(size) > 0] = 60
    image[:, :6] = image[:, -6:] = 10
    return image


def test_content_mask_excludes_letterbox_padding() -> None:
    image = np.zeros((50, 50), dtype=np.uint8)
    image[10:40, :] = 7
    image[10, 3] = 0  # a black pixel inside the content stays content
    content = content_mask(image)
    assert content[10:40].all() and not content[:10].any() and not content[40:].any()


def test_dice_known_values() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_rank_normalise_is_histogram_equalisation() -> None:
    values = np.array([[5, 1], [9, 3]], dtype=np.float32)
    np.testing.assert_allclose(rank_normalise(values), [[2 / 3, 0.0], [1.0, 1 / 3]], rtol=1e-6)
    flat = rank_normalise(np.array([0, 0, 0, 7, 7, 9]))  # ties share their middle rank
    np.testing.assert_allclose(flat, [0.2, 0.2, 0.2, 0.7, 0.7, 1.0], rtol=1e-6)


def test_outside_air_is_reached_from_the_sides_only() -> None:
    film = _film().astype(np.float32)
    air = outside_air(film)
    assert air[:, :6].all() and air[:, -6:].all()
    assert not air[_two_lungs() > 0].any()  # dark lungs, not reached through the bright body
    tight = np.full((60, 60), 170.0)
    tight[5:55, 0:25] = 50  # a lung touching the crop edge over a long run is not air
    tight[5:55, 35:60] = 50
    assert not outside_air(tight, max_run=0.25)[30].any()


def test_plausible_two_lung_mask_has_no_flags() -> None:
    check = check_mask(_two_lungs(), image=_film())
    assert check.plausible and check.flags == ()
    assert check.n_components == 2
    assert check.lr_balance == pytest.approx(1.0)
    assert check.area_fraction == pytest.approx(0.36)
    assert check.height_fraction == pytest.approx(0.6)
    assert check.contrast > 0.3
    assert check.outside_fraction == 0.0 and check.hole_fraction == 0.0 and check.top_cut == 0.0
    row = check.as_dict()
    assert (
        row["flags"] == ""
        and row["plausible"] is True
        and set(row) >= {"solidity", "side_contact", "fit_score"}
    )


def _ragged(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[23:77, 18:45] = 0  # the left 'lung' is a thin C along its outline
    return out


def _stomach_bubble(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[86:95, 60:75] = 1  # a separate dark region below the diaphragm
    return out


def _holed(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[40:50, 25:35] = 0
    return out


@pytest.mark.parametrize(
    ("edit", "flag"),
    [
        (lambda m: m * 0, "empty"),
        (lambda m: np.pad(m[45:55, 45:55], 45), "too_small"),
        (lambda m: np.ones_like(m), "too_large"),
        (lambda m: np.where(np.arange(m.shape[1]) < 50, 0, m), "one_lung"),
        (
            lambda m: np.where(
                (np.arange(m.shape[1]) < 50)[None, :] & (np.arange(100) > 50)[:, None], 0, m
            ),
            "asymmetric",
        ),
        (lambda m: np.where((np.arange(100) > 45)[:, None], 0, m) * 1 + 0, "short"),
        (
            lambda m: np.maximum(m, np.pad(np.ones((25, 30), np.uint8), ((0, 75), (15, 55)))),
            "touches_top",
        ),
        (_ragged, "irregular"),
        (_stomach_bubble, "irregular"),
        (_holed, "holes"),
    ],
)
def test_implausible_masks_are_flagged(edit, flag: str) -> None:
    check = check_mask(edit(_two_lungs()))
    assert flag in check.flags and flag in MASK_FLAGS
    assert not check.plausible


def test_image_checks_flag_masks_off_the_lungs() -> None:
    film = _film()
    below = np.zeros_like(film)
    below[84:98, 15:45] = below[84:98, 55:85] = 1  # on the bright body under the lungs
    assert "low_contrast" in check_mask(below, image=film).flags
    wide = _two_lungs()
    wide[20:80, 2:15] = 1  # the left lung runs out over the outside air
    assert "beyond_ribcage" in check_mask(wide, image=film).flags
    cropped = _two_lungs()
    cropped[0:60, 15:45] = 1  # a lung cut by the top of the film: dome cut, not a leak
    cropped[0:4, 15:22] = cropped[0:4, 38:45] = 0
    assert (
        check_mask(cropped).top_cut == pytest.approx(16 / 30)
        and "touches_top" not in check_mask(cropped).flags
    )
    assert "poor_fit" in check_mask(_two_lungs(), image=film, fit_score=POOR_FIT - 0.01).flags
    assert check_mask(_two_lungs(), image=film, fit_score=POOR_FIT + 0.01).flags == ()
    with pytest.raises(ValueError, match="differ in shape"):
        check_mask(_two_lungs(), image=film[:50])


def test_supplied_mask_in_the_letterbox_padding_is_flagged() -> None:
    """A misaligned user mask lying wholly outside the image content is flagged, not a division by
    zero."""
    film = np.pad(
        _film()[20:80], ((20, 20), (0, 0))
    )  # letterboxed: rows 0-19 and 80-99 are padding
    mask = np.zeros_like(film)
    mask[2:15, 10:40] = mask[2:15, 60:90] = 1
    check = check_mask(mask, image=film)
    assert check.lr_balance == 0.0 and check.height_fraction == 0.0
    assert "one_lung" in check.flags and not check.plausible


def test_template_fit_finds_the_lungs_of_a_synthetic_film() -> None:
    film = _film(120).astype(np.float32)
    fit = fit_lung_template(rank_normalise(film), outside_air(film))
    (lx0, lx1, ly0, ly1), (rx0, rx1, ry0, ry1) = fit.boxes
    assert lx1 <= rx0 + 3 and ly0 == pytest.approx(24, abs=10) and ly1 == pytest.approx(96, abs=10)
    assert ry0 == pytest.approx(ly0, abs=6) and lx0 >= 6 and rx1 <= 114  # not on the outside air
    truth = _two_lungs(120) > 0
    drawn = draw_template(LEFT_LUNG, fit.boxes[0], film.shape) | draw_template(
        RIGHT_LUNG, fit.boxes[1], film.shape
    )
    assert dice(drawn, truth) > 0.8 and fit.score > POOR_FIT
    with pytest.raises(ValueError, match="at least 16"):
        fit_lung_template(np.zeros((8, 8)), np.zeros((8, 8), bool))


def test_segmentation_matches_phantom_masks(phantom_cases, segmented) -> None:
    scores = np.array(
        [
            dice(mask, truth)
            for (mask, _), (_, _, truth) in zip(segmented, phantom_cases, strict=True)
        ]
    )
    assert np.median(scores) > 0.88  # the threshold segmenter this replaced: 0.887 on these 21
    assert (scores > 0.75).all()
    assert np.mean([c.plausible for _, c in segmented]) >= 0.9
    assert all(np.isfinite(c.fit_score) and np.isfinite(c.contrast) for _, c in segmented)


def test_dark_neck_does_not_pull_the_mask_out_of_the_lungs(phantom_cases) -> None:
    """A threshold leaks along a dark band from an apex to the top edge; the template does not."""
    _, image, truth = phantom_cases[6]  # a Normal film
    rows, cols = np.nonzero(truth)
    leaky = image.copy()
    apex_col = int(cols[rows == rows.min()].mean())
    leaky[: rows.min() + 3, apex_col - 4 : apex_col + 4] = int(np.percentile(image[truth > 0], 20))
    mask, check = segment_lungs(leaky)
    assert not mask[: max(rows.min() - 8, 1)].any()
    assert dice(mask, truth) > 0.85 and check.plausible


def test_segmentation_of_blank_image_is_empty_and_flagged() -> None:
    mask, check = segment_lungs(np.zeros((64, 64), dtype=np.uint8))
    assert mask.sum() == 0 and "empty" in check.flags
    with pytest.raises(ValueError, match="2-D"):
        segment_lungs(np.zeros((4, 4, 3), dtype=np.uint8))


def test_region_masks_lung_image_and_true(phantom_cases) -> None:
    images = np.stack([c[1] for c in phantom_cases[:3]])
    true = np.stack([c[2] for c in phantom_cases[:3]])
    masks, checks, source = region_masks(images, "lung", true)
    assert source == "dataset" and np.array_equal(masks, true.astype(np.uint8))
    assert all(np.isfinite(c.contrast) for c in checks)
    masks, checks, source = region_masks(images, "image")
    assert source == "content" and all(c.plausible for c in checks)
    assert masks.sum() == sum(content_mask(i).sum() for i in images)
    with pytest.raises(ValueError, match="region"):
        region_masks(images, "liver")


@pytest.mark.shared_data
def test_segmentation_plausibility_on_real_xrays() -> None:
    """Plausibility only (no true masks for the real sample); the full figures are the
    benchmark's."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real X-ray sample not found at {SHARED_DATA}")
    from biomark.io import letterbox, read_image

    files = []
    for pattern in (
        "cohen/images/*",
        "actualmed/images/*",
        "kermany/chest_xray/train/*/*",
        "nih/images/*",
    ):
        files += sorted(glob.glob(str(SHARED_DATA / pattern)))[:3]
    if len(files) < 4:
        pytest.skip("too few real images in the sample")
    checks = []
    for path in files:
        image = letterbox(read_image(path), 200)
        mask, check = segment_lungs(image)
        assert mask.shape == (200, 200) and set(np.unique(mask)) <= {0, 1}
        assert not mask[content_mask(image)].all()
        checks.append(check)
    plausible = np.mean([c.plausible for c in checks])
    assert plausible >= 0.6, f"only {plausible:.0%} plausible masks on real images"
    assert all(
        0.05 <= c.area_fraction <= 0.55 and c.lr_balance >= 0.5 for c in checks if c.plausible
    )


# ------------------------------------------------------------------ lung zones
def test_lung_zones_known_answer() -> None:
    mask = np.zeros((12, 20), dtype=np.uint8)
    mask[0:9, 2:8] = 1  # image-left lung: rows 0-8, lateral side = small columns
    mask[3:12, 12:18] = 1  # image-right lung: rows 3-11, lateral side = large columns
    zones = lung_zones(mask)
    assert list(zones) == list(ZONES)
    # thirds of each lung's own height
    assert zones["upper"][0:3, 2:8].all() and not zones["upper"][3:9, 2:8].any()
    assert zones["upper"][3:6, 12:18].all() and not zones["upper"][6:, 12:18].any()
    assert zones["lower"][9:12, 12:18].all() and zones["lower"][6:9, 2:8].all()
    # lateral half of every row is peripheral
    assert zones["peripheral"][:9, 2:5].all() and not zones["peripheral"][:9, 5:8].any()
    assert zones["peripheral"][3:, 15:18].all() and zones["central"][3:, 12:15].all()


def test_lung_zones_partition_the_phantom_masks(phantom_cases) -> None:
    for _, _, mask in phantom_cases:
        zones = lung_zones(mask)
        lung = mask > 0
        vertical = sum(zones[z].astype(int) for z in ("upper", "middle", "lower"))
        radial = zones["central"].astype(int) + zones["peripheral"]
        assert (vertical == lung).all() and (radial == lung).all()
        for name in ZONES:
            assert zones[name].dtype == np.uint8 and 0.2 < zones[name].sum() / lung.sum() < 0.6, (
                name
            )
        rows = np.flatnonzero(lung.any(axis=1))
        assert np.nonzero(zones["upper"])[0].mean() < np.nonzero(zones["lower"])[0].mean()
        assert rows[0] in np.nonzero(zones["upper"])[0]


def test_lung_zones_of_an_empty_mask_are_empty() -> None:
    zones = lung_zones(np.zeros((16, 16), dtype=np.uint8))
    assert all(not z.any() for z in zones.values())
