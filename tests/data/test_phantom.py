"""Tests of the phantom dataset (biomark.data.phantom).

The signature statistics below use only an image and its lung mask (lung-local
coordinates come from the mask's bounding boxes), like an analysis would.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats

from biomark.data.phantom import (
    MANIFEST_COLUMNS,
    PAPER_CLASS_COUNTS,
    PHANTOM_CLASSES,
    SEVERITY_RANGE,
    SIGNATURES,
    generate_phantom,
    parse_class_counts,
    render_phantom,
    render_phantom_case,
)
from biomark.data.phantom_anatomy import sample_anatomy
from biomark.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]
REQUIRED_COLUMNS = [
    "image_id",
    "path",
    "label",
    "patient_id",
    "source",
    "view",
    "severity",
    "mask_path",
    "artifact",
]
DISEASES = [c for c in PHANTOM_CLASSES if c != "Normal"]


# --------------------------------------------------------------------------- statistics


def lung_coordinates(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel lung height ``t`` (0 apex, 1 base), lateral position ``s``
    (0 medial, 1 lateral) and side (1 = image left, 2 = image right)."""
    lungs = mask.astype(bool)
    cols = np.flatnonzero(lungs.any(axis=0))
    mid = (cols[0] + cols[-1]) / 2
    yy, xx = np.mgrid[0 : lungs.shape[0], 0 : lungs.shape[1]].astype(float)
    t = np.full(lungs.shape, np.nan)
    s = np.full(lungs.shape, np.nan)
    side = np.zeros(lungs.shape, dtype=int)
    for k, half in enumerate((xx < mid, xx >= mid), start=1):
        lung = lungs & half
        r, c = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
        t[lung] = (yy[lung] - r[0]) / (r[-1] - r[0] + 1)
        lateral = (c[-1] - xx[lung]) if k == 1 else (xx[lung] - c[0])
        s[lung] = lateral / (c[-1] - c[0] + 1)
        side[lung] = k
    return t, s, side


