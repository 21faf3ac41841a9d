"""Training a lung model and writing its masks into a dataset (biomark.pipelines.lung_model,
CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomark.cli import main
from biomark.data.dataset import load_dataset
from biomark.data.masks import dataset_lung_masks
from biomark.data.phantom import PHANTOM_CLASSES, render_phantom
from biomark.exceptions import DataError
from biomark.pipelines.lung_model import train_lung_model, write_model_masks

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six phantom films with their true masks, in the Shenzhen layout."""
    folder = tmp_path_factory.mktemp("refs") / "phantom_refs"
    for sub in ("CXR_png", "mask"):
        (folder / sub).mkdir(parents=True)
    for i in range(6):
        image, truth = render_phantom(
            PHANTOM_CLASSES[i % 7], 0.5, np.random.default_rng(400 + i), size=64
        )
        Image.fromarray(image).save(folder / "CXR_png" / f"film{i}.png")
        Image.fromarray(truth.astype(np.uint8) * 255).save(folder / "mask" / f"film{i}_mask.png")
    return folder


@pytest.fixture(scope="module")
def model_file(references: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "lungs.keras"
    trained = train_lung_model(
        [references], out, epochs=1, size=32, cv=2, base_filters=4, depth=2, run_eagerly=True
    )  # three models of one step each: eager steps cost less than tracing
    assert trained.path == out and out.is_file()
    return out


def test_the_record_names_references_settings_and_cross_validated_dice(model_file: Path) -> None:
    info = json.loads(Path(f"{model_file}.json").read_text())
    assert info["references"] == {"phantom_refs": 6}
    assert (info["epochs"], info["size"], info["seed"], info["members"]) == (1, 32, 0, 1)
    assert info["run_eagerly"] is True
    assert "keras" in info["versions"] and info["train_seconds"] > 0
    cv = info["cross_validation"]
    assert cv["folds"] == 2 and len(cv["dice"]) == 6
    assert cv["per_set"]["phantom_refs"]["n"] == 6
    assert all(0.0 <= d <= 1.0 for d in cv["dice"])


def test_model_masks_fill_the_films_without_one_and_leave_a_users_mask(
    model_file: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    ids = pd.read_csv(data / "manifest.csv", dtype=str)["image_id"].tolist()
    side = np.load(data / "cache" / "images.npy", mmap_mode="r").shape[1]
    (data / "masks").mkdir()
    own = np.zeros((side, side), np.uint8)
    own[side // 5 : 4 * side // 5, side // 8 : 7 * side // 8] = 255
    Image.fromarray(own).save(data / "masks" / f"{ids[0]}.png")

    done = write_model_masks(data, model_file)

    assert (done.written, done.kept) == (len(ids) - 1, 1)
    record = json.loads((data / "masks" / "lung_model.json").read_text())
    assert sorted(record["files"]) == sorted(f"{i}.png" for i in ids[1:])
    assert record["model_info"]["epochs"] == 1 and len(record["model_sha256"]) == 64
    np.testing.assert_array_equal(np.asarray(Image.open(data / "masks" / f"{ids[0]}.png")), own)
    table = dataset_lung_masks(load_dataset(data), jobs=1).table
    assert table["mask_source"].tolist() == ["folder"] + ["model"] * (len(ids) - 1)
    # a second model run rewrites its own files, still not the user's
    again = write_model_masks(data, model_file)
    assert (again.written, again.kept) == (len(ids) - 1, 1)
    # without the model's record the files are a user's: the cached mask_source does not linger
    (data / "masks" / "lung_model.json").unlink()
    table = dataset_lung_masks(load_dataset(data), jobs=1).table
    assert set(table["mask_source"]) == {"folder"}


def test_a_run_killed_half_way_owns_its_files_on_the_next_run(
    model_file: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    import biomark.io.atomic as atomic

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    real, calls = atomic.atomic_path, []

    def dies_at_the_fifth_file(*args, **kwargs):
        if str(args[0]).endswith(".png"):
            calls.append(args[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(atomic, "atomic_path", dies_at_the_fifth_file)
    with pytest.raises(KeyboardInterrupt):
        write_model_masks(data, model_file)
    monkeypatch.setattr(atomic, "atomic_path", real)
    assert len(list((data / "masks").glob("*.png"))) == 4  # four files landed before the kill

    done = write_model_masks(data, model_file)

    assert (done.written, done.kept) == (24, 0)  # the four are the model's, written again
    assert set(dataset_lung_masks(load_dataset(data), jobs=1).table["mask_source"]) == {"model"}


def test_cli_trains_and_applies_a_model(
    references: Path, tiny_dataset: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import biomark.pipelines.lung_model as lung_model

    real = lung_model.train_lung_model

    def small(*args, **kwargs):  # the CLI's settings, on the fixture's small U-Net
        return real(
            *args, **{**kwargs, "size": 32, "base_filters": 4, "depth": 2, "run_eagerly": True}
        )

    monkeypatch.setattr(lung_model, "train_lung_model", small)
    out = tmp_path / "cli.keras"
    assert (
        main(
            [
                "data",
                "mask-model",
                "--references",
                str(references),
                "--out",
                str(out),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trained on 6 films (phantom_refs 6)" in printed and f"model: {out}" in printed
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    assert main(["data", "masks", "--data", str(data), "--model", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{out} segmented 24 film(s)" in printed and "(0 already had a mask)" in printed
    assert (
        main(["data", "mask-model", "--references", str(tmp_path / "none"), "--out", str(out)]) == 1
    )
    assert "no such folder of reference films and masks" in capsys.readouterr().err
    assert (
        main(
            ["data", "mask-model", "--references", str(references), "--out", str(tmp_path / "m.h5")]
        )
        == 1
    )
    assert "m.h5: the model file must end in .keras" in capsys.readouterr().err
    assert (
        main(["data", "masks", "--data", str(data), "--model", str(tmp_path / "none.keras")]) == 1
    )
    assert "no lung model file; train one with `biomark data mask-model`" in capsys.readouterr().err


def test_bad_cv_and_model_names_are_refused(references: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--cv 9: needs 2 to 6 folds"):
        train_lung_model([references], tmp_path / "m.keras", epochs=1, size=32, cv=9)
    with pytest.raises(ValueError, match="must end in .keras"):
        train_lung_model([references], tmp_path / "m.h5", epochs=1, size=32)
