from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import biomark.data.build as build_module
import biomark.data.dataset_writer as writer_module
from biomark.data.build import build_dataset
from biomark.data.dataset import load_dataset
from biomark.data.recipe import recipe_from_mapping
from biomark.exceptions import ConfigError, DataError, ImageReadError

SMALL_RECIPE = {
    "name": "small",
    "seed": 3,
    "classes": [
        {"name": "COVID-19", "target": 3, "sources": ["cohen"]},
        {"name": "Edema", "target": 1, "sources": ["nih"]},
        {"name": "Pneumonia", "target": 2, "sources": ["kermany"], "splits": ["train"]},
        {"name": "Normal", "target": 10, "sources": ["kermany"]},
    ],
}


@pytest.fixture
def sources(cohen_dir: Path, actualmed_dir: Path, kermany_dir: Path, nih_dir: Path) -> dict:
    return {"cohen": [cohen_dir, actualmed_dir], "kermany": [kermany_dir], "nih": [nih_dir]}


def test_build_with_recipe(tmp_path: Path, sources: dict, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "ds"
    with caplog.at_level(logging.WARNING):
        result = build_dataset(out, sources=sources, recipe=recipe_from_mapping(SMALL_RECIPE))
    for name in (
        "manifest.csv",
        "summary.csv",
        "failures.csv",
        "duplicates.csv",
        "build.json",
        "cache/images.npy",
        "cache/index.csv",
        "cache/cache.json",
    ):
        assert (out / name).is_file(), name
    dataset = load_dataset(out)
    assert dataset.classes == ("COVID-19", "Edema", "Pneumonia", "Normal")
    assert dataset.images.shape == (result.n_images, 200, 200) and dataset.images.dtype == np.uint8
    counts = dataset.manifest["label"].value_counts().to_dict()
    assert counts == {"COVID-19": 3, "Edema": 1, "Pneumonia": 2, "Normal": 4}
    assert "class Normal: asked 10 from kermany, only 4 available" in caplog.text
    manifest = dataset.manifest
    assert list(manifest.columns[:7]) == [
        "image_id",
        "path",
        "label",
        "patient_id",
        "source",
        "view",
        "sha256",
    ]
    assert manifest["image_id"].is_unique
    assert set(manifest.loc[manifest["label"] == "Pneumonia", "split"]) == {"train"}
    info = json.loads((out / "cache" / "cache.json").read_text())
    assert set(info) == {"size", "n_images", "classes", "manifest_sha256"}
    assert info["manifest_sha256"] == dataset.manifest_sha256
    record = json.loads((out / "build.json").read_text())
    assert (
        record["manifest_sha256"] == dataset.manifest_sha256 and record["recipe"]["name"] == "small"
    )
    assert "packages" in record["environment"]
    summary = pd.read_csv(out / "summary.csv")
    normal = summary.loc[summary["class"] == "Normal"].iloc[0]
    assert (normal["asked"], normal["used"]) == (10, 4)
    failures = pd.read_csv(out / "failures.csv")
    assert {"absent.png", "a3.png"} <= {Path(p).name for p in failures["path"]}
    # the selected Edema row 00000009 has no file: recorded only if the seed picked it first
    assert failures["stage"].isin(["parse", "select"]).all()


def test_rerun_is_identical_and_seed_changes_selection(tmp_path: Path, sources: dict) -> None:
    recipe = recipe_from_mapping(SMALL_RECIPE)
    out = tmp_path / "ds"
    build_dataset(out, sources=sources, recipe=recipe)
    first = (out / "manifest.csv").read_bytes()
    build_dataset(out, sources=sources, recipe=recipe, jobs=2)
    assert (out / "manifest.csv").read_bytes() == first
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    other = build_dataset(tmp_path / "other", sources=sources, recipe=recipe, seed=99)
    a = set(pd.read_csv(out / "manifest.csv")["image_id"])
    b = set(pd.read_csv(other.out_dir / "manifest.csv")["image_id"])
    assert len(a) == len(b) and a != b


def test_failures_list_bad_images_with_reasons(tmp_path: Path, bad_folder: Path) -> None:
    result = build_dataset(tmp_path / "ds", sources={"folder": [bad_folder]})
    assert result.n_images == 6 and result.n_failures == 3
    failures = pd.read_csv(tmp_path / "ds" / "failures.csv").set_index(
        pd.read_csv(tmp_path / "ds" / "failures.csv")["path"].map(lambda p: Path(p).name)
    )
    assert failures.loc["truncated.png", "stage"] == "decode"
    assert failures.loc["notanimage.png", "stage"] == "decode"
    assert "truncated.png" in failures.loc["truncated.png", "reason"]
    assert failures.loc["washedout.png", "stage"] == "contrast"
    assert "< min_contrast 0.150" in failures.loc["washedout.png", "reason"]
    summary = result.summary.set_index("class")
    assert summary.loc["Normal", "low_contrast"] == 1 and summary.loc["Normal", "failed"] == 1
    assert list(failures.columns) == ["source", "image_id", "path", "stage", "reason", "action"]


def test_bad_images_are_replaced_by_next_candidate(tmp_path: Path, bad_folder: Path) -> None:
    recipe = recipe_from_mapping(
        {
            "classes": [
                {"name": "COVID-19", "target": 3, "sources": ["folder"]},
                {"name": "Normal", "target": 3, "sources": ["folder"]},
            ]
        }
    )
    result = build_dataset(tmp_path / "ds", sources={"folder": [bad_folder]}, recipe=recipe)
    assert result.n_images == 6


def test_low_contrast_threshold_can_be_lowered(tmp_path: Path, bad_folder: Path) -> None:
    result = build_dataset(tmp_path / "ds", sources={"folder": [bad_folder]}, min_contrast=0.01)
    assert result.n_images == 7


def test_strict_raises_specific_error(tmp_path: Path, bad_folder: Path, cohen_dir: Path) -> None:
    with pytest.raises(ImageReadError, match="truncated.png"):
        build_dataset(tmp_path / "ds", sources={"folder": [bad_folder]}, strict=True)
    with pytest.raises(DataError, match="unknown finding"):
        build_dataset(tmp_path / "ds2", sources={"cohen": [cohen_dir]}, strict=True)
    assert not (tmp_path / "ds" / "manifest.csv").exists()


def test_manifest_source_with_masks_and_outside_label(tmp_path: Path, manifest_csv: Path) -> None:
    recipe = recipe_from_mapping(
        {
            "classes": [
                {"name": "COVID-19", "sources": ["manifest"]},
                {"name": "Normal", "sources": ["site_A"]},
            ]
        }
    )
    result = build_dataset(tmp_path / "ds", sources={"manifest": [manifest_csv]}, recipe=recipe)
    dataset = load_dataset(tmp_path / "ds")
    assert result.n_images == 4
    assert dataset.masks is not None and set(np.unique(dataset.masks)) == {0, 1}
    assert dataset.manifest["image_id"].tolist() == ["ph000", "ph001", "ph002", "ph003"]
    assert {"severity", "artifact", "mask_path"} <= set(dataset.manifest.columns)
    failures = pd.read_csv(tmp_path / "ds" / "failures.csv")
    assert failures["reason"].str.contains("'Tuberculosis' is not a class of the recipe").any()
    with pytest.raises(DataError, match="Tuberculosis"):
        build_dataset(
            tmp_path / "ds3", sources={"manifest": [manifest_csv]}, recipe=recipe, strict=True
        )


def test_a_dataset_rebuilds_from_its_own_manifest(tmp_path: Path, manifest_csv: Path) -> None:
    # what the error for a damaged cache tells the user to run: the manifest already holds the
    # columns a build computes (contrast, phash); they were carried twice and broke the
    # duplicate search
    recipe = recipe_from_mapping(
        {
            "classes": [
                {"name": "COVID-19", "sources": ["manifest"]},
                {"name": "Normal", "sources": ["manifest"]},
            ]
        }
    )
    build_dataset(tmp_path / "ds", sources={"manifest": [manifest_csv]}, recipe=recipe)
    first = load_dataset(tmp_path / "ds")
    build_dataset(
        tmp_path / "again", sources={"manifest": [tmp_path / "ds" / "manifest.csv"]}, recipe=recipe
    )
    again = load_dataset(tmp_path / "again")
    assert again.manifest.columns.is_unique
    assert list(again.manifest.columns) == list(first.manifest.columns)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    assert again.manifest["phash"].tolist() == first.manifest["phash"].tolist()


def test_a_damaged_cache_is_named_with_the_command_that_rebuilds_it(
    tmp_path: Path, manifest_csv: Path
) -> None:
    recipe = recipe_from_mapping({"classes": [{"name": "COVID-19", "sources": ["manifest"]}]})
    root = tmp_path / "ds"
    build_dataset(root, sources={"manifest": [manifest_csv]}, recipe=recipe, image_size=32)
    images = root / "cache" / "images.npy"
    images.write_bytes(images.read_bytes()[:200])  # an interrupted copy
    rebuild = f"biomark data build --manifest {root / 'manifest.csv'} --out {root} --size 32"
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_dataset(root)
    assert str(images) in str(err.value) and rebuild in str(err.value)
    (root / "cache" / "cache.json").write_text("{not json")
    with pytest.raises(DataError, match="cache.json: not valid JSON"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("index_csv", "found"),
    [
        (b"junk\n", "not the cache's index (columns image_id and row expected, found junk)"),
        (b"\xff\xfe\xfa", "cannot be read (UnicodeDecodeError"),
        (b'image_id,row\n"a,0\n', "cannot be read (ParserError"),
    ],
    ids=["foreign", "not-text", "truncated"],
)
def test_a_damaged_cache_index_is_named_with_the_command_that_rebuilds_it(
    tmp_path: Path, manifest_csv: Path, index_csv: bytes, found: str
) -> None:
    recipe = recipe_from_mapping({"classes": [{"name": "COVID-19", "sources": ["manifest"]}]})
    root = tmp_path / "ds"
    build_dataset(root, sources={"manifest": [manifest_csv]}, recipe=recipe, image_size=32)
    index = root / "cache" / "index.csv"
    index.write_bytes(index_csv)
    rebuild = f"biomark data build --manifest {root / 'manifest.csv'} --out {root} --size 32"
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value).startswith(f"{index}: {found}") and rebuild in str(err.value)


