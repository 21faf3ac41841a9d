"""Small fixtures in the real source layouts, with tiny generated radiograph-like images.

Column names, file names and folder nesting copy the public datasets
(Cohen ``filename`` vs Actualmed ``imagename``/``Patientid``, Figure1 with
no file-name column, NIH pipe-separated labels and nested ``images_00N/images``
folders, Kermany ``person123_bacteria_456.jpeg`` names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


def xray(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A radiograph-ish uint8 image: dark background, two bright 'lungs' inverted, noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    image = 40 + 150 * (yy / h) + rng.normal(0, 12, shape)
    for cx in (0.3 + rng.uniform(-0.05, 0.05), 0.7 + rng.uniform(-0.05, 0.05)):
        lung = ((xx / w - cx) / 0.15) ** 2 + ((yy / h - 0.5) / 0.35) ** 2 < 1
        image[lung] -= 60 + rng.uniform(0, 30)
    blobs = rng.integers(0, 2, size=(4, 4)).repeat(h // 4 + 1, 0).repeat(w // 4 + 1, 1)[:h, :w]
    image += 35 * blobs
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def low_contrast(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """An image squeezed into a narrow gray band (contrast score ~0.05)."""
    return (120 + xray(seed, shape) // 20).astype(np.uint8)


def truncate(path: Path, keep: int = 60) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


COHEN_COLUMNS = [
    "patientid",
    "offset",
    "sex",
    "age",
    "finding",
    "survival",
    "view",
    "modality",
    "date",
    "location",
    "folder",
    "filename",
    "doi",
    "url",
    "license",
    "clinical_notes",
    "other_notes",
    "Unnamed: 28",
]


@pytest.fixture
def cohen_dir(tmp_path: Path) -> Path:
    """covid-chestxray-dataset layout: 8 usable frontal X-rays, plus rows to skip or fail."""
    root = tmp_path / "covid-chestxray-dataset"
    rows = [
        ("2", "COVID-19", "PA", "X-ray", "c1.jpeg", True),
        ("3", "COVID-19, ARDS", "AP", "X-ray", "c2.png", True),
        ("4", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "c3.jpg", True),
        ("5", "SARS", "PA", "X-ray", "p1.jpg", True),
        ("6", "Streptococcus", "ap semi erect", "X-ray", "p2.jpg", True),
        ("7", "Pneumonia/Bacterial/Klebsiella", "PA", "X-ray", "p3.png", True),
        ("8", "No Finding", "PA", "X-ray", "n1.png", True),
        ("8", "No Finding", "AP", "X-ray", "n2.png", True),
        ("9", "todo", "PA", "X-ray", "u1.png", True),
        ("10", "Tuberculosis", "PA", "X-ray", "u2.png", True),
        ("11", "COVID-19", "L", "X-ray", "lat.png", True),
        ("12", "COVID-19", "Axial", "CT", "ct.png", True),
        ("13", "COVID-19", "PA", "X-ray", "absent.png", False),
    ]
    records = []
    for i, (pid, finding, view, modality, name, present) in enumerate(rows):
        if present:
            save(root / "images" / name, xray(100 + i, (56, 64) if i % 2 else (64, 48)))
        record = dict.fromkeys(COHEN_COLUMNS, "")
        record.update(
            patientid=pid,
            finding=finding,
            view=view,
            modality=modality,
            folder="images",
            filename=name,
            sex="M",
            age="60",
            date="2020",
        )
        records.append(record)
    pd.DataFrame(records, columns=COHEN_COLUMNS).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture
def actualmed_dir(tmp_path: Path) -> Path:
    """Actualmed layout: ``Patientid`` and ``imagename`` columns, one row without its file."""
    root = tmp_path / "Actualmed-COVID-chestxray-dataset"
    rows = [
        ("ANON1", "COVID-19", "AP", "a1.png", True),
        ("ANON2", "No finding", "PA", "a2.png", True),
        ("ANON3", "", "PA", "a3.png", False),
    ]
    for i, (_, _, _, name, present) in enumerate(rows):
        if present:
            save(root / "images" / name, xray(200 + i))
    pd.DataFrame(
        [
            {
                "Patientid": p,
                "offset": "",
                "sex": "",
                "age": "",
                "finding": f,
                "view": v,
                "modality": "X-ray",
                "imagename": n,
                "notes": "",
            }
            for p, f, v, n, _ in rows
        ]
    ).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture
def figure1_dir(tmp_path: Path) -> Path:
    """Figure1 layout: no file-name column, image is images/<patientid>.jpg."""
    root = tmp_path / "Figure1-COVID-chestxray-dataset"
    save(root / "images" / "COVID-00001.jpg", xray(300))
    save(root / "images" / "COVID-00002.png", xray(301))
    pd.DataFrame(
        [
            {
                "patientid": "COVID-00001",
                "finding": "COVID-19",
                "view": "AP erect",
                "modality": "X-ray",
                "originalfile": "COVID-0001.jpeg",
            },
            {
                "patientid": "COVID-00002",
                "finding": "COVID-19",
                "view": "PA",
                "modality": "X-ray",
                "originalfile": "COVID-0006.jpeg",
            },
        ]
    ).to_csv(root / "metadata.csv", index=False)
    return root


KERMANY_FILES = {
    ("train", "NORMAL"): [
        "IM-0115-0001.jpeg",
        "NORMAL2-IM-1427-0001.jpeg",
        "IM-0505-0001-0002.jpeg",
    ],
    ("train", "PNEUMONIA"): [
        "person123_bacteria_456.jpeg",
        "person124_virus_250.jpeg",
        "oddname.jpeg",
    ],
    ("test", "NORMAL"): ["IM-0001-0001.jpeg"],
    ("val", "PNEUMONIA"): ["person1946_bacteria_4874.jpeg"],
}


@pytest.fixture
def kermany_dir(tmp_path: Path) -> Path:
    """Folder holding chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/."""
    root = tmp_path / "kermany"
    seed = 400
    for (split, label), names in KERMANY_FILES.items():
        for name in names:
            save(root / "chest_xray" / split / label / name, xray(seed))
            seed += 1
    return root


NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
NIH_ROWS = [
    ("00000001_000.png", "Edema", 1, True),
    ("00000002_000.png", "Effusion", 2, True),
    ("00000003_000.png", "Emphysema", 3, True),
    ("00000004_000.png", "Fibrosis", 4, True),
    ("00000005_000.png", "No Finding", 5, True),
    ("00000005_001.png", "No Finding", 5, True),
    ("00000006_000.png", "Edema|Infiltration", 6, True),
    ("00000007_000.png", "Cardiomegaly|Effusion", 7, True),
    ("00000008_000.png", "Cardiomegaly", 8, True),
    ("00000009_000.png", "Edema", 9, False),
    ("00000010_000.png", "No Finding", 10, False),
]


@pytest.fixture
def nih_dir(tmp_path: Path) -> Path:
    """ChestX-ray14 layout with two label tables and nested images_00N/images folders."""
    root = tmp_path / "nih"
    root.mkdir()
    lines = [NIH_HEADER]
    for i, (name, labels, patient, present) in enumerate(NIH_ROWS):
        lines.append(f"{name},{labels},0,{patient},58,M,PA,2682,2749,0.143,0.143")
        if present:
            save(root / f"images_00{1 + i % 2}" / "images" / name, xray(500 + i, (64, 64)))
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "Data_Entry_2017.csv").write_text(
        NIH_HEADER + "\n00000001_000.png,Hernia,0,1,58,M,PA,1,1,1,1\n"
    )
    return root


@pytest.fixture
def folder_dir(tmp_path: Path) -> Path:
    """Folder-per-class layout with class folder spellings to normalise."""
    root = tmp_path / "myxrays"
    for k, name in enumerate(["covid19/a.png", "covid19/b.png", "Normal/c.jpg", "pneumonia/d.png"]):
        save(root / name, xray(600 + k))
    return root


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """Folder dataset with a truncated, a non-image and a low-contrast file among good ones."""
    root = tmp_path / "bad"
    for k in range(3):
        save(root / "covid" / f"good{k}.png", xray(700 + k))
        save(root / "normal" / f"good{k}.png", xray(710 + k))
    truncate(save(root / "covid" / "truncated.png", xray(720)))
    (root / "normal" / "notanimage.png").write_text("this is not a PNG")
    save(root / "normal" / "washedout.png", low_contrast(730))
    return root


@pytest.fixture
def manifest_csv(tmp_path: Path) -> Path:
    """A phantom-like manifest CSV with masks, extra columns and one Tuberculosis row."""
    root = tmp_path / "ph"
    rows = []
    for k, label in enumerate(["COVID-19", "COVID-19", "Normal", "Normal", "Tuberculosis"]):
        image = xray(800 + k)
        save(root / "images" / f"ph{k:03d}.png", image)
        mask = np.zeros_like(image)
        mask[10:40, 8:30] = 255
        save(root / "masks" / f"ph{k:03d}.png", mask)
        rows.append(
            {
                "image_id": f"ph{k:03d}",
                "path": f"images/ph{k:03d}.png",
                "label": label,
                "patient_id": f"pat{k // 2}",
                "source": "site_A",
                "view": "PA",
                "severity": 0.1 * k,
                "mask_path": f"masks/ph{k:03d}.png",
                "artifact": k % 2 == 0,
            }
        )
    path = root / "phantom.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def make_xray():
    """The :func:`xray` generator, for tests that build their own folders."""
    return xray


@pytest.fixture
def save_png():
    """The :func:`save` helper (creates parent folders)."""
    return save
