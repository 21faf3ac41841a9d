"""Radiomics extraction: parameters, baseline values, cache, parallelism, failures.

The stored baseline ``baselines/radiomics_phantom.csv`` holds every feature of
three phantom images (128 px, true lung masks, the shipped parameter file)
and is compared with ``rtol=1e-6``. It was generated once with::

    import numpy as np
    from biomark.data.phantom import render_phantom
    from biomark.features.radiomics import extract_features
    from biomark.features.radiomics_params import load_params
    cases = [("Pneumonia", 0.8, 1), ("Fibrosis", 0.9, 2), ("Normal", 0.0, 3)]
    ims, ms = zip(*[render_phantom(c, s, np.random.default_rng(seed), size=128) for c, s, seed in cases])
    out = extract_features(np.stack(ims), np.stack(ms), [c for c, _, _ in cases],
                           load_params("analyses/radiomics_cxr2d.yaml"), cache_dir="/tmp/blcache", jobs=1)
    from biomark.features.radiomics_cache import array_sha256
    out.features.insert(1, "image_sha256", [array_sha256(i)[:16] for i in ims])
    out.features.to_csv("tests/features/baselines/radiomics_phantom.csv", index=False, float_format="%.17g")

The ``image_sha256`` column fingerprints the rendered phantom images: when the
phantom generator changes (a different image, not an extraction regression),
the test is skipped with a request to regenerate the baseline.
"""  # noqa: E501

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import biomark.features.radiomics as rad
from biomark.exceptions import ConfigError
from biomark.features.radiomics import (
    extract_features,
    extract_one,
    feature_name,
    shuffle_within,
)
from biomark.features.radiomics_cache import FeatureCache
from biomark.features.radiomics_params import load_params
from biomark.features.radiomics_run import load_radiomics, run_radiomics

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "analyses" / "radiomics_cxr2d.yaml"
BASELINE = Path(__file__).parent / "baselines" / "radiomics_phantom.csv"
BASELINE_CASES = [("Pneumonia", 0.8, 1), ("Fibrosis", 0.9, 2), ("Normal", 0.0, 3)]


@pytest.fixture(scope="module")
def params():
    return load_params(PARAMS_FILE)


@pytest.fixture(scope="module")
def phantom_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from biomark.data.phantom import PHANTOM_CLASSES, render_phantom

    images, masks = [], []
    for i in range(8):
        image, mask = render_phantom(PHANTOM_CLASSES[i % 7], 0.6, np.random.default_rng(i), size=96)
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks), [f"img{i}" for i in range(8)]


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory) -> Path:
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    base = tmp_path_factory.mktemp("phantom")
    # 14 images of 96 px: every zone still holds far more than minimumROISize (50 px)
    csv = generate_phantom(base / "raw", n_per_class=2, seed=0, image_size=96)
    build_dataset(base / "data", sources={"manifest": [csv]}, image_size=96, jobs=1)
    return base / "data"


# ------------------------------------------------------------------ parameters
def test_shipped_parameter_file_is_valid(params) -> None:
    assert params.settings["force2D"] is True and params.settings["force2Ddimension"] == 0
    assert params.settings["label"] == 1
    assert set(params.content["featureClass"]) == {
        "firstorder",
        "shape2D",
        "glcm",
        "glrlm",
        "glszm",
        "gldm",
        "ngtdm",
    }
    assert params.image_types == {"Original": {}}
    assert len(params.file_sha256) == 64 and len(params.settings_hash) == 16
    assert load_params(PARAMS_FILE).settings_hash == params.settings_hash


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["setting"].update(binWidht=8), r"bad\.yaml.*binWidht"),
        (lambda c: c.update(bogus=1), r"bad\.yaml.*bogus"),
        (lambda c: c["featureClass"].update(glcmx=None), r"bad\.yaml.*glcmx"),
        (lambda c: c["setting"].update(binWidth=-1), r"bad\.yaml.*binWidth"),
        (lambda c: c["imageType"].update(Foo={}), r"bad\.yaml.*Foo"),
        (lambda c: c["setting"].update(force2D=False), r"bad\.yaml.*force2D"),
        (lambda c: c["featureClass"].update(shape=None), r"bad\.yaml.*shape2D"),
    ],
)
def test_bad_parameter_file_names_file_and_key(tmp_path, edit, match) -> None:
    content = yaml.safe_load(PARAMS_FILE.read_text())
    edit(content)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=match):
        load_params(path)


