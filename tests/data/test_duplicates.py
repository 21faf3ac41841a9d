from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from biomark.data.build import build_dataset
from biomark.data.duplicates import PHASH_BITS, find_duplicates, hash_words, near_pairs


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=300, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b101)
    i, j, d = near_pairs(hashes, 6, block=64)
    brute = {
        (a, b)
        for a in range(300)
        for b in range(a + 1, 300)
        if bin(int(hashes[a]) ^ int(hashes[b])).count("1") <= 6
    }
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == brute and (3, 10) in brute
    assert d[list(zip(i, j, strict=True)).index((3, 10))] == 2


def test_find_duplicates_kinds_and_filtering() -> None:
    manifest = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "label": ["COVID-19", "Normal", "Normal", "Normal", "Normal"],
            "patient_id": ["p1", "p2", "p3", "p3", "p4"],
            "sha256": ["s1", "s1", "s3", "s3", "s5"],
            "phash": [
                "ffff000000000000",
                "ffff000000000000",
                "0f0f0f0f0f0f0f0f",
                "0f0f0f0f0f0f0f0f",
                "0f0f0f0f0f0f0f0e",
            ],
        }
    )
    pairs = find_duplicates(
        manifest
    )  # 64-bit hashes (older manifests): 14 of 256 bits scales to 4 of 64
    rows = {(r.image_id_a, r.image_id_b): r for r in pairs.itertuples()}
    assert rows[("a", "b")].kind == "exact" and rows[("a", "b")].cross_class
    assert ("c", "d") not in rows  # same class and patient: harmless
    assert (
        rows[("c", "e")].kind == "near"
        and rows[("c", "e")].distance == 1
        and rows[("c", "e")].cross_patient
    )


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
    kinds = {
        frozenset((a.split("-", 1)[1], b.split("-", 1)[1])): k
        for a, b, k in zip(pairs["image_id_a"], pairs["image_id_b"], pairs["kind"], strict=True)
    }
    assert kinds[frozenset(("x", "copy"))] == "exact"
    assert kinds[frozenset(("x", "reencoded"))] == "near"
    assert not any(name.startswith("other") for pair in kinds for name in pair)


def test_long_hashes_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    texts = ["".join(rng.choice(list("0123456789abcdef"), PHASH_BITS // 4)) for _ in range(60)]
    texts[7] = texts[2][:-1] + ("0" if texts[2][-1] != "0" else "1")
    words = hash_words(texts)
    assert words.shape == (60, PHASH_BITS // 64)
    bits = [bin(int(t, 16))[2:].zfill(PHASH_BITS) for t in texts]
    brute = {
        (a, b): sum(x != y for x, y in zip(bits[a], bits[b], strict=True))
        for a in range(60)
        for b in range(a + 1, 60)
    }
    i, j, d = near_pairs(words, 110, block=16)
    assert dict(zip(zip(i.tolist(), j.tolist(), strict=True), d.tolist(), strict=True)) == {
        k: v for k, v in brute.items() if v <= 110
    }
    assert (2, 7) in set(zip(i.tolist(), j.tolist(), strict=True))


def test_hashes_of_mixed_lengths_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="lengths"):
        hash_words(["0" * 16, "0" * 64])


def test_phantom_has_no_false_near_duplicates(tmp_path: Path, caplog) -> None:
    """Its stylised anatomy made 5 of 42 images (113 of the default 280) near duplicates of other
    patients."""
    import logging

    from biomark.data.phantom import generate_phantom

    csv = generate_phantom(tmp_path / "phantom", n_per_class=6, seed=0)
    with caplog.at_level(logging.WARNING, logger="biomark.data.duplicates"):
        result = build_dataset(tmp_path / "phantom", sources={"manifest": [csv]})
    assert result.n_images == 42
    assert result.n_duplicate_pairs == 0 and "near-duplicate" not in caplog.text


def test_true_near_duplicates_of_phantom_images_are_caught(tmp_path: Path) -> None:
    """Re-saved, re-encoded and resized copies of phantom films, among other patients' similar
    films."""
    from biomark.data.phantom import generate_phantom

    csv = generate_phantom(tmp_path / "phantom", n_per_class=2, seed=3)
    films = sorted((tmp_path / "phantom" / "images").glob("*.png"))
    root = tmp_path / "folders"
    (root / "covid").mkdir(parents=True)
    (root / "normal").mkdir()
    original = Image.open(films[0]).convert("L")
    original.save(root / "covid" / "x.png")
    copies = {
        "jpeg90.jpg": (original, {"quality": 90}),
        "jpeg50.jpg": (original, {"quality": 50}),
        "half.png": (
            original.resize((original.width // 2, original.height // 2), Image.Resampling.LANCZOS),
            {},
        ),
        "quarter_jpeg.jpg": (
            original.resize((original.width // 4, original.height // 4)),
            {"quality": 75},
        ),
        "resaved16bit.png": (Image.fromarray(np.asarray(original, np.uint16) * 257), {}),
    }
    for name, (image, options) in copies.items():
        image.save(root / "normal" / name, **options)
    for k, film in enumerate(films[1:]):
        Image.open(film).save(root / "normal" / f"other{k}.png")
    build_dataset(tmp_path / "ds", sources={"folder": [root]})
    pairs = pd.read_csv(tmp_path / "ds" / "duplicates.csv")
    found = {
        frozenset((a.split("-", 1)[1], b.split("-", 1)[1])): (k, d)
        for a, b, k, d in zip(
            pairs["image_id_a"], pairs["image_id_b"], pairs["kind"], pairs["distance"], strict=True
        )
    }
    for name in copies:
        kind, distance = found[frozenset(("x", Path(name).stem))]
        assert kind == "near" and distance <= 14, (name, distance)
    assert not any(name.startswith("other") for pair in found for name in pair), (
        "other patients are not duplicates"
    )
    assert csv.is_file()
