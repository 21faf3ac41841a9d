"""biomark extract / radiomics with the dataset and run folders at an fsspec URL.

The URL is a loopback FTP server (``tests/ftp_server.py``): the code reaches
the files only through fsspec, as it would ``s3://``. Every result is checked
against a run on local paths: same splits, features (atol 1e-5) and metrics.

The server here drops a control connection idle for 2 s (a real server's
300 s, shortened): every job's folder connection goes stale while its fold
trains, and so does the client's while the jobs run, as they did on a loaded
machine when these tests failed with ``BrokenPipeError`` and then ``550 File
exists``. The runs must re-open the connections and finish as on a quiet one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from biomark.config import StrategySpec
from biomark.io.remote import RemoteFolder
from biomark.pipelines.executor import executor_for
from biomark.pipelines.extract import run_extract
from biomark.pipelines.radiomics import extract_radiomics

import run_checks  # tests/ is on sys.path (tests/conftest.py)
import tiny_data as helpers

pytest.importorskip("pyftpdlib")
pytestmark = pytest.mark.distributed

K = 2
#: The reference run's strategies and their folders.
STRATEGIES = list(run_checks.CLUSTER_STRATEGIES)
FOLDERS = [StrategySpec.parse(s).dirname for s in STRATEGIES]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Local copies of URL folders go to this test's own cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BIOMARK_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def ftp_storage(tmp_path_factory: pytest.TempPathFactory):
    """The loopback FTP server, with a 2 s idle timeout (see the module notes)."""
    from ftp_server import ftp_server

    root = tmp_path_factory.mktemp("ftp_root")
    with ftp_server(root, idle_timeout=2) as url:
        yield url, root


@pytest.fixture(scope="module")
def data_dir(cluster_data: Path) -> Path:
    return cluster_data


@pytest.fixture(scope="module")
def reference(cluster_reference: Path) -> Path:
    """:data:`STRATEGIES` on local paths, in one process (shared, see tests/conftest.py)."""
    return cluster_reference


def run_extract_remote(plan, scheduler=None, **options):
    """``biomark extract --out URL`` (``--scheduler``): UrlRunStorage through the executor for
    ``scheduler``."""
    return run_extract(plan, executor=executor_for(scheduler), **options)


def run_radiomics_remote(data_url, params, scheduler=None, **options):
    """``biomark radiomics --data URL`` (``--scheduler``): UrlRadiomicsStorage through the
    executor."""
    return extract_radiomics(data_url, params, executor=executor_for(scheduler), **options)


def upload_dataset(data_dir: Path, served: Path, name: str = "cxr") -> None:
    shutil.copytree(data_dir, served / "data" / name)


def test_extract_with_data_and_run_at_urls(
    ftp_storage, data_dir: Path, reference: Path, private_cache: Path
) -> None:
    base, served = ftp_storage
    upload_dataset(data_dir, served)
    plan = helpers.tiny_plan(Path("unused"), Path("unused"), strategies=STRATEGIES, **{"cv.k": K})
    local = run_extract_remote(plan, data_dir=f"{base}/data/cxr", out_dir=f"{base}/runs")

    run_checks.assert_same_run(local, reference, STRATEGIES, K)
    assert str(local).startswith(str(private_cache)), "the run's local copy is in the cache"
    at_url = RemoteFolder(f"{base}/runs/{plan.name}")
    files = at_url.files()
    for strategy in FOLDERS:
        for fold in range(K):
            assert f"{strategy}/fold_{fold:02d}/done.json" in files
            assert f"{strategy}/fold_{fold:02d}/features.parquet" in files
        assert f"{strategy}/summary.json" in files
    assert not [name for name in files if "/backup/" in name]
    info = json.loads(at_url.read_text("run.json"))
    assert info["dataset"]["url"] == f"{base.replace(':secret@', ':***@')}/data/cxr", (
        "passwords are not stored"
    )
    assert set(info["jobs"]) == {f"{s}/fold_{f:02d}" for s in FOLDERS for f in range(K)}
    assert (served / "runs" / plan.name / "summary.md").read_text() == (
        local / "summary.md"
    ).read_text()

    # A fold whose completion marker is gone at the URL (an interrupted upload) is redone alone.
    at_url.remove("frozen/fold_01/done.json")
    shutil.rmtree(local.parent)  # and the client's copy is gone: everything comes from the URL
    before = set(at_url.files(".cluster/attempts"))
    again = run_extract_remote(plan, data_dir=f"{base}/data/cxr", out_dir=f"{base}/runs")
    new = [json.loads(at_url.read_text(n)) for n in set(at_url.files(".cluster/attempts")) - before]
    assert [r["job"] for r in new] == ["frozen_fold_01"]
    run_checks.assert_same_run(again, reference, STRATEGIES, K)


def test_extract_to_url_on_a_local_cluster(
    ftp_storage, data_dir: Path, reference: Path, caplog
) -> None:
    pytest.importorskip("distributed")
    from biomark.cluster import open_cluster

    base, served = ftp_storage
    upload_dataset(data_dir, served)
    plan = helpers.tiny_plan(Path("unused"), Path("unused"), strategies=["frozen"], **{"cv.k": K})
    with (
        open_cluster("local:2", timeout=30) as client,  # workers inherit BIOMARK_CACHE_DIR
        caplog.at_level(logging.INFO, logger="biomark"),
    ):
        local = run_extract_remote(
            plan, client, data_dir=f"{base}/data/cxr", out_dir=f"{base}/runs"
        )
    run_checks.assert_same_run(local, reference, ["frozen"], K)
    # Each job's process warned that its backbone is random; the warning reaches this log, once.
    random_backbone = [
        r
        for r in caplog.records
        if r.name == "biomark.models.weights" and "random-features control" in r.getMessage()
    ]
    assert len(random_backbone) == 1, [r.getMessage() for r in caplog.records]
    info = json.loads((local / "run.json").read_text())
    assert all(job["worker"].startswith("tcp://127.0.0.1:") for job in info["jobs"].values())
    done = [n for n in RemoteFolder(f"{base}/runs/{plan.name}").files() if n.endswith("done.json")]
    assert sorted(done) == ["frozen/fold_00/done.json", "frozen/fold_01/done.json"]


def test_radiomics_with_dataset_at_url(ftp_storage, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from biomark.cluster import open_cluster
    from biomark.features.radiomics_params import load_params
    from biomark.features.radiomics_run import run_radiomics

    base, served = ftp_storage
    data = helpers.make_dataset(tmp_path / "a", n_per_class=4, size=64)
    upload_dataset(data, served, "rad")
    params = load_params(Path(__file__).resolve().parents[2] / "analyses" / "radiomics_cxr2d.yaml")
    serial = run_radiomics(data, params, region="image", jobs=1, controls=False)
    with open_cluster("local:2", timeout=30) as client:
        spread = run_radiomics_remote(
            f"{base}/data/rad", params, client, region="image", controls=False
        )
    pd.testing.assert_frame_equal(spread.features, serial.features)
    assert spread.info["counts"]["computed"] == 12
    out = RemoteFolder(f"{base}/data/rad/radiomics/{spread.out_dir.name}")
    names = out.files()
    assert "features.parquet" in names and sum(n.startswith("cache/") for n in names) == 12
    again = run_radiomics_remote(
        f"{base}/data/rad", params, None, region="image", jobs=1, controls=False
    )
    assert again.info["counts"]["computed"] == 0 and again.info["counts"]["from_cache"] == 12
    pd.testing.assert_frame_equal(again.features, serial.features)