def test_missing_and_broken_parameter_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("setting: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*YAML"):
        load_params(tmp_path / "broken.yaml")


def test_comment_edits_keep_settings_hash_but_change_file_hash(tmp_path, params) -> None:
    copy = tmp_path / "radiomics_cxr2d.yaml"
    copy.write_text(PARAMS_FILE.read_text() + "\n# a new comment\n")
    other = load_params(copy)
    assert other.settings_hash == params.settings_hash
    assert other.file_sha256 != params.file_sha256


# ------------------------------------------------------------------ naming and values
@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("original_glcm_Contrast", "glcm_Contrast"),
        ("original_shape2D_Perimeter", "shape2D_Perimeter"),
        ("log-sigma-1-0-mm-3D_glcm_Contrast", "log-sigma-1-0-mm_glcm_Contrast"),
        ("wavelet-LH_firstorder_Mean", "wavelet-LH_firstorder_Mean"),
        ("diagnostics_Mask-original_VoxelNum", None),
    ],
)
def test_feature_names(key: str, name: str | None) -> None:
    assert feature_name(key) == name


def test_features_match_stored_baseline(tmp_path, params) -> None:
    from biomark.data.phantom import render_phantom
    from biomark.features.radiomics_cache import array_sha256

    images, masks = zip(
        *[
            render_phantom(c, s, np.random.default_rng(seed), size=128)
            for c, s, seed in BASELINE_CASES
        ],
        strict=True,
    )
    expected = pd.read_csv(BASELINE)
    if [array_sha256(i)[:16] for i in images] != expected.pop("image_sha256").tolist():
        pytest.fail(
            "the phantom generator renders different images than when the baseline was stored; "
            "if that change is intended, regenerate tests/features/baselines/radiomics_phantom.csv "
            "(snippet in the module docstring)"
        )
    out = extract_features(
        np.stack(images),
        np.stack(masks),
        [c for c, _, _ in BASELINE_CASES],
        params,
        cache_dir=tmp_path / "cache",
        jobs=1,
    )
    assert list(out.features.columns) == list(expected.columns)
    assert out.features.shape == (3, 103)
    np.testing.assert_allclose(
        out.features.iloc[:, 1:].to_numpy(float), expected.iloc[:, 1:].to_numpy(float), rtol=1e-6
    )


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_native_2d_equals_single_slice_volume_with_force2d(phantom_arrays, params) -> None:
    """Why biomark passes 2-D images with force2D off (module docstring of radiomics.py)."""
    import SimpleITK as sitk
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    image, mask = phantom_arrays[0][0], phantom_arrays[1][0]
    ours = extract_one(rad._make_extractor(params.extractor_params()), image, mask)
    volume = RadiomicsFeatureExtractor(params.extractor_params()).execute(
        sitk.GetImageFromArray(image[None].astype(np.float32)),
        sitk.GetImageFromArray(mask[None].astype(np.uint8)),
    )
    reference = {feature_name(k): float(v) for k, v in volume.items() if feature_name(k)}
    assert set(reference) == set(ours.features)
    for name, value in reference.items():
        assert ours.features[name] == pytest.approx(value, rel=1e-9), name


def test_shuffle_keeps_histogram_and_changes_texture(phantom_arrays) -> None:
    image, mask = phantom_arrays[0][1], phantom_arrays[1][1]
    shuffled = shuffle_within(image, mask, 7)
    inside = mask > 0
    assert np.array_equal(np.sort(image[inside]), np.sort(shuffled[inside]))
    assert np.array_equal(image[~inside], shuffled[~inside])
    assert not np.array_equal(image, shuffled)
    assert np.array_equal(shuffled, shuffle_within(image, mask, 7))