def signature_statistic(label: str, image: np.ndarray, mask: np.ndarray) -> float:
    """A simple statistic that should track the label's planted signature."""
    grey = image.astype(float) / 255.0
    lungs = mask.astype(bool)
    t, s, side = lung_coordinates(lungs)
    lower = lungs & (t > 0.45)
    if label == "COVID-19":  # peripheral minus central brightness in the lower zones
        return grey[lower & (s > 0.6)].mean() - grey[lower & (s < 0.45)].mean()
    if label == "Edema":  # perihilar minus peripheral brightness
        mid = lungs & (t > 0.3) & (t < 0.75)
        return grey[mid & (s < 0.45)].mean() - grey[mid & (s > 0.65)].mean()
    if label == "Effusion":  # basal minus mid-zone brightness, brighter side
        return max(
            grey[lungs & (side == k) & (t > 0.8)].mean()
            - grey[lungs & (side == k) & (t > 0.3) & (t < 0.6)].mean()
            for k in (1, 2)
        )
    if (
        label == "Emphysema"
    ):  # lung brightness relative to the soft tissue below the lungs, above air
        rows, cols = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
        below = np.zeros_like(lungs)
        below[rows[-1] + 3 : rows[-1] + 3 + len(rows) // 6, cols[0] : cols[-1]] = True
        air = np.median(grey[:, :3])
        return float((np.median(grey[lungs]) - air) / (np.median(grey[below]) - air))
    if label == "Fibrosis":  # high-frequency energy, lower zones relative to upper zones
        energy = ndimage.uniform_filter((grey - ndimage.gaussian_filter(grey, 1.5)) ** 2, 5)
        inner = ndimage.binary_erosion(lungs, iterations=2)
        return float(np.sqrt(energy[inner & (t > 0.6)].mean() / energy[inner & (t < 0.45)].mean()))
    if (
        label == "Pneumonia"
    ):  # largest brightness difference between a lung zone and its mirror zone
        zones = (t < 0.45, (t >= 0.45) & (s < 0.6), (t >= 0.45) & (s >= 0.6))
        return max(
            abs(grey[lungs & z & (side == 1)].mean() - grey[lungs & z & (side == 2)].mean())
            for z in zones
        )
    raise ValueError(label)


# sign of the change with severity
EXPECTED_SIGN = {
    "COVID-19": 1,
    "Edema": 1,
    "Effusion": 1,
    "Emphysema": -1,
    "Fibrosis": 1,
    "Pneumonia": 1,
}
# Spearman rho(severity, signed statistic) required in the 40-per-class fixture. The nuisances
# (exposure, anatomy, breast shadows) are strong on purpose; emphysema's hyperlucency competes with
# exposure and per-patient aeration, so its statistic tracks severity less tightly (see
# data/PHANTOM.md).
MIN_RHO = {
    "COVID-19": 0.5,
    "Edema": 0.5,
    "Effusion": 0.5,
    "Emphysema": 0.35,
    "Fibrosis": 0.6,
    "Pneumonia": 0.5,
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("phantom")
    csv = generate_phantom(out, n_per_class=40, seed=4, image_size=128, images_per_patient=2)
    return out, pd.read_csv(csv, keep_default_na=False)


@pytest.fixture(scope="module")
def confounded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("confounded")
    csv = generate_phantom(
        out, n_per_class=40, seed=5, image_size=64, confounder=True, confounder_strength=0.85
    )
    return out, pd.read_csv(csv, keep_default_na=False)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- render_phantom


@pytest.mark.parametrize("label", PHANTOM_CLASSES)
def test_render_returns_image_and_binary_mask(label: str) -> None:
    image, mask = render_phantom(label, 0.7, np.random.default_rng(0), size=96)
    assert image.shape == mask.shape == (96, 96)
    assert image.dtype == mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert 0.08 < mask.mean() < 0.5
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert not border.any()
    # dark lungs inside a brighter body, black air at the top corners
    assert image[mask == 1].mean() < image[40:, 44:52].mean()
    assert image[:4, :4].mean() < 40


def test_render_is_pure_and_consumes_rng_independently_of_label() -> None:
    a = render_phantom("Pneumonia", 0.5, np.random.default_rng(7), size=64)
    b = render_phantom("Pneumonia", 0.5, np.random.default_rng(7), size=64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    states = []
    for label in PHANTOM_CLASSES:
        rng = np.random.default_rng(11)
        render_phantom(label, 0.9, rng, size=64, artifact=label == "Edema")
        states.append(rng.random())
    assert len(set(states)) == 1


def test_signatures_documented_for_every_class() -> None:
    assert tuple(SIGNATURES) == PHANTOM_CLASSES
    assert SIGNATURES["Normal"] == "none"
    assert all(SIGNATURES[c] and SIGNATURES[c] != "none" for c in DISEASES)


@pytest.mark.parametrize("label", ["COVID-19", "Edema", "Effusion", "Fibrosis", "Pneumonia"])
def test_signature_only_changes_the_lungs(label: str) -> None:
    anatomy = sample_anatomy(np.random.default_rng(1))
    normal, mask = render_phantom(
        "Normal", 0.0, np.random.default_rng(2), size=128, anatomy=anatomy
    )
    sick, sick_mask = render_phantom(
        label, 1.0, np.random.default_rng(2), size=128, anatomy=anatomy
    )
    changed = np.abs(sick.astype(int) - normal.astype(int)) > 2
    assert changed.sum() > 50
    near_lungs = ndimage.binary_dilation(mask.astype(bool) | sick_mask.astype(bool), iterations=4)
    assert not (changed & ~near_lungs).any()


@pytest.mark.parametrize("label", DISEASES)
def test_signature_grows_with_severity_for_the_same_film(label: str) -> None:
    # Same patient, positioning, exposure and noise: only the severity differs.
    for seed in range(4):
        anatomy = sample_anatomy(np.random.default_rng(100 + seed))
        values = []
        for severity in (0.0, 0.3, 1.0):
            rendered = render_phantom(
                label, severity, np.random.default_rng(seed), size=128, anatomy=anatomy
            )
            values.append(EXPECTED_SIGN[label] * signature_statistic(label, *rendered))
        assert values[0] < values[1] < values[2], (label, seed, values)


@pytest.mark.parametrize("label", ["COVID-19", "Edema", "Effusion", "Fibrosis", "Pneumonia"])
def test_burden_grows_with_severity_for_the_same_film(label: str) -> None:
    anatomy = sample_anatomy(np.random.default_rng(7))
    burdens = [
        render_phantom_case(
            label, severity, np.random.default_rng(3), size=96, anatomy=anatomy
        ).burden
        for severity in (0.2, 0.5, 1.0)
    ]
    assert 0 < burdens[0] < burdens[1] < burdens[2] < 1.5, burdens


def test_burden_of_a_pneumonia_follows_its_lobe_as_well_as_its_severity() -> None:
    # one severity, many films: the lobe drawn sets how much lung the consolidation fills
    cases = [
        render_phantom_case("Pneumonia", 0.6, np.random.default_rng(seed), size=96)
        for seed in range(40)
    ]
    by_lobe = pd.Series([c.burden for c in cases]).groupby([c.lobe for c in cases]).mean()
    assert len(by_lobe) >= 4
    assert by_lobe.max() > 1.5 * by_lobe.min()  # the lobes differ in size
    normal = render_phantom_case("Normal", 0.0, np.random.default_rng(0), size=64)
    emphysema = render_phantom_case("Emphysema", 0.8, np.random.default_rng(0), size=64)
    assert normal.burden == 0.0 and np.isnan(emphysema.burden)


def test_render_phantom_case_reports_side_and_lobe() -> None:
    case = render_phantom_case("Pneumonia", 0.8, np.random.default_rng(0), size=64)
    assert case.lobe in {"RUL", "RML", "RLL", "LUL", "LLL"}
    assert case.side == ("right" if case.lobe.startswith("R") else "left")
    assert render_phantom_case("Normal", 0.0, np.random.default_rng(0), size=64).side == "none"


# --------------------------------------------------------------------------- generate_phantom


def test_csv_schema(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, frame = phantom
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert list(frame.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert frame["image_id"].is_unique
    assert frame["image_id"].str.fullmatch(r"ph\d{6}").all()
    assert (frame["path"] == "images/" + frame["image_id"] + ".png").all()
    assert (frame["mask_path"] == "masks/" + frame["image_id"] + ".png").all()
    assert set(frame["label"]) == set(PHANTOM_CLASSES)
    assert set(frame["source"]) <= {"site_A", "site_B"}
    assert set(frame["view"]) == {"PA", "AP"}
    assert frame["artifact"].dtype == bool and not frame["artifact"].any()
    assert frame["severity"].dtype == float
    normal = frame["label"] == "Normal"
    assert (frame.loc[normal, "severity"] == 0).all()
    lo, hi = SEVERITY_RANGE
    assert frame.loc[~normal, "severity"].between(lo, hi).all()
    assert frame.loc[~normal, "severity"].std() > 0.15
    assert (frame.loc[frame["label"] == "Pneumonia", "lobe"] != "none").all()
    assert (frame.loc[frame["label"] != "Pneumonia", "lobe"] == "none").all()
    assert frame[["side", "lobe"]].notna().all().all()
    emphysema = frame["label"] == "Emphysema"
    assert (frame.loc[emphysema, "burden"] == "").all()  # an empty cell: no burden
    burden = pd.to_numeric(frame["burden"], errors="coerce")
    assert (burden[normal] == 0).all()
    diseased = ~normal & ~emphysema
    assert (burden[diseased] > 0).all()
    assert stats.spearmanr(frame.loc[diseased, "severity"], burden[diseased])[0] > 0.3


def test_counts_per_class(phantom: tuple[Path, pd.DataFrame]) -> None:
    _, frame = phantom
    assert frame["label"].value_counts().to_dict() == {c: 40 for c in PHANTOM_CLASSES}


def test_patients_have_several_films_and_one_label(phantom: tuple[Path, pd.DataFrame]) -> None:
    _, frame = phantom
    per_patient = frame.groupby("patient_id")
    assert (per_patient["label"].nunique() == 1).all()
    assert (per_patient["source"].nunique() == 1).all()
    sizes = per_patient.size()
    assert 1.6 < sizes.mean() < 2.5
    assert (sizes >= 2).mean() > 0.4
    multi = frame[frame["patient_id"].isin(sizes[sizes >= 2].index) & (frame["label"] != "Normal")]
    assert (multi.groupby("patient_id")["severity"].nunique() > 1).mean() > 0.8  # follow-up films


def test_images_and_masks(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, frame = phantom
    shapes = set()
    for row in frame.itertuples():
        image, mask = read(out / row.path), read(out / row.mask_path)
        assert image.shape == mask.shape == (row.height, row.width)
        shapes.add(image.shape)
        assert set(np.unique(mask)) == {0, 255}
        lungs = mask > 0
        assert 0.08 < lungs.mean() < 0.6
        assert not (lungs[0].any() or lungs[-1].any() or lungs[:, 0].any() or lungs[:, -1].any())
        assert np.median(image[lungs]) > 5  # lungs lie inside the body, not in the air
    assert shapes == {(128, 128), (128, 112)}
    square = frame["width"] == frame["height"]
    assert 0.1 < (~square).mean() < 0.45


def test_mean_intensity_does_not_separate_classes(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, frame = phantom
    means = frame.assign(mean=[read(out / p).mean() for p in frame["path"]]).groupby("label")[
        "mean"
    ]
    lo, hi = means.quantile(0.25), means.quantile(0.75)
    # every class's interquartile range overlaps every other class's
    assert all(lo[a] < hi[b] for a in lo.index for b in lo.index)
    normal = means.get_group("Normal").to_numpy()
    for label in DISEASES:
        values = means.get_group(label).to_numpy()
        auc = (values[:, None] > normal[None, :]).mean() + 0.5 * (
            values[:, None] == normal[None, :]
        ).mean()
        assert 0.2 < auc < 0.8, (label, auc)


@pytest.mark.parametrize("label", DISEASES)
def test_signature_present_and_tracks_severity(
    phantom: tuple[Path, pd.DataFrame], label: str
) -> None:
    out, frame = phantom

    def statistic(rows: pd.DataFrame) -> np.ndarray:
        return np.array(
            [
                EXPECTED_SIGN[label]
                * signature_statistic(label, read(out / r.path), read(out / r.mask_path))
                for r in rows.itertuples()
            ]
        )

    rows = frame[frame["label"] == label]
    values = statistic(rows)
    normal = statistic(frame[frame["label"] == "Normal"])
    rho = stats.spearmanr(rows["severity"], values)[0]
    assert rho > MIN_RHO[label], (label, rho)
    assert np.median(values) > np.median(normal), label
    severe = values[rows["severity"].to_numpy() > 0.6]
    assert np.mean(severe[:, None] > normal[None, :]) > 0.8, label


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(n_per_class=2, image_size=64, confounder=True)
    generate_phantom(tmp_path / "a", seed=9, **kwargs)
    generate_phantom(tmp_path / "b", seed=9, **kwargs)
    generate_phantom(tmp_path / "c", seed=10, **kwargs)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a["phantom.csv"] != c["phantom.csv"]
    assert a["images/ph000000.png"] != c["images/ph000000.png"]


def test_confounder_switch_changes_only_the_tag(tmp_path: Path) -> None:
    generate_phantom(tmp_path / "off", n_per_class=3, seed=4, image_size=64, confounder=False)
    generate_phantom(
        tmp_path / "on",
        n_per_class=3,
        seed=4,
        image_size=64,
        confounder=True,
        confounder_strength=1.0,
    )
    off = pd.read_csv(tmp_path / "off" / "phantom.csv")
    on = pd.read_csv(tmp_path / "on" / "phantom.csv")
    assert (on["artifact"] == (on["label"] == "COVID-19")).all()
    pd.testing.assert_frame_equal(
        off.drop(columns=["source", "artifact"]), on.drop(columns=["source", "artifact"])
    )
    for row in on.itertuples():
        with_tag, without = read(tmp_path / "on" / row.path), read(tmp_path / "off" / row.path)
        changed = with_tag != without
        assert changed.any() == row.artifact
        assert not (changed & (read(tmp_path / "on" / row.mask_path) > 0)).any()
        assert (with_tag[changed] >= 235).all()


@pytest.mark.parametrize("size", [64, 256])
def test_artifact_tag_stays_off_the_lungs(size: int) -> None:
    for seed in range(10):
        case = render_phantom_case(
            "COVID-19", 0.5, np.random.default_rng(seed), size=size, artifact=True
        )
        plain = render_phantom_case(
            "COVID-19", 0.5, np.random.default_rng(seed), size=size, artifact=False
        )
        assert case.artifact.any() and not plain.artifact.any()
        assert np.array_equal(
            case.image != plain.image, case.artifact & (plain.image != case.image)
        )
        assert not (
            ndimage.binary_dilation(case.mask.astype(bool), iterations=1) & case.artifact
        ).any()
        assert (case.image[case.artifact] >= 235).all()
        assert case.artifact[: size // 6].sum() == case.artifact.sum()  # in the top band


def test_confounder_associates_source_with_class(confounded: tuple[Path, pd.DataFrame]) -> None:
    out, frame = confounded
    assert (frame["artifact"] == (frame["source"] == "site_B")).all()
    site_b = (frame["source"] == "site_B").groupby(frame["label"] == "COVID-19").mean()
    assert site_b[True] > 0.65 and site_b[False] < 0.3
    table = pd.crosstab(frame["label"] == "COVID-19", frame["source"])
    assert stats.chi2_contingency(table)[1] < 1e-6
    for row in frame.itertuples():
        image, lungs = read(out / row.path), read(out / row.mask_path) > 0
        corners = np.zeros_like(lungs)
        rows, cols = image.shape[0] // 8, image.shape[1] // 7
        corners[:rows, :cols] = corners[:rows, -cols:] = True  # air above the shoulders
        assert ((image >= 235) & corners).any() == row.artifact


def test_no_confounder_source_independent_of_class(phantom: tuple[Path, pd.DataFrame]) -> None:
    _, frame = phantom
    assert not frame["artifact"].any()
    assert 0.25 < (frame["source"] == "site_B").mean() < 0.75
    patients = frame.drop_duplicates("patient_id")
    table = pd.crosstab(patients["label"], patients["source"])
    assert stats.chi2_contingency(table)[1] > 0.01


def test_interrupted_run_leaves_no_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import biomark.data.phantom as module

    generate_phantom(tmp_path, n_per_class=1, image_size=64)
    calls = {"n": 0}
    real = module.render_phantom_case

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "render_phantom_case", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(tmp_path, n_per_class=1, image_size=64)
    assert not (tmp_path / "phantom.csv").exists()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_per_class": 0}, "n_per_class"),
        ({"n_per_class": 2.5}, "n_per_class"),
        ({"image_size": 32}, "image_size"),
        ({"seed": -1}, "seed"),
        ({"images_per_patient": 0.5}, "images_per_patient"),
        ({"images_per_patient": float("inf")}, "images_per_patient"),
        ({"confounder_strength": 0.2}, "confounder_strength"),
        ({"confounder_strength": 1.5}, "confounder_strength"),
        ({"nonsquare_fraction": -0.1}, "nonsquare_fraction"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_phantom(tmp_path, **kwargs)
    assert not (tmp_path / "phantom.csv").exists()


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("Cardiomegaly", 0.5), {}, "label"),
        (("Edema", 1.5), {}, "severity"),
        (("Edema", -0.1), {}, "severity"),
        (("Edema", 0.5), {"size": 16}, "size"),
        (("Edema", 0.5), {"view": "lateral"}, "view"),
    ],
)
def test_render_rejects_bad_arguments(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        render_phantom(*args, np.random.default_rng(0), **kwargs)


# --------------------------------------------------------------------------- per-class counts


def test_paper_counts_are_the_recipe_targets() -> None:
    import yaml

    recipe = yaml.safe_load(
        (REPO / "data" / "recipes" / "apostolopoulos2020.yaml").read_text(encoding="utf-8")
    )
    assert PAPER_CLASS_COUNTS == {c["name"]: c["target"] for c in recipe["classes"]}
    assert tuple(PAPER_CLASS_COUNTS) == PHANTOM_CLASSES
    assert sum(PAPER_CLASS_COUNTS.values()) == 3905


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("paper", 1.0, list(PAPER_CLASS_COUNTS.values())),
        ("paper", 0.1, [46, 29, 31, 32, 28, 91, 134]),  # 45.5 and 31.5 round up
        ("Paper", 0.001, [1, 1, 1, 1, 1, 1, 1]),  # at least one image per class
        ("1, 2,3,4,5,6,7", 1.0, [1, 2, 3, 4, 5, 6, 7]),
        ("10,10,10,10,10,10,20", 0.5, [5, 5, 5, 5, 5, 5, 10]),
    ],
)
def test_parse_class_counts(text: str, scale: float, expected: list[int]) -> None:
    counts = parse_class_counts(text, scale)
    assert list(counts) == list(PHANTOM_CLASSES)
    assert list(counts.values()) == expected


@pytest.mark.parametrize(
    ("text", "scale", "match"),
    [
        ("papers", 1.0, "'paper' or 7 comma-separated"),
        ("1,2,3", 1.0, "7 comma-separated"),
        ("1,2,3,4,5,6,x", 1.0, "whole"),
        ("1,2,3,4,5,6,-7", 1.0, "whole"),
        ("1,2,3,4,5,6,0", 1.0, "Normal got 0"),
        ("paper", 0.0, "scale=0.0"),
        ("paper", -1.0, "scale"),
        ("paper", float("nan"), "scale"),
    ],
)
def test_parse_class_counts_rejects_bad_values(text: str, scale: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_class_counts(text, scale)


def test_class_counts_set_the_images_per_class(tmp_path: Path) -> None:
    counts = dict(zip(PHANTOM_CLASSES, [3, 1, 1, 2, 1, 4, 5], strict=True))
    frame = pd.read_csv(
        generate_phantom(tmp_path, class_counts=counts, image_size=64), keep_default_na=False
    )
    assert frame["label"].value_counts().to_dict() == counts
    assert frame["image_id"].is_unique
    assert (frame.groupby("patient_id")["label"].nunique() == 1).all()


def test_equal_class_counts_give_the_files_of_n_per_class(tmp_path: Path) -> None:
    generate_phantom(tmp_path / "a", n_per_class=2, seed=3, image_size=64)
    generate_phantom(tmp_path / "b", class_counts=[2] * len(PHANTOM_CLASSES), seed=3, image_size=64)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_per_class": 2, "class_counts": [1] * 7}, "both given"),
        ({"class_counts": [1] * 6}, "has 6 values"),
        ({"class_counts": [1, 1, 1, 1, 1, 1, 0]}, "Normal=0"),
        ({"class_counts": [1, 1, 1, 1, 1, 1, 1.5]}, "Normal=1.5"),
        ({"class_counts": {c: 1 for c in PHANTOM_CLASSES if c != "Edema"}}, "missing class.*Edema"),
        (
            {"class_counts": {**{c: 1 for c in PHANTOM_CLASSES}, "Cardiomegaly": 1}},
            "unknown class.*Cardiomegaly",
        ),
        ({"class_counts": "paper"}, "mapping of class to count"),
    ],
)
def test_generate_rejects_bad_class_counts(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_phantom(tmp_path, image_size=64, **kwargs)
    assert not (tmp_path / "phantom.csv").exists()


def test_cli_builds_a_scaled_paper_phantom(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from biomark.cli import main

    out = tmp_path / "paper"
    status = main(
        [
            "data",
            "phantom",
            "--out",
            str(out),
            "--counts",
            "paper",
            "--scale",
            "0.004",
            "--raw-size",
            "64",
            "--size",
            "32",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert (
        "COVID-19 2, Edema 1, Effusion 1, Emphysema 1, Fibrosis 1, Pneumonia 4, Normal 5 (15 "
        "images)" in printed
    )
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["label"].value_counts().to_dict() == parse_class_counts("paper", 0.004)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--counts", "1,2"], "counts='1,2' is invalid"),
        (["--scale", "0.5"], "--scale scales --counts"),
        (["--counts", "paper", "--scale", "0"], "scale=0.0"),
    ],
)
def test_cli_reports_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], match: str
) -> None:
    from biomark.cli import main

    assert main(["data", "phantom", "--out", str(tmp_path / "p"), *args]) == 1
    assert match in capsys.readouterr().err
    assert not (tmp_path / "p" / "phantom.csv").exists()


def test_cli_counts_and_n_per_class_exclude_each_other(tmp_path: Path) -> None:
    from biomark.cli import main

    with pytest.raises(SystemExit):
        main(["data", "phantom", "--out", str(tmp_path), "--counts", "paper", "--n-per-class", "3"])
