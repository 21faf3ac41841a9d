from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from biomark.data.build import build_dataset
from biomark.data.duplicates import find_duplicates, near_pairs


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b101)
    i, j, d = near_pairs(hashes, 6, block=64)
    brute = {(a, b) for a in range(300) for b in range(a + 1, 300)
             if bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= 6}
    assert set(zip(i.tolist(), j.tolist())) == brute and (3, 10) in brute
    assert d[list(zip(i, j)).index((3, 10))] == 2


def test_find_duplicates_kinds_and_filtering() -> None:
    manifest = pd.DataFrame({
        "image_id": ["a", "b", "c", "d", "e"],
        "label": ["COVID-19", "Normal", "Normal", "Normal", "Normal"],
        "patient_id": ["p1", "p2", "p3", "p3", "p4"],
        "sha256": ["s1", "s1", "s3", "s3", "s5"],
        "phash": ["ffff000000000000", "ffff000000000000", "0f0f0f0f0f0f0f0f", "0f0f0f0f0f0f0f0f",
                  "0f0f0f0f0f0f0f0e"],
    })
    pairs = find_duplicates(manifest, 4)
    rows = {(r.image_id_a, r.image_id_b): r for r in pairs.itertuples()}
    assert rows[("a", "b")].kind == "exact" and rows[("a", "b")].cross_class
    assert ("c", "d") not in rows  # same class and patient: harmless
    assert rows[("c", "e")].kind == "near" and rows[("c", "e")].distance == 1 and rows[("c", "e")].cross_patient


def test_duplicates_in_a_build(tmp_path: Path, make_xray, save_png) -> None:
    xray, save = make_xray, save_png
    root = tmp_path / "dup"
    original = save(root / "covid" / "x.png", xray(900, (96, 128)))
    (root / "normal").mkdir()
    (root / "normal" / "copy.png").write_bytes(original.read_bytes())
    small = Image.fromarray(xray(900, (96, 128))).resize((120, 90))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=90)
    (root / "pneumonia").mkdir()
    (root / "pneumonia" / "reencoded.jpg").write_bytes(buffer.getvalue())
    for k in range(3):
        save(root / "normal" / f"other{k}.png", xray(950 + k, (96, 128)))
    result = build_dataset(tmp_path / "ds", sources={"folder": [root]})
    pairs = pd.read_csv(tmp_path / "ds" / "duplicates.csv")
    assert result.n_duplicate_pairs == len(pairs)
    kinds = {frozenset((a.split("-", 1)[1], b.split("-", 1)[1])): k
             for a, b, k in zip(pairs["image_id_a"], pairs["image_id_b"], pairs["kind"])}
    assert kinds[frozenset(("x", "copy"))] == "exact"
    assert kinds[frozenset(("x", "reencoded"))] == "near"
    assert not any(name.startswith("other") for pair in kinds for name in pair)
