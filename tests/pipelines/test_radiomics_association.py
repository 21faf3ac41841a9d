"""``associate_run`` relates units that mean the same thing in every fold to radiomics.

Each fold of ``scratch`` trains its own network, whose unit ``j`` is unrelated to
another fold's unit ``j``: pooling out-of-fold features would correlate a
mixture of units with radiomics, and a cross-validated CCA would test one
network's units on another's. Here every fold's network holds the same 12
units in its own order; unit 0 of the true units follows ``firstorder_Mean``.
"""

from __future__ import annotations

from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.features.deep import fold_dir, write_features
from biomark.pipelines.radiomics import associate_run

N_IMAGES = 60
N_UNITS = 12
N_FOLDS = 3


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Manifest, radiomics (one of them planted in unit 0) and the true units per image."""
    rng = np.random.default_rng(0)
    ids = np.array([f"im{i:03d}" for i in range(N_IMAGES)])
    labels = np.array(["a", "b", "c"])[np.arange(N_IMAGES) % 3]
    manifest = pd.DataFrame(
        {"image_id": ids, "label": labels, "patient_id": ids, "source": "site_A"}
    )
    units = rng.normal(size=(N_IMAGES, N_UNITS))
    radiomics = pd.DataFrame(
        {
            "image_id": ids,
            "firstorder_Mean": units[:, 0] + 0.05 * rng.normal(size=N_IMAGES),
            "glcm_Contrast": rng.normal(size=N_IMAGES),
            "shape2D_Elongation": rng.normal(size=N_IMAGES),
            "glrlm_RunEntropy": rng.normal(size=N_IMAGES),
        }
    )
    return manifest, radiomics, units


def _write_run(
    run_dir: Path, manifest: pd.DataFrame, units: np.ndarray, *, dump_all: bool, noise: float = 0.01
) -> dict:
    """Fold f's network holds the true units in its own order (``order[f][j]``: its channel of unit
    j), each with its own noise of standard deviation ``noise``."""
    rng = np.random.default_rng(1)
    folds = np.arange(N_IMAGES) % N_FOLDS
    order = {f: rng.permutation(N_UNITS) for f in range(N_FOLDS)}
    ids = manifest["image_id"].to_numpy()
    for f in range(N_FOLDS):
        net = np.empty_like(units)
        net[:, order[f]] = units + noise * rng.normal(size=units.shape)
        rows = np.flatnonzero(folds == f)
        meta = pd.DataFrame(
            {
                "image_id": ids,
                "label": manifest["label"].to_numpy(),
                "patient_id": ids,
                "source": "site_A",
                "fold": f,
                "strategy": "scratch",
                "pred": manifest["label"].to_numpy(),
            }
        )
        out = fold_dir(run_dir, "scratch", f)
        write_features(out / "features.parquet", meta.iloc[rows], net[rows])
        if dump_all:
            write_features(out / "features_all.parquet", meta, net)
    return order


def test_units_matched_across_folds_find_the_planted_association(tmp_path: Path) -> None:
    manifest, radiomics, units = _tables()
    order = _write_run(tmp_path / "run", manifest, units, dump_all=True)
    analysis = associate_run(tmp_path / "run", radiomics, manifest)["scratch"]
    assert analysis.unit_basis == "matched"
    planted = f"u{order[0][0]:04d}"  # families are named by the reference fold's (fold 0's) channel
    table = analysis.result.table()
    hit = table[(table.deep == planted) & (table.radiomic == "firstorder_Mean")].iloc[0]
    assert hit["rho"] > 0.95 and hit["significant"]
    assert table.loc[table.significant, "deep"].unique().tolist() == [planted]
    # unit 0 is one of 12 equal units: at most 1/12 of their variance; the unmatched run gets none
    assert 0.02 < analysis.cca["variance_explained"] <= 1.0 / N_UNITS
    assert "u####" in analysis.basis_note and "consensus" in analysis.basis_note
    assert "families matched" not in analysis.basis_note  # every family matches: no warning
    # near-identical members agree on every class's images; the page's tables say so per row
    assert analysis.agree_in[planted] == "a, b, c" and len(analysis.agree_in) == N_UNITS
    from biomark.report.radiomics_page import _with_agreement

    summary = _with_agreement(analysis.result.summary(), analysis)
    assert list(summary.columns[:2]) == ["deep", "members_agree_in"]
    assert (summary["members_agree_in"] == "a, b, c").all()


def test_weak_matches_are_said_to_be_weak_with_the_share_the_other_pages_quote(
    tmp_path: Path,
) -> None:
    """Noisy copies match weakly: the note gives the share of families matched in every fold within
    classes, the measure the report's index quotes, and says to read totals, except for the rows
    whose members agree on some class's images."""
    from biomark.analysis.alignment import GOOD_MATCH_R, align_folds
    from biomark.analysis.unit_families import within_class_member_r
    from biomark.features.deep import feature_columns

    manifest, radiomics, units = _tables()
    _write_run(tmp_path / "run", manifest, units, dump_all=True, noise=1.5)
    analysis = associate_run(tmp_path / "run", radiomics, manifest)["scratch"]
    assert analysis.unit_basis == "matched"
    reference = {
        f: pd.read_parquet(fold_dir(tmp_path / "run", "scratch", f) / "features_all.parquet")[
            feature_columns(N_UNITS)
        ].to_numpy()
        for f in range(N_FOLDS)
    }
    labels = pd.read_parquet(fold_dir(tmp_path / "run", "scratch", 0) / "features_all.parquet")[
        "label"
    ].to_numpy()
    alignment = align_folds(reference, labels=labels)
    share = alignment.share_matched(GOOD_MATCH_R)
    assert share < 0.5
    assert f"only {share:.0%} of families matched at r >= {GOOD_MATCH_R} in every fold" in (
        analysis.basis_note
    )
    assert "read this strategy's totals" in analysis.basis_note
    agreement = within_class_member_r(reference, alignment, labels) >= GOOD_MATCH_R
    expected = {
        f"u{j:04d}": ", ".join(agreement.columns[agreement.loc[j].to_numpy()])
        for j in agreement.index
    }
    assert analysis.agree_in == expected
    coherent = np.mean([bool(v) for v in expected.values()])
    if coherent > 0:
        assert f"the {coherent:.0%} of families whose members agree" in analysis.basis_note
    else:
        assert "members_agree_in" not in analysis.basis_note


