"""``biomark data masks`` (biomark.cli.data_masks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from biomark.cli import main


def test_data_masks_computes_once_and_imports_a_masks_folder(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    assert main(["data", "masks", "--data", str(data), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    n = len(pd.read_csv(data / "manifest.csv"))
    assert f"of {n} plausible" in out and "lung_masks.npy" in out
    assert (data / "cache" / "lung_masks.json").is_file()

    first = pd.read_csv(data / "manifest.csv", dtype=str)["image_id"].iat[0]
    side = np.load(data / "cache" / "images.npy", mmap_mode="r").shape[1]
    folder = tmp_path / "my_masks"
    folder.mkdir()
    mask = np.zeros((side, side), np.uint8)
    mask[side // 5 : 4 * side // 5, side // 8 : 7 * side // 16] = 255
    mask[side // 5 : 4 * side // 5, 9 * side // 16 : 7 * side // 8] = 255
    Image.fromarray(mask).save(folder / f"{first}.png")
    assert main(["data", "masks", "--data", str(data), "--masks", str(folder), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "copied 1 mask file" in out and "folder: " in out
    table = pd.read_csv(data / "cache" / "lung_masks.csv", dtype={"image_id": str})
    assert table.loc[table["image_id"] == first, "mask_source"].iat[0] == "folder"
    assert (data / "masks" / f"{first}.png").is_file()
    assert main(["data", "masks", "--data", str(data), "--masks", str(tmp_path / "empty")]) == 1
