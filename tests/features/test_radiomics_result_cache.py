"""Reuse of a finished radiomics output folder (``finished.json``): hits, misses, byte identity,
interrupted runs.

One cold run on a 7-image, 64-px phantom is made once per module (with its
per-image cache); every test works on a copy of that dataset folder, so a
recomputation extracts only what its change touches.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import biomark.features.radiomics_result_cache as rc
import biomark.features.radiomics_run as rr
from biomark.features.radiomics_params import load_params
from biomark.features.radiomics_run import run_radiomics

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "analyses" / "radiomics_cxr2d.yaml"
OUT = Path("radiomics") / "radiomics_cxr2d_lung"


@pytest.fixture(scope="module")
def params():
    return load_params(PARAMS_FILE)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, params) -> Path:
    """A dataset folder with a finished lung + controls run (and its per-image cache)."""
    from biomark.data.build import build_dataset
    from biomark.data.phantom import generate_phantom

    base = tmp_path_factory.mktemp("finished")
    csv = generate_phantom(base / "raw", n_per_class=1, seed=0, image_size=64)
    build_dataset(base / "data", sources={"manifest": [csv]}, image_size=64, jobs=1)
    run_radiomics(base / "data", params, region="lung", jobs=1, controls=True)
    return base / "data"


@pytest.fixture
def data(finished: Path, tmp_path: Path, params) -> Path:
    """A copy of the finished dataset folder, its outputs rewritten for the copy's path (from the
    per-image cache).

    The dataset's path is part of the key (``radiomics.json`` records it), so
    the copy's first run computes, without extracting anything.
    """
    data = Path(shutil.copytree(finished, tmp_path / "data"))
    assert (
        run_radiomics(data, params, region="lung", jobs=1, controls=True).info["counts"]["computed"]
        == 0
    )
    return data


@pytest.fixture
def computes(monkeypatch) -> list[int]:
    """Counts the runs that compute (masks, extraction, tables) instead of reusing."""
    calls: list[int] = []
    original = rr._compute

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(rr, "_compute", counting)
    return calls


def _snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (the per-image cache and the record left out)."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and not p.relative_to(out).as_posix().startswith("cache/")
        and p.name != rc.RECORD
    }


def _assert_same_run(a, b) -> None:
    pd.testing.assert_frame_equal(a.features, b.features)
    # an empty failures table built in memory has a str "variant" column; read back from CSV, an
    # object one
    pd.testing.assert_frame_equal(a.failures, b.failures, check_dtype=bool(len(a.failures)))
    pd.testing.assert_frame_equal(a.masks, b.masks)
    assert a.controls.keys() == b.controls.keys()
    for name in a.controls:
        pd.testing.assert_frame_equal(a.controls[name], b.controls[name])


def _without_run_facts(info: dict) -> dict:
    """``radiomics.json`` less what differs between two computing runs of the same inputs."""
    info = json.loads(json.dumps(info))
    info["environment"].pop("created")
    info["dataset"].pop("root")
    for counts in [info["counts"], *info["controls"].values()]:
        counts.pop("computed")
        counts.pop("from_cache")
    return info


def _change_one_image(data: Path) -> None:
    images = np.load(data / "cache" / "images.npy")
    images[2, 20:40, 20:40] = (
        images[2, 20:40, 20:40] // 2 + 7
    )  # inside the lungs of a 64-px phantom
    np.save(data / "cache" / "images.npy", images)


# ------------------------------------------------------------------ a warm re-run
def test_warm_rerun_reuses_the_outputs_untouched(data: Path, params, computes, monkeypatch) -> None:
    out = data / OUT
    before = _snapshot(out)
    cold_info = json.loads((out / "radiomics.json").read_text())
    monkeypatch.setattr(rr, "region_masks_for", lambda *a, **k: pytest.fail("masks recomputed"))
    again = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    assert computes == [] and _snapshot(out) == before
    counts = again.info["counts"]
    assert counts["computed"] == 0 and counts["from_cache"] == 7
    assert all(c["computed"] == 0 and c["from_cache"] == 7 for c in again.info["controls"].values())
    assert _without_run_facts(again.info) == _without_run_facts(cold_info)
    _assert_same_run(again, rr.load_radiomics(out))
    assert set(again.controls) == {"shuffled", "outside"}


def test_reused_run_equals_the_cold_run_in_memory(finished: Path, tmp_path: Path, params) -> None:
    """What a warm run returns (read from the files) equals what the computing run returned (built
    in memory)."""
    data = Path(shutil.copytree(finished, tmp_path / "data"))
    computed = run_radiomics(
        data, params, region="lung", jobs=1, controls=True
    )  # a new path: computes
    warm = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    _assert_same_run(warm, computed)
    assert warm.out_dir == computed.out_dir


# ------------------------------------------------------------------ what makes a run compute again
def _other_params(tmp_path: Path) -> Path:
    content = yaml.safe_load(PARAMS_FILE.read_text())
    content["setting"]["binWidth"] = 16
    path = tmp_path / "other" / PARAMS_FILE.name  # same stem: the same output folder
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(content))
    return path


#: What the log says changed, per change (the outputs' own changes name the file).
REASONS = {
    "image": "the dataset's images, masks or manifest changed since the last run",
    "params": "the parameter file changed",
    "controls": "the controls setting changed",
    "seed": "the seed changed",
    "masks_folder": "the dataset's masks folder changed",
    "manifest": "the dataset's images, masks or manifest changed",
    "code": "biomark's radiomics code changed",
    "output_edited": "failures.csv: changed or missing since the run that wrote it",
    "output_deleted": "features.parquet: changed or missing since the run that wrote it",
}


@pytest.mark.parametrize("change", list(REASONS))
def test_any_change_of_an_input_recomputes(
    data: Path, tmp_path: Path, params, computes, change: str, monkeypatch, caplog
) -> None:
    out = data / OUT
    kwargs = {"region": "lung", "jobs": 1, "controls": True, "seed": 0}
    caplog.set_level(logging.INFO, logger=rc.__name__)
    if change == "code":
        monkeypatch.setattr(rc, "_sources_digest", lambda: "another version of the code")
    elif change == "image":
        _change_one_image(data)
    elif change == "params":
        params = load_params(_other_params(tmp_path))
    elif change == "controls":
        kwargs["controls"] = False
    elif change == "seed":
        kwargs["seed"] = 1
    elif change == "masks_folder":
        (data / "masks").mkdir()
        (data / "masks" / "unrelated.png").write_bytes(b"not a mask of any image")
    elif change == "manifest":
        with open(data / "manifest.csv", "a", encoding="utf-8") as handle:
            handle.write("\n")  # same rows, other bytes
    elif change == "output_edited":
        (out / "failures.csv").write_text("variant,image_id,stage,reason,action\n")
    else:
        (out / "controls" / "outside" / "features.parquet").unlink()
    run = run_radiomics(data, params, **kwargs)
    assert computes == [1], f"{change}: the earlier outputs were reused"
    assert REASONS[change] in caplog.text  # the log says why
    assert run.info["seed"] == kwargs["seed"] and bool(run.controls) == kwargs["controls"]
    if change == "image":
        assert (
            run.info["counts"]["computed"] == 1
        )  # the changed image only; the rest from the per-image cache
    if change == "params":
        assert (
            run.info["params"]["settings_hash"]
            == params.settings_hash
            != load_params(PARAMS_FILE).settings_hash
        )
    run_radiomics(data, params, **kwargs)
    assert computes == [1], f"{change}: the recomputed outputs were not reused by the next run"


def test_region_is_part_of_the_key(finished: Path, params) -> None:
    keys = [
        rc.result_key(finished, params, region=r, controls=True, seed=0).value
        for r in ("lung", "zones", "image")
    ]
    assert keys[0] != keys[1] != keys[2] != keys[0]


def test_recomputed_output_is_byte_identical_to_a_cold_run(
    data: Path, finished: Path, tmp_path: Path, params
) -> None:
    """After a change, the output (mostly from the per-image cache) equals a cold run's on the same
    inputs, byte for byte."""
    _change_one_image(data)
    warm = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    fresh = Path(
        shutil.copytree(data, tmp_path / "fresh", ignore=shutil.ignore_patterns("radiomics"))
    )
    cold = run_radiomics(fresh, params, region="lung", jobs=1, controls=True)
    assert cold.info["counts"]["computed"] == 7 and warm.info["counts"]["computed"] == 1
    a, b = _snapshot(warm.out_dir), _snapshot(cold.out_dir)
    assert a.keys() == b.keys()
    assert [name for name in a if name != "radiomics.json" and a[name] != b[name]] == []
    info_a, info_b = (json.loads(x["radiomics.json"]) for x in (a, b))
    assert _without_run_facts(info_a) == _without_run_facts(info_b)


# ------------------------------------------------------------------ interrupted runs
def test_a_run_killed_half_way_leaves_no_record(data: Path, params, monkeypatch) -> None:
    """A run with other settings dies after rewriting masks and gallery: the next run cannot reuse
    them."""
    out = data / OUT
    original = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    kill = [True]
    write_controls = rr._write_controls

    def killed_once(*args, **kwargs):
        if kill:
            kill.pop()
            raise KeyboardInterrupt
        return write_controls(*args, **kwargs)

    monkeypatch.setattr(rr, "_write_controls", killed_once)
    with pytest.raises(KeyboardInterrupt):
        run_radiomics(data, params, region="lung", jobs=1, controls=True, seed=3)
    assert not (out / rc.RECORD).exists()
    monkeypatch.setattr(rr, "reused_run", lambda out: pytest.fail("half-written outputs reused"))
    resumed = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    _assert_same_run(resumed, original)
    assert (out / rc.RECORD).is_file()


# ------------------------------------------------------------------ the hash memo
def test_unchanged_files_are_not_hashed_again(data: Path, params, monkeypatch) -> None:
    import biomark.provenance as provenance

    monkeypatch.setattr(
        rc, "_RACY_NS", 0
    )  # trust hashes of files changed just now (the test made them)
    out = data / OUT
    run_radiomics(
        data, params, region="lung", jobs=1, controls=True
    )  # the hashes are trusted from now on
    record = json.loads((out / rc.RECORD).read_text())
    assert set(record["inputs"]) == {
        "manifest.csv",
        "cache/images.npy",
        "cache/masks.npy",
        "cache/index.csv",
        "cache/cache.json",
    }
    monkeypatch.setattr(provenance, "file_sha256", lambda path: pytest.fail(f"{path} hashed again"))
    assert (
        run_radiomics(data, params, region="lung", jobs=1, controls=True).info["counts"]["computed"]
        == 0
    )


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(
    data: Path, params, computes, monkeypatch
) -> None:
    """Bytes changed in place, modification time set back: the change time differs, so the file is
    hashed."""
    monkeypatch.setattr(rc, "_RACY_NS", 0)
    run_radiomics(data, params, region="lung", jobs=1, controls=True)
    computes.clear()
    images = data / "cache" / "images.npy"
    stat = images.stat()
    array = np.load(images, mmap_mode="r+")
    array[2, 30, 30] ^= 0xFF
    array.flush()
    del array
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert images.stat().st_size == stat.st_size and images.stat().st_mtime_ns == stat.st_mtime_ns
    run_radiomics(data, params, region="lung", jobs=1, controls=True)
    assert computes == [1]


def test_recent_hashes_are_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    digest, memo = rc._file_digest(path, None)
    assert (
        memo is None
        and digest == rc._file_digest(path, {"stat": rc._stat(path), "sha256": digest})[0]
    )


def test_masks_folder_name_matches_the_masks_module() -> None:
    from biomark.data.masks import MASKS_DIR

    assert rc._MASKS_DIR == MASKS_DIR


def test_sources_exist() -> None:
    package = Path(rc.__file__).resolve().parents[1]
    assert [s for s in rc._SOURCES if not (package / s).is_file()] == []


def test_a_folder_that_cannot_store_new_hashes_is_still_reused(
    data: Path, params, computes, monkeypatch
) -> None:
    """A warm run that re-took the hashes but cannot write the record (read-only folder) still
    reuses the outputs."""
    from biomark.exceptions import NotWritableError

    monkeypatch.setattr(rc, "_RACY_NS", 0)  # the hashes of the copy's new files become storable

    def read_only(*args, **kwargs):
        raise NotWritableError("read-only")

    monkeypatch.setattr(rc, "_write_record", read_only)
    again = run_radiomics(data, params, region="lung", jobs=1, controls=True)
    assert computes == [] and again.info["counts"]["from_cache"] == 7