def test_the_note_names_the_class_the_units_vary_in_most(tmp_path: Path) -> None:
    """Units that vary ten times as much within class b: the match reads b, and the note says so."""
    manifest, radiomics, units = _tables()
    loud = np.where(manifest["label"].to_numpy() == "b", 10.0, 1.0)[:, None]
    _write_run(tmp_path / "run", manifest, units * loud, dump_all=True)
    note = associate_run(tmp_path / "run", radiomics, manifest)["scratch"].basis_note
    assert "of the median unit's variation within classes lies in b images" in note
    assert "a family matched well agrees on b above all" in note


def test_unmatched_units_are_said_to_mix_networks(tmp_path: Path) -> None:
    """Without features_all the pooled f#### mixes networks: the association fades and the page
    warns."""
    manifest, radiomics, units = _tables()
    _write_run(tmp_path / "run", manifest, units, dump_all=False)
    analyses = associate_run(tmp_path / "run", radiomics, manifest)
    analysis = analyses["scratch"]
    assert analysis.unit_basis == "unmatched"
    table = analysis.result.table()
    best = table[table.radiomic == "firstorder_Mean"]["rho"].abs().max()
    assert best < 0.8  # unit 0 of one network in a third of the images only
    assert "cannot be matched" in analysis.basis_note
    assert analysis.cca["variance_explained"] < 0.01

    from biomark.report.page import Page
    from biomark.report.radiomics_page import _associations_section, _cca_section, _summary

    page, tables = Page("t"), {}
    _summary(page, analyses, None)
    _associations_section(page, analyses, tables, top=5)
    _cca_section(page, analyses, tables)
    html = page.render()
    assert tables["cca"].set_index("strategy").loc["scratch", "units"] == "unmatched"
    assert html.count("cannot be matched") == 2  # at the top and above the associations
    assert "not a reading of how much radiomics explain" in html


@pytest.mark.parametrize("weights, basis", [("imagenet", "shared"), ("none", "matched")])
def test_frozen_is_shared_only_with_pretrained_weights(
    tmp_path: Path, weights: str, basis: str
) -> None:
    from biomark.features.run_info import RunInfo

    info = RunInfo.from_json({"plan": {"model": {"weights": weights}}})
    assert info.shared_backbone("frozen") is (basis == "shared")
    assert not info.shared_backbone("scratch")
    assert not info.shared_backbone("finetune:3")
    # without pretrained weights, frozen and finetune:N are random-features controls; scratch never
    # is
    assert info.random_control("frozen") is (weights == "none")
    assert info.random_control("finetune:3") is (weights == "none")
    assert not info.random_control("scratch")


def test_the_page_names_random_features_controls(tmp_path: Path) -> None:
    """The verdicts of a random backbone are not read as a pretrained network's (model.weights:
    none)."""
    import dataclasses

    from biomark.report.page import Page
    from biomark.report.radiomics_page import _summary

    manifest, radiomics, units = _tables()
    _write_run(tmp_path / "run", manifest, units, dump_all=True)
    scratch = associate_run(tmp_path / "run", radiomics, manifest)["scratch"]
    assert not scratch.random_control
    for controls, text in (
        (["frozen"], "frozen: model.weights is 'none', so it starts from a seeded random backbone"),
        (["frozen", "finetune:3"], "frozen, finetune:3: model.weights is 'none', so these start"),
    ):
        analyses = {"scratch": scratch} | {
            name: dataclasses.replace(scratch, strategy=name, random_control=True)
            for name in controls
        }
        page = Page("t")
        _summary(page, analyses, None)
        html = unescape(page.render())
        assert html.count("random-features control") == 1 and text in html


def test_units_that_cannot_be_matched_fall_back_with_the_reason(tmp_path: Path) -> None:
    """A fold whose features_all holds another number of units: pooled features, and the page says
    why."""
    manifest, radiomics, units = _tables()
    _write_run(tmp_path / "run", manifest, units, dump_all=True)
    path = fold_dir(tmp_path / "run", "scratch", 2) / "features_all.parquet"
    table = pd.read_parquet(path)
    unit_columns = table.columns[table.columns.str.fullmatch(r"f\d{4}")]
    write_features(path, table.drop(columns=unit_columns), table[unit_columns].to_numpy()[:, :-1])
    analysis = associate_run(tmp_path / "run", radiomics, manifest)["scratch"]
    assert analysis.unit_basis == "unmatched"
    assert "could not be matched" in analysis.basis_note


def test_an_unreadable_dump_falls_back_naming_the_file(tmp_path: Path) -> None:
    """A truncated features_all.parquet: pooled features and a page that names the file, not a
    stopped command."""
    manifest, radiomics, units = _tables()
    _write_run(tmp_path / "run", manifest, units, dump_all=True)
    path = fold_dir(tmp_path / "run", "scratch", 1) / "features_all.parquet"
    path.write_bytes(path.read_bytes()[:300])
    analysis = associate_run(tmp_path / "run", radiomics, manifest)["scratch"]
    assert analysis.unit_basis == "unmatched"
    assert "cannot be read" in analysis.basis_note and str(path) in analysis.basis_note