# ------------------------------------------------------------------ cache and parallelism
def test_second_run_is_served_from_cache(tmp_path, phantom_arrays, params, monkeypatch) -> None:
    images, masks, ids = phantom_arrays
    first = extract_features(images, masks, ids, params, cache_dir=tmp_path, jobs=1)
    assert (first.n_computed, first.n_cached) == (8, 0)
    assert len(FeatureCache(tmp_path)) == 8
    calls = []
    original = rad._extract_chunk
    monkeypatch.setattr(
        rad, "_extract_chunk", lambda p, items: calls.append(len(items)) or original(p, items)
    )
    second = extract_features(images, masks, ids, params, cache_dir=tmp_path, jobs=1)
    assert calls == [] and (second.n_computed, second.n_cached) == (0, 8)
    pd.testing.assert_frame_equal(first.features, second.features)
    # an enlarged dataset computes only the new image; a new mask is a new key
    bigger = np.concatenate([images, images[:1] // 2])
    more = extract_features(
        bigger,
        np.concatenate([masks, masks[:1]]),
        ids + ["new"],
        params,
        cache_dir=tmp_path,
        jobs=1,
    )
    assert calls == [1] and more.n_computed == 1


def test_parallel_and_serial_give_identical_tables(tmp_path, phantom_arrays, params) -> None:
    images, masks, ids = phantom_arrays
    serial = extract_features(images, masks, ids, params, cache_dir=tmp_path / "a", jobs=1)
    parallel = extract_features(
        images, masks, ids, params, cache_dir=tmp_path / "b", jobs=2, chunk_size=2
    )
    pd.testing.assert_frame_equal(serial.features, parallel.features, check_exact=True)


# ------------------------------------------------------------------ failures
def test_failed_images_are_recorded_not_nan(tmp_path, phantom_arrays, params) -> None:
    images, masks, ids = phantom_arrays
    masks = masks.copy()
    masks[2] = 0  # empty
    masks[5] = 0
    masks[5][10:14, 10:14] = 1  # 16 px < minimumROISize 50
    out = extract_features(images, masks, ids, params, cache_dir=tmp_path, jobs=1)
    assert "img2" not in set(out.features["image_id"]) and "img5" not in set(
        out.features["image_id"]
    )
    assert len(out.features) == 6 and np.isfinite(out.features.iloc[:, 1:].to_numpy(float)).all()
    reasons = dict(zip(out.failures["image_id"], out.failures["reason"], strict=True))
    assert reasons["img2"] == "empty region mask"
    assert (
        "minimumROISize" in reasons["img5"]
        or "too small" in reasons["img5"].lower()
        or "voxel" in reasons["img5"]
    )
    assert set(out.failures["action"]) == {"image left out of the feature table"}


def test_single_failed_feature_is_recorded(tmp_path, phantom_arrays) -> None:
    class FakeExtractor:
        def execute(self, image, mask, label=1):
            import logging

            logging.getLogger("radiomics.glcm").error("Feature Contrast failed: division by zero")
            return {
                "diagnostics_x": "1",
                "original_glcm_Contrast": float("nan"),
                "original_firstorder_Mean": 3.0,
            }

    entry = extract_one(FakeExtractor(), phantom_arrays[0][0], phantom_arrays[1][0])
    assert entry.ok and entry.features["firstorder_Mean"] == 3.0
    assert entry.failures[0][0] == "feature"
    assert "glcm_Contrast" in entry.failures[0][1] and "division by zero" in entry.failures[0][1]


# ------------------------------------------------------------------ whole dataset
def test_run_radiomics_writes_outputs_and_excludes_implausible_masks(
    tmp_path, phantom_dataset, params
) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantom_dataset, data, ignore=shutil.ignore_patterns("radiomics"))
    masks = np.load(data / "cache" / "masks.npy")
    masks[0] = 0
    masks[0][15:75, 8:40] = 1  # one lung only (left of the 96-px image's midline)
    np.save(data / "cache" / "masks.npy", masks)
    run = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    out = data / "radiomics" / "radiomics_cxr2d_lung"
    assert run.out_dir == out
    for name in (
        "features.parquet",
        "failures.csv",
        "radiomics.json",
        "masks.npy",
        "masks.csv",
        "controls/shuffled/features.parquet",
        "controls/outside/features.parquet",
    ):
        assert (out / name).is_file(), name
    manifest = pd.read_csv(data / "manifest.csv", dtype={"image_id": str})
    first = manifest["image_id"].iat[0]
    assert first not in set(run.features["image_id"])
    row = run.failures[run.failures["image_id"] == first].iloc[0]
    assert row["stage"] == "mask" and "one_lung" in row["reason"] and "excluded" in row["action"]
    info = json.loads((out / "radiomics.json").read_text())
    assert info["params"]["file_sha256"] == params.file_sha256
    assert info["params"]["content"]["setting"]["binWidth"] == 8
    assert {"pyradiomics", "SimpleITK", "numpy"} <= set(info["versions"])
    assert info["counts"]["images"] == len(manifest) and info["counts"]["masks_flagged"] == 1
    assert info["dataset"]["manifest_sha256"]
    assert len(list((out / "gallery").glob("*.png"))) >= 1
    assert set(run.controls) == {"shuffled", "outside"}
    shuffled = run.controls["shuffled"].set_index("image_id")
    real = run.features.set_index("image_id").loc[shuffled.index]
    np.testing.assert_allclose(shuffled["firstorder_Mean"], real["firstorder_Mean"], rtol=1e-9)
    assert not np.allclose(shuffled["glcm_Contrast"], real["glcm_Contrast"])
    again = load_radiomics(out)
    pd.testing.assert_frame_equal(again.features, run.features)
    rerun = run_radiomics(data, params, region="lung", jobs=1, controls=False)
    assert rerun.info["counts"]["computed"] == 0


def test_run_radiomics_image_region(tmp_path, phantom_dataset, params) -> None:
    run = run_radiomics(phantom_dataset, params, region="image", jobs=2)
    assert run.out_dir.name == "radiomics_cxr2d_image"
    assert run.info["mask_source"] == "content" and len(run.failures) == 0
    lung = run_radiomics(phantom_dataset, params, region="lung", jobs=1)
    both = run.features.merge(lung.features, on="image_id", suffixes=("", "_lung"))
    assert (both["shape2D_PixelSurface"] > both["shape2D_PixelSurface_lung"]).all()


def test_run_radiomics_zones_region(tmp_path, phantom_dataset, params) -> None:
    from biomark.data.lungs import ZONES

    data = tmp_path / "data"
    # the dataset alone: other tests leave their radiomics folders in the shared fixture
    shutil.copytree(phantom_dataset, data, ignore=shutil.ignore_patterns("radiomics"))
    run = run_radiomics(data, params, region="zones", jobs=2, controls=True)
    assert run.out_dir.name == "radiomics_cxr2d_zones" and run.info["region"] == "zones"
    assert "lung_zones" in run.info["zones"] and run.info["mask_source"] == "dataset"
    columns = list(run.features.columns)
    assert "glcm_Contrast" in columns and all(f"{z}_glcm_Contrast" in columns for z in ZONES)
    assert run.features.shape[1] - 1 == 6 * 102 and run.info["counts"]["features"] == 6 * 102
    # the unprefixed columns are the lung features (each region folder keeps its own per-image
    # cache; this test's copy of the dataset starts without one, whatever ran before it on the
    # shared fixture)
    lung = run_radiomics(data, params, region="lung", jobs=1)
    assert lung.info["counts"]["computed"] == 14
    pd.testing.assert_frame_equal(run.features[list(lung.features.columns)], lung.features)
    whole = run.features.set_index("image_id")
    parts = sum(whole[f"{z}_shape2D_PixelSurface"] for z in ("upper", "middle", "lower"))
    np.testing.assert_allclose(parts, whole["shape2D_PixelSurface"])
    assert set(run.controls) == {"shuffled", "outside"}
    assert "lower_glcm_Contrast" in run.controls["shuffled"].columns
    assert "lower_glcm_Contrast" not in run.controls["outside"].columns
    assert run_radiomics(data, params, region="zones", jobs=1).info["counts"]["computed"] == 0


def test_zone_failures_leave_values_missing_not_images(tmp_path, params) -> None:
    from biomark.features.radiomics import extract_zone_features

    images = np.full((2, 64, 64), 90, dtype=np.uint8)
    images[:, ::2, :] = 140
    masks = np.zeros_like(images)
    masks[0, 8:56, 6:28] = masks[0, 8:56, 36:58] = 1  # two lungs, every zone > 50 px
    masks[1, 8:56, 6:28] = masks[1, 8:56, 36:58] = 1
    masks[1, 8:10, 6:28] = 1
    masks[1, 10:56, 6:28] = 0  # image-left lung 2 rows high: its thirds are tiny ...
    masks[1, 8:56, 36:58] = 0
    masks[1, 8:11, 36:58] = 1  # ... and so are the right lung's
    out = extract_zone_features(
        images, masks, ["a", "b"], params, cache_dir=tmp_path / "cache", jobs=1
    )
    assert list(out.features["image_id"]) == ["a", "b"]
    table = out.features.set_index("image_id")
    assert np.isfinite(table.loc["a", "upper_firstorder_Mean"])
    assert np.isnan(table.loc["b", "upper_firstorder_Mean"])
    failed = out.failures[out.failures["image_id"] == "b"]
    assert failed["reason"].str.startswith("upper zone: ").any()
    assert failed["action"].str.contains("zone values missing").any()


def test_batches_by_reference_carry_rows_not_pixels(
    phantom_dataset: Path, params, tmp_path: Path
) -> None:
    """With ``by_reference`` a runner gets (file, row) references that resolve to the same
    features."""
    from biomark.features.radiomics import extract_chunk_into_cache

    shutil.copytree(phantom_dataset, tmp_path / "a", ignore=shutil.ignore_patterns("radiomics"))
    shutil.copytree(phantom_dataset, tmp_path / "b", ignore=shutil.ignore_patterns("radiomics"))
    serial = run_radiomics(tmp_path / "a", params, region="lung", jobs=1, controls=True)
    seen: list[tuple[str, str]] = []

    def runner(content, cache_dir, batches):
        for batch in batches:
            for _, _, image, mask in batch:
                seen.append((type(image).__name__, type(mask).__name__))
            yield extract_chunk_into_cache(content, cache_dir, batch)

    shared = run_radiomics(
        tmp_path / "b",
        params,
        region="lung",
        jobs=1,
        controls=True,
        runner=runner,
        by_reference=True,
    )
    pd.testing.assert_frame_equal(shared.features, serial.features)
    for name in ("shuffled", "outside"):
        pd.testing.assert_frame_equal(shared.controls[name], serial.controls[name])
    n_real = len(serial.features)
    assert seen[:n_real] == [("tuple", "tuple")] * n_real, "the real region: both by reference"
    assert set(seen[n_real:]) == {("ndarray", "tuple"), ("tuple", "ndarray")}, (
        "controls: the computed side travels"
    )


# ------------------------------------------------------------------ worker lifetime
_ORPHAN_SCRIPT = """
import sys
import numpy as np
from biomark.features.radiomics import extract_features
from biomark.features.radiomics_params import load_params

rng = np.random.default_rng(0)
n = 3000  # far more work than the test waits for: the parent is killed mid-run
images = rng.integers(20, 230, size=(n, 48, 48), dtype=np.uint8)
masks = np.zeros_like(images)
masks[:, 8:40, 8:40] = 1
extract_features(images, masks, [str(i) for i in range(n)], load_params(sys.argv[1]),
                 cache_dir=sys.argv[2], jobs=2, chunk_size=4)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process-tree inspection via psutil on Linux"
)
def test_workers_exit_when_the_parent_is_killed(tmp_path) -> None:
    """kill -9 of a radiomics run must not leave its worker processes behind (issue 14, item 3)."""
    import signal
    import subprocess
    import time

    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(PARAMS_FILE), str(tmp_path / "cache")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: list = []
    everything: list = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)
            workers = [
                c for c in children if "LokyProcess" in " ".join(c.cmdline()) or "loky" in c.name()
            ]
            # wait until both workers have started extracting (their first results are in the cache)
            if len(workers) >= 2 and len(FeatureCache(tmp_path / "cache")) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (
            f"the extraction ended early: {proc.stderr.read().decode()[-2000:]}"
        )
        assert len(workers) >= 2, "no worker processes appeared"
        everything = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(everything, timeout=60)
        assert not alive, (
            f"still running 60 s after the parent was killed: {[p.pid for p in alive]}"
        )
    finally:  # never leave processes behind, whatever failed
        if proc.poll() is None:
            proc.kill()
        for child in workers + everything:
            with contextlib.suppress(psutil.Error):
                child.kill()


def test_a_dead_worker_is_a_named_error_not_a_hang(tmp_path, params) -> None:
    """A worker killed mid-batch (out of memory, kill -9) ends the run with a RunError that says how
    to resume."""
    from biomark.exceptions import RunError
    from biomark.features.radiomics_jobs import ExtractionJob, collect
    from biomark.features.worker_pool import worker_pool

    images = np.full((1, 32, 32), 100, dtype=np.uint8)
    job = ExtractionJob(images, np.ones_like(images), ["a"], params, tmp_path)
    with pytest.raises(RunError, match="worker process died.*re-run to resume"):
        with worker_pool(2) as pool:
            collect([(pool.submit(os._exit, 1), job)])