def test_interrupted_build_keeps_previous_manifest(
    tmp_path: Path, folder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ds"
    build_dataset(out, sources={"folder": [folder_dir]})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "write_cache", boom)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(out, sources={"folder": [folder_dir]}, image_size=64)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert load_dataset(out).size == 200


def test_bad_inputs_are_clear_errors(tmp_path: Path, folder_dir: Path, kermany_dir: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        build_dataset(tmp_path / "ds", sources={"folder": [tmp_path / "nowhere"]})
    with pytest.raises(ConfigError, match="unknown source"):
        build_dataset(tmp_path / "ds", sources={"chexpert": [folder_dir]})
    with pytest.raises(ConfigError, match=r"class COVID-19 takes images from cohen.*--cohen DIR"):
        build_dataset(
            tmp_path / "ds",
            sources={"kermany": [kermany_dir]},
            recipe=recipe_from_mapping(SMALL_RECIPE),
        )
    with pytest.raises(ConfigError, match="jobs=0"):
        build_dataset(tmp_path / "ds", sources={"folder": [folder_dir]}, jobs=0)
    with pytest.raises(DataError, match="no usable images"):
        build_dataset(tmp_path / "ds", sources={"folder": [folder_dir]}, min_contrast=1.0)


def _cli_parser() -> argparse.ArgumentParser:
    from biomark.cli import data_build

    parser = argparse.ArgumentParser()
    data_build.add_parser(parser.add_subparsers())
    return parser


def test_cli_run(tmp_path: Path, folder_dir: Path, capsys: pytest.CaptureFixture) -> None:
    args = _cli_parser().parse_args(
        [
            "build",
            "--folder",
            str(folder_dir),
            "--out",
            str(tmp_path / "ds"),
            "--size",
            "64",
            "--jobs",
            "1",
        ]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "4 images, 0 failures" in printed and str(tmp_path / "ds" / "manifest.csv") in printed
    assert load_dataset(tmp_path / "ds").size == 64


def test_cli_through_main(tmp_path: Path, folder_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from biomark import cli

    assert (
        cli.main(
            ["-q", "data", "build", "--folder", str(folder_dir), "--out", str(tmp_path / "ds")]
        )
        == 0
    )
    assert "manifest.csv" in capsys.readouterr().out
    assert cli.main(["-q", "data", "build", "--out", str(tmp_path / "x")]) == 1
    assert "no sources given" in capsys.readouterr().err


def test_cli_help_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, biomark.cli.data_build; "
        "print(sorted(m for m in ('pandas', 'numpy', 'PIL', 'joblib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_full_disk_keeps_previous_dataset_and_leaves_no_temporaries(
    tmp_path: Path, folder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomark.exceptions import DiskFullError

    from tmpfs import fill, mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)

    with mounted_tmpfs(tmp_path / "small", "512k") as disk:
        out = disk / "ds"
        build_dataset(out, sources={"folder": [folder_dir]}, image_size=16)
        before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        fill(disk, leave=48 * 1024)
        with pytest.raises(
            DiskFullError,
            match=r"ds: not enough space for the dataset's image cache \(4 images\): "
            r"it needs at least 15\d\.\d KiB but only \d+\.\d KiB is free",
        ):
            build_dataset(out, sources={"folder": [folder_dir]}, image_size=200)
        # The disk fills between that check and the writes (another process): the write's own
        # reservation.
        monkeypatch.setattr(writer_module, "check_free_space", lambda *args: None)
        with pytest.raises(
            DiskFullError,
            match=rf"{out}/cache/images\.npy: no space left on device .*needs 156\.\d KiB",
        ):
            build_dataset(out, sources={"folder": [folder_dir]}, image_size=200)
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before, "the previous dataset is intact"
        assert not [p for p in disk.rglob("*") if p.name.startswith(".")], (
            "no staging folder or temporary file"
        )
        assert load_dataset(out).size == 16


def test_read_only_out_fails_before_decoding(
    tmp_path: Path, folder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomark import cli
    from biomark.exceptions import NotWritableError

    from tmpfs import mounted_tmpfs  # tests/ is on sys.path (tests/conftest.py)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded images although --out cannot be written")

    monkeypatch.setattr(build_module, "decode_many", no_decoding)
    with mounted_tmpfs(tmp_path / "ro", "64k", read_only=True) as folder:
        with pytest.raises(
            NotWritableError, match=r"output folder \(--out\) .*ro/ds: cannot write in .*ro"
        ):
            build_dataset(folder / "ds", sources={"folder": [folder_dir]})
        assert (
            cli.main(
                ["-q", "data", "build", "--folder", str(folder_dir), "--out", str(folder / "ds")]
            )
            == 1
        )


def test_manifest_keeps_original_size_mode_and_bit_depth(
    tmp_path: Path, make_xray, save_png
) -> None:
    from PIL import Image

    root = tmp_path / "site"
    save_png(root / "covid" / "gray.png", make_xray(1, (48, 64)))
    Image.fromarray(np.stack([make_xray(2, (50, 40))] * 3, axis=-1)).save(
        root / "covid" / "rgb.jpg", quality=95
    )
    save_png(root / "normal" / "deep.png", make_xray(3, (40, 40)).astype(np.uint16) * 257)
    build_dataset(tmp_path / "ds", sources={"folder": [root]}, image_size=32)
    manifest = load_dataset(tmp_path / "ds").manifest
    info = {
        Path(p).name: (w, h, m, b)
        for p, w, h, m, b in manifest[["path", "width", "height", "mode", "bit_depth"]].itertuples(
            index=False
        )
    }
    assert info == {
        "gray.png": (64, 48, "L", 8),
        "rgb.jpg": (40, 50, "RGB", 8),
        "deep.png": (40, 40, "I;16", 16),
    }
    columns = manifest.columns.tolist()
    assert columns[-6:] == ["width", "height", "mode", "bit_depth", "contrast", "phash"]
    assert manifest["image_id"].tolist() == ["site-gray", "site-rgb", "site-deep"]


def test_a_source_mixing_shapes_and_sizes_is_a_warning(
    tmp_path: Path, make_xray, save_png, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "kermany_copy"
    for k in range(8):
        save_png(root / "pneumonia" / f"film{k}.png", make_xray(10 + k, (48, 64)))
        save_png(root / "normal" / f"film{k}.png", make_xray(20 + k, (48, 64)))
    for k in range(4):  # squashed re-saves, all of one class (a shortcut)
        save_png(root / "pneumonia" / f"resave{k}.png", make_xray(30 + k, (18, 18)))
    with caplog.at_level(logging.WARNING, logger="biomark.data.build"):
        build_dataset(tmp_path / "ds", sources={"folder": [root]}, image_size=32, min_contrast=0.0)
    assert (
        "source kermany_copy: mixes image shapes (16 landscape, 4 square of 20; e.g. square 18x18; "
        "per class: Pneumonia 4/12, Normal 0/8; with the class: chi-square p = 0.21): square copies"
    ) in caplog.text
    assert (
        "mixes resolutions (4 of 20 images have a short side over 2.5x off the median 48 px, e.g. "
        "18x18; per class: Pneumonia 4/12, Normal 0/8; with the class: chi-square p = 0.21)"
    ) in caplog.text
    summary = pd.read_csv(tmp_path / "ds" / "summary.csv", keep_default_na=False).set_index("class")
    assert summary.loc[
        "Pneumonia", ["median_size", "square", "off_resolution", "size_warning"]
    ].tolist() == ["64x48", 4, 4, "kermany_copy: shape+resolution"]
    assert summary.loc["Normal", ["square", "off_resolution"]].tolist() == [0, 0]
    record = json.loads((tmp_path / "ds" / "build.json").read_text())
    assert record["warnings"][0].startswith("source kermany_copy: mixes image shapes")
    sizes = record["image_sizes"][0]
    assert (sizes["source"], sizes["square"], sizes["landscape"], sizes["shape_mix"]) == (
        "kermany_copy",
        4,
        16,
        True,
    )


def test_unreadable_files_of_a_folder_reach_failures_csv(
    tmp_path: Path, folder_dir: Path, make_xray
) -> None:
    from PIL import Image

    Image.fromarray(make_xray(5)).save(folder_dir / "Normal" / "old.bmp")
    Image.fromarray(make_xray(6)).save(folder_dir / "Normal" / "scan.tif")
    result = build_dataset(tmp_path / "ds", sources={"folder": [folder_dir]})
    failures = pd.read_csv(tmp_path / "ds" / "failures.csv")
    assert result.n_images == 4 and result.n_failures == 2
    assert sorted(failures["image_id"]) == ["myxrays-old.bmp", "myxrays-scan.tif"]
    assert failures["stage"].eq("parse").all() and failures["source"].eq("myxrays").all()
    assert failures["reason"].str.startswith("unsupported image format").all()
    assert json.loads((tmp_path / "ds" / "build.json").read_text())["counts"][
        "failures_by_stage"
    ] == {"parse": 2}


def test_patient_282_of_two_hospitals_stays_two_patients(
    tmp_path: Path, make_xray, save_png
) -> None:
    csvs = []
    for k, hospital in enumerate(["hospital_a", "hospital_b"]):
        folder = tmp_path / hospital
        save_png(folder / "x.png", make_xray(40 + k))
        pd.DataFrame(
            {"path": ["x.png"], "label": ["COVID-19"], "patient_id": ["282"], "source": [hospital]}
        ).to_csv(folder / "list.csv", index=False)
        csvs.append(folder / "list.csv")
    build_dataset(tmp_path / "ds", sources={"manifest": csvs}, image_size=32)
    manifest = load_dataset(tmp_path / "ds").manifest
    assert sorted(manifest["patient_id"]) == ["hospital_a-282", "hospital_b-282"]
    assert sorted(manifest["image_id"]) == ["hospital_a-x", "hospital_b-x"]


def test_shapes_that_mix_independently_of_the_class_are_information_not_a_warning(
    tmp_path: Path, make_xray, save_png, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "site"
    for label in ("pneumonia", "normal"):  # the same share of portrait films in both classes
        for k in range(6):
            save_png(root / label / f"wide{k}.png", make_xray(40 + k, (48, 64)))
        for k in range(3):
            save_png(root / label / f"tall{k}.png", make_xray(60 + k, (64, 48)))
    with caplog.at_level(logging.INFO, logger="biomark.data.build"):
        build_dataset(tmp_path / "ds", sources={"folder": [root]}, image_size=32, min_contrast=0.0)
    mixed = [r for r in caplog.records if "mixes image shapes" in r.getMessage()]
    assert len(mixed) == 1 and mixed[0].levelno == logging.INFO
    assert "with the class: chi-square p = 1" in mixed[0].getMessage()
