"""The report's model path without a deep-learning library: fake fold models with planted units.

Every fold's "network" is a numpy stand-in for :class:`biomark.train.unit_maps.FoldModel`:
unit ``k`` of the latent network sums the image under a fixed weight
pattern, pooled into 2 x 2 maps as MobileNetV2's last map at 64 px. Latent
unit 0 looks only inside the lung fields of every image, latent unit 1 only
at a strip outside them, the rest everywhere. Each ``scratch`` fold lists the
latent units in its own random order (each fold "trained its own network");
``frozen`` (a pretrained, shared backbone) keeps one order. The run folder,
the dataset with lung masks and the features are real files; the report runs
:func:`biomark.pipelines.report.analyse_run` unchanged, so the test covers:
the reference embeddings and unit matching, localisation at 64 px (where the
maps cannot localise) by occlusion, the aligned per-family tables, the
identity for a shared backbone, and the warnings for tampered inputs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from biomark.analysis.head import Head
from biomark.analysis.unit_families import family_consensus
from biomark.exceptions import RunError
from biomark.features.deep import META_COLUMNS, fold_dir, write_features
from biomark.pipelines.report import analyse_run
from biomark.report import report_models
from biomark.report.report_page import write_report
from biomark.report.report_strategy import ReportSettings

import tiny_data

SIZE = 64
K = 12
N_FOLDS = 3
CLASSES = tiny_data.TINY_CLASSES
# workers=1: the fake models are patched into this process, which worker processes would not see
SETTINGS = ReportSettings(
    top_k=4,
    n_bootstrap=50,
    n_mixed=1,
    n_gallery=1,
    n_thumbnails=1,
    n_gradcam=1,
    blackout=True,
    workers=1,
)


def _masks(n: int, rng: np.random.Generator) -> np.ndarray:
    masks = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        dy, dx = rng.integers(-2, 3, size=2)
        masks[i, 14 + dy : 54 + dy, 6 + dx : 28 + dx] = 1
        masks[i, 14 + dy : 54 + dy, 36 + dx : 58 + dx] = 1
    return masks


def _weights(rng: np.random.Generator) -> np.ndarray:
    w = rng.random((K, SIZE, SIZE)) / (SIZE * SIZE)
    w[0] = 0.0
    w[0, 22:46, 10:24] = 1.0 / (24 * 14)  # inside the left lung of every image
    w[1] = 0.0
    w[1, 0:8, :] = 1.0 / (8 * SIZE)  # a strip above the lungs
    return w


class FakeFold:
    """Stands in for :class:`biomark.train.unit_maps.FoldModel` (same methods)."""

    def __init__(
        self, path: Path, perm: np.ndarray, w: np.ndarray, head: dict[str, np.ndarray]
    ) -> None:
        self.path, self.perm, self.w, self.head = path, perm, w, head

    def head_arrays(self) -> dict[str, np.ndarray]:
        return self.head

    def forward(
        self, images, *, maps=False, channels=None, batch_size=None
    ) -> dict[str, np.ndarray]:
        x = np.asarray(images, dtype=np.float64)
        cells = (
            np.einsum("nij,kij->nkij", x, self.w)
            .reshape(len(x), K, 2, SIZE // 2, 2, SIZE // 2)
            .sum(axis=(3, 5))
        )
        fmaps = np.empty_like(cells)
        fmaps[:, self.perm] = (
            cells * 4.0
        )  # the fold's unit perm[k] is latent unit k; mean of 2x2 = the sum
        out = {"gap": fmaps.mean(axis=(2, 3)).astype(np.float32)}
        if maps:
            chosen = np.arange(K) if channels is None else np.asarray(channels)
            out["maps"] = fmaps[:, chosen].astype(np.float32)
        return out

    def close(self) -> None:
        pass


class FakeModels:
    def __init__(self, perms: dict[int, np.ndarray], w: np.ndarray, heads: dict[int, dict]) -> None:
        self.perms, self.w, self.heads = perms, w, heads

    def open(self, fold: int, path: Path) -> FakeFold:
        return FakeFold(Path(path), self.perms[fold], self.w, self.heads[fold])


def _head(rng: np.random.Generator) -> dict[str, np.ndarray]:
    h = 6
    return {
        "kernel": rng.standard_normal((K, h)),
        "bias": 0.1 * rng.standard_normal(h),
        "bn_scale": np.ones(h),
        "bn_shift": np.zeros(h),
        "out_kernel": rng.standard_normal((h, len(CLASSES))),
        "out_bias": np.zeros(len(CLASSES)),
    }


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("fake_models")
    data = tiny_data.make_dataset(root / "data", n_per_class=12, size=SIZE, images_per_patient=2)
    images = np.load(data / "cache" / "images.npy")
    masks = _masks(len(images), rng)
    images[masks > 0] //= (
        3  # lungs darker than their surroundings, as on a radiograph (the mask check wants it)
    )
    np.save(data / "cache" / "images.npy", images)
    np.save(data / "cache" / "masks.npy", masks)
    manifest = pd.read_csv(data / "manifest.csv")
    folds = np.array([int(p.split("_p")[1]) % N_FOLDS for p in manifest["patient_id"]])
    w = _weights(rng)
    perms = {"scratch": {f: rng.permutation(K) for f in range(N_FOLDS)}}
    shared = rng.permutation(K)
    perms["frozen"] = {f: shared for f in range(N_FOLDS)}
    heads = {s: {f: _head(rng) for f in range(N_FOLDS)} for s in perms}
    run = root / "runs" / "fake"
    for s in perms:
        for f in range(N_FOLDS):
            rows = np.flatnonzero(folds == f)
            fold = FakeFold(Path("x"), perms[s][f], w, heads[s][f])
            X = fold.forward(images[rows])["gap"]
            meta = manifest.iloc[rows].assign(fold=f, strategy=s, pred=manifest["label"].iloc[rows])
            out = fold_dir(run, s, f)
            probs = Head.from_arrays(heads[s][f]).probs(X)  # what the saved model gives
            write_features(
                out / "features.parquet",
                meta[list(META_COLUMNS)].reset_index(drop=True),
                X,
                probs,
                list(CLASSES),
            )
            (out / "model.keras").write_bytes(b"fake")
            (out / "done.json").write_text(json.dumps({"fold": f}))
    plan = {
        "name": "fake",
        "seed": 0,
        "strategies": list(perms),
        "cv": {"k": N_FOLDS},
        "model": {"image_size": SIZE, "weights": "imagenet"},
    }
    (run / "run.json").write_text(
        json.dumps(
            {
                "name": "fake",
                "plan": plan,
                "classes": list(CLASSES),
                "strategies": list(perms),
                "folds": {"k": N_FOLDS},
                "dataset": {"dir": str(data)},
            }
        )
    )
    return {"run": run, "perms": perms, "w": w, "heads": heads, "root": root}


@pytest.fixture
def fake_models(fake_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    holders = iter(
        FakeModels(fake_run["perms"][s], fake_run["w"], fake_run["heads"][s])
        for s in ("scratch", "frozen")
    )
    monkeypatch.setattr(report_models, "strategy_models", lambda: next(holders))
    monkeypatch.setattr(report_models, "release_models", lambda: None)


def test_units_matched_and_localised_at_64px(
    fake_run: dict, fake_models: None, tmp_path: Path
) -> None:
    data = analyse_run(fake_run["run"], SETTINGS, reports=tmp_path)
    scratch, frozen = data.strategies["scratch"], data.strategies["frozen"]
    perms = fake_run["perms"]["scratch"]
    # matching: family j is fold 0's unit j; fold f's member is the unit holding the same latent
    # unit
    assert scratch.unit_basis == "matched" and scratch.feature_names[0].startswith("u")
    for f in range(N_FOLDS):
        np.testing.assert_array_equal(scratch.alignment.perms[f], perms[f][np.argsort(perms[0])])
    assert scratch.alignment_quality.iloc[-1]["share_matched"] == 1.0
    # matched on the variation within classes, what a biomarker must grade
    assert scratch.alignment.within_classes and "within-class" in scratch.alignment.method
    # per family and class, how well its members agree on the class's images (here: copies)
    agreement = scratch.within_class_match
    assert list(agreement.index) == scratch.feature_names
    assert set(agreement.columns) <= set(scratch.classes) and len(agreement.columns) >= 2
    measured = agreement.stack().dropna()
    assert len(measured) >= len(scratch.feature_names) and (measured > 0.9).all()
    assert frozen.within_class_match is None  # a shared backbone: nothing to agree on
    assert scratch.reference_ids is not None and len(scratch.reference_ids) == 36
    # every image went through every fold's model: each family's consensus, in X's rows and columns
    assert scratch.X_consensus is not None and scratch.X_consensus.shape == scratch.X.shape
    assert scratch.within_class_values() is scratch.X_consensus
    assert frozen.X_consensus is None and frozen.within_class_values() is frozen.X
    # a shared backbone: the identity, plain feature names
    assert (
        frozen.unit_basis == "shared"
        and frozen.alignment.identity
        and frozen.feature_names[0] == "f0000"
    )
    # localisation: at 64 px the 2x2 maps cannot show a lung fraction of 0.5, so occlusion is used
    assert scratch.lung_attainable < 0.5 and scratch.lung_method.startswith("occlusion")
    inside, outside = f"u{perms[0][0]:04d}", f"u{perms[0][1]:04d}"
    assert scratch.lung.at[inside, "lung_fraction"] > 0.9
    assert scratch.lung.at[outside, "lung_fraction"] < 0.1
    assert frozen.lung.at[f"f{fake_run['perms']['frozen'][0][0]:04d}", "lung_fraction"] > 0.9
    # the dumped features are the models' own: no warning; attributions on every test image
    assert data.warnings == [] and scratch.identity_error < 1e-5
    assert (scratch.additivity["n_explained"] == 12).all()
    assert (scratch.additivity["method"] == "expected-gradients").all()
    table = scratch.candidates
    assert table["members"].str.match(r"f0:\d{4}, f1:\d{4}, f2:\d{4}").all()
    assert table["lung_method"].str.startswith("occlusion").any()
    picks = scratch.picks()
    assert picks is not None and set(picks.table["class"]) == set(CLASSES)
    assert picks.values.shape == (36, len(CLASSES))
    # how many directions the units span: over the reference fold's model (scratch), over every
    # out-of-fold image (one shared backbone)
    assert (scratch.redundancy.n_units, scratch.redundancy.n_images) == (K, 36)
    assert (frozen.redundancy.n_units, frozen.redundancy.n_images) == (K, len(frozen.X))
    assert 1 <= scratch.redundancy.dimension <= K
    # where most units are near-copies, the directions are listed, one row per direction
    for rep in (scratch, frozen):
        if rep.redundancy.redundant:
            assert len(rep.directions) == rep.redundancy.dimension
        else:
            assert rep.directions is None
    # near-copies among the candidates: named by the candidate they copy; other rows have none
    candidate = table["is_candidate"].astype("boolean").fillna(False).astype(bool)
    assert (table.loc[~candidate, "copy_of"] == "").all()
    assert set(table.loc[candidate, "copy_of"]) <= {""} | set(table.loc[candidate, "feature"])
    # the best counterpart of a unit is at least its one-to-one partner
    best, matched = scratch.alignment.best_r[1], scratch.alignment.r[1]
    assert (best >= matched - 1e-12).all()


def test_a_reference_subset_leaves_within_class_readings_out_of_fold(
    fake_run: dict, fake_models: None, tmp_path: Path
) -> None:
    """Units are matched on a subset; images outside it have no consensus, and the page says so."""
    settings = ReportSettings(
        top_k=4, n_bootstrap=0, n_mixed=0, n_gallery=0, n_reference=14, workers=1
    )
    scratch = analyse_run(fake_run["run"], settings, reports=tmp_path).strategies["scratch"]
    assert scratch.unit_basis == "matched" and len(scratch.reference_ids) == 14
    assert scratch.X_consensus is None and scratch.within_class_values() is scratch.X
    assert any("read from each image's out-of-fold member alone" in n for n in scratch.notes)


def test_tampered_and_broken_features_are_warned_at_the_top(
    fake_run: dict, fake_models: None, tmp_path: Path
) -> None:
    run = tmp_path / "fake"
    shutil.copytree(fake_run["run"], run)
    path = fold_dir(run, "scratch", 1) / "features.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "f0005"] = np.nan
    frame["f0003"] += 1.0  # not what the model gives
    frame.loc[frame["label"] == "Normal", "f0007"] = 0.25  # one non-zero value for a whole class
    frame.loc[1, "prob_Normal"] = np.inf
    dropped = frame.at[1, "image_id"]
    frame.to_parquet(path)
    truncated = fold_dir(run, "scratch", 2) / "features.parquet"
    truncated.write_bytes(truncated.read_bytes()[:500])
    settings = ReportSettings(
        strategies=("scratch",), top_k=2, n_bootstrap=0, n_mixed=0, n_gallery=0
    )
    data = analyse_run(run, settings, reports=tmp_path / "reports")
    checks = {w["check"]: w for w in data.warnings}
    assert {
        "non-finite values",
        "GAP features vs model",
        "constant in Normal",
        "non-finite probabilities",
        "unreadable features",
    } <= set(checks)
    assert (
        checks["unreadable features"]["fold"] == "2"
        and "fold_02/features.parquet" in checks["unreadable features"]["message"]
    )
    assert data.strategies["scratch"].folds == [0, 1]
    assert dropped not in set(data.strategies["scratch"].meta["image_id"])
    assert all(w["strategy"] == "scratch" and w["fold"] in ("1", "2") for w in data.warnings)
    assert checks["non-finite values"]["feature"] == "f0005"
    assert "f0003" in checks["GAP features vs model"]["feature"]
    assert checks["constant in Normal"]["feature"] == "f0007"
    assert "features.parquet" in checks["non-finite values"]["message"]
    scratch = data.strategies["scratch"]
    family = f"u{np.flatnonzero(scratch.alignment.perms[1] == 5)[0]:04d}"
    assert family not in scratch.feature_names  # the family with a NaN member is left out
    page = write_report(data)["index"].read_text(encoding="utf-8")
    boxes = [m.start() for m in re.finditer("Input check failed", page)]
    assert len(boxes) == len(data.warnings) and max(boxes) < page.index(
        'id="summary"'
    )  # above the first section
    assert any("fold 1, feature(s) f0005" in page[i : i + 100] for i in boxes)


def test_a_fold_of_another_network_or_with_columns_missing_is_left_out_with_a_warning(
    fake_run: dict, fake_models: None, tmp_path: Path
) -> None:
    """A fold whose table holds fewer features, or not f0000 ... in order, cannot stand beside the
    others."""
    run = tmp_path / "fake"
    shutil.copytree(fake_run["run"], run)
    narrower = fold_dir(run, "scratch", 2) / "features.parquet"
    frame = pd.read_parquet(narrower)
    frame.drop(columns=[f"f{K - 1:04d}"]).to_parquet(narrower)  # valid names, one unit fewer
    gap = fold_dir(run, "frozen", 1) / "features.parquet"
    frame = pd.read_parquet(gap)
    frame.drop(columns=["f0001"]).to_parquet(gap)  # a column missing from the middle
    settings = ReportSettings(top_k=2, n_bootstrap=0, n_mixed=0, n_gallery=0, workers=1)
    data = analyse_run(run, settings, reports=tmp_path / "reports")
    checks = {(w["strategy"], w["check"]): w for w in data.warnings}
    other = checks[("scratch", "other network")]
    assert (
        other["fold"] == "2"
        and f"{K - 1} features where the other folds have {K}" in other["message"]
    )
    assert str(narrower) in other["message"]
    missing = checks[("frozen", "unreadable features")]
    assert missing["fold"] == "1" and "are not f0000 ..." in missing["message"]
    assert "missing f0001" in missing["message"]
    assert data.strategies["scratch"].folds == [0, 1] and data.strategies["frozen"].folds == [0, 2]
    assert len(data.strategies["scratch"].feature_names) > 0


def test_a_fold_model_that_cannot_be_loaded_is_warned_at_the_top(
    fake_run: dict, fake_models: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = report_models.open_fold_model

    def broken_fold_1(path, *, strategy, fold, models):
        if fold == 1:
            raise RunError(f"{strategy} fold {fold} ({path}): could not load the trained model")
        return opened(path, strategy=strategy, fold=fold, models=models)

    monkeypatch.setattr(report_models, "open_fold_model", broken_fold_1)
    settings = ReportSettings(
        strategies=("scratch",), top_k=2, n_bootstrap=0, n_mixed=0, n_gallery=0
    )
    data = analyse_run(fake_run["run"], settings, reports=tmp_path / "reports")
    models = [w for w in data.warnings if w["check"] == "model"]
    assert len(models) == 1 and models[0]["fold"] == "1" and models[0]["strategy"] == "scratch"
    assert "could not load the trained model" in models[0]["message"]
    assert "attributions, maps, blackout and lung swap are skipped" in models[0]["message"]
    scratch = data.strategies["scratch"]
    assert scratch.folds == [0, 1, 2]  # its dumped features still count
    assert 1 not in set(scratch.additivity["fold"])  # no attributions without the model
    page = write_report(data)["index"].read_text(encoding="utf-8")
    box = page.index("Input check failed — scratch, fold 1")
    assert box < page.index('id="summary"')


def _copy_with_features_all(fake_run: dict, run: Path) -> pd.DataFrame:
    """A copy of the fake run in which every scratch fold dumped every image (``dump: all``);
    returns the manifest."""
    shutil.copytree(fake_run["run"], run)
    info = json.loads((run / "run.json").read_text())
    images = np.load(Path(info["dataset"]["dir"]) / "cache" / "images.npy")
    manifest = pd.read_csv(Path(info["dataset"]["dir"]) / "manifest.csv")
    perms = fake_run["perms"]["scratch"]
    for f in range(N_FOLDS):
        fold = FakeFold(Path("x"), perms[f], fake_run["w"], fake_run["heads"]["scratch"][f])
        meta = manifest.assign(fold=f, strategy="scratch", pred=manifest["label"])
        path = fold_dir(run, "scratch", f) / "features_all.parquet"
        write_features(path, meta[list(META_COLUMNS)], fold.forward(images)["gap"])
    return manifest


def test_units_matched_from_features_all_without_models(fake_run: dict, tmp_path: Path) -> None:
    """dump.features: all gives every fold's view of every image: matching needs no model and no
    dataset."""
    run = tmp_path / "fake"
    manifest = _copy_with_features_all(fake_run, run)
    info = json.loads((run / "run.json").read_text())
    perms = fake_run["perms"]["scratch"]
    for f in range(N_FOLDS):
        (fold_dir(run, "scratch", f) / "model.keras").unlink()
    info["dataset"]["dir"] = str(tmp_path / "moved")
    (run / "run.json").write_text(json.dumps(info))
    settings = ReportSettings(strategies=("scratch",), top_k=2, n_bootstrap=0, n_mixed=0)
    rep = analyse_run(run, settings, reports=tmp_path / "reports").strategies["scratch"]
    assert rep.unit_basis == "matched" and "features_all.parquet" in rep.alignment.method
    assert rep.alignment.within_classes
    for f in range(N_FOLDS):
        np.testing.assert_array_equal(rep.alignment.perms[f], perms[f][np.argsort(perms[0])])
    assert rep.alignment.n_reference == len(manifest)
    # the consensus of each kept family over the dumped images, rows as the out-of-fold features
    reference = {
        f: pd.read_parquet(fold_dir(run, "scratch", f) / "features_all.parquet")
        .set_index("image_id")
        .loc[rep.meta["image_id"]]
        .filter(regex=r"^f\d{4}$")
        .to_numpy()
        for f in range(N_FOLDS)
    }
    keep = [int(name[1:]) for name in rep.feature_names]
    assert rep.X_consensus is not None
    np.testing.assert_allclose(
        rep.X_consensus, family_consensus(reference, rep.alignment)[:, keep], atol=1e-9
    )
    # the source audit probes each fold's network on its own units (its features_all), not one
    # network's units against another's; the views are not carried back from the worker
    audit = rep.source_predictability
    assert audit is not None and audit.attrs["thresholds"]["views"] == N_FOLDS
    assert f"each fold's own network on the {len(manifest):,} images" in audit.attrs["features"]
    assert rep.model_views == {}


def test_an_unreadable_features_all_is_warned_and_the_models_match_instead(
    fake_run: dict, fake_models: None, tmp_path: Path
) -> None:
    """One truncated features_all.parquet: a warning box naming it, and units matched on the models'
    reference."""
    run = tmp_path / "fake"
    _copy_with_features_all(fake_run, run)
    perms = fake_run["perms"]["scratch"]
    broken = fold_dir(run, "scratch", 1) / "features_all.parquet"
    broken.write_bytes(broken.read_bytes()[:400])
    settings = ReportSettings(
        strategies=("scratch",), top_k=2, n_bootstrap=0, n_mixed=0, n_gallery=0
    )
    data = analyse_run(run, settings, reports=tmp_path / "reports")
    rep = data.strategies["scratch"]  # the strategy is analysed, not left out
    unreadable = [w for w in data.warnings if w["check"] == "unreadable features_all"]
    assert len(unreadable) == 1 and unreadable[0]["fold"] == "1"
    assert str(broken) in unreadable[0]["message"]
    assert rep.unit_basis == "matched" and "reference images embedded" in rep.alignment.method
    for f in range(N_FOLDS):
        np.testing.assert_array_equal(rep.alignment.perms[f], perms[f][np.argsort(perms[0])])


def test_an_unreadable_fold_table_leaves_its_images_out_of_matching_and_the_source_audit(
    fake_run: dict, tmp_path: Path
) -> None:
    """A fold whose features.parquet is corrupt is left out; the other folds' models embedded its
    images too, but those have no out-of-fold row (class, source, patient): matching and the
    source audit read the rest, and a note says so (before, the source audit raised KeyError)."""
    run = tmp_path / "fake"
    _copy_with_features_all(fake_run, run)
    for f in range(N_FOLDS):
        (fold_dir(run, "scratch", f) / "model.keras").unlink()
    broken = fold_dir(run, "scratch", 1) / "features.parquet"
    broken.write_bytes(b"not a parquet file")
    settings = ReportSettings(strategies=("scratch",), top_k=2, n_bootstrap=0, n_mixed=0)
    data = analyse_run(run, settings, reports=tmp_path / "reports")
    rep = data.strategies["scratch"]
    assert rep.folds == [0, 2]
    (unreadable,) = [w for w in data.warnings if w["check"] == "unreadable features"]
    assert unreadable["fold"] == "1" and str(broken) in unreadable["message"]
    assert "--force" not in unreadable["message"]  # that would redo every finished fold
    assert "re-run `biomark extract` with the same plan" in unreadable["message"]
    n_left = len(rep.meta)
    assert rep.unit_basis == "matched" and rep.alignment.n_reference == n_left
    assert any(
        "have no out-of-fold row" in note and f"audited on the other {n_left}." in note
        for note in rep.notes
    )
    audit = rep.source_predictability
    assert audit is not None and audit.attrs["thresholds"]["views"] == 2
    assert f"each fold's own network on the {n_left:,} images" in audit.attrs["features"]


def test_pending_null_hands_over_the_null_or_why_not(tmp_path: Path) -> None:
    """The lung null is computed once per run beside the strategies and read by each through a
    file; a failure reaches them as a reason, and a missing file does not hang them."""
    from biomark.analysis.lung_null import LungNull
    from biomark.report.random_units import PendingNull

    pending = PendingNull(str(tmp_path / "null.pickle"))
    assert "not ready after 0 s" in pending.read(timeout=0.0)
    pending.write(LungNull(np.array([0.4, 0.5, 0.6]), n_images=3, source="3 units"))
    null = pending.read()
    assert isinstance(null, LungNull) and null.n_images == 3 and null.median == 0.5
    pending.write("the run's dataset is not readable here")
    assert pending.read() == "the run's dataset is not readable here"


def test_a_null_that_cannot_be_measured_says_why_instead_of_leaving_the_strategies_waiting(
    tmp_path: Path,
) -> None:
    """No dataset, or a run folder without its fold table: the reason is handed over at once, and
    a strategy reading it goes on with the fixed threshold."""
    from biomark.features.run_folder import RunFolder
    from biomark.features.run_info import RunInfo
    from biomark.report.random_units import PendingNull, compute_and_store
    from biomark.report.strategy_report import ReportSettings

    run = RunFolder(tmp_path / "run")
    pending = PendingNull(str(tmp_path / "null.pickle"))
    compute_and_store(run, RunInfo(), None, ReportSettings(), pending)
    assert pending.read(timeout=0.0) == "the run's dataset is not readable here"
    from biomark.data.dataset import load_dataset

    dataset = load_dataset(tiny_data.make_dataset(tmp_path / "data", n_per_class=2, size=32))
    compute_and_store(run, RunInfo(), dataset, ReportSettings(), pending)
    why = pending.read(timeout=0.0)
    assert isinstance(why, str) and why.startswith(
        "no random network to read lung fractions against"
    )
