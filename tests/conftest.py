"""Fixtures shared by the whole test suite.

* ``render_in_chromium`` -- open a generated HTML page in headless Chromium and
  report JavaScript errors and DOM facts (plots rendered, headings). Skips the
  test when no Chromium is installed. Mark such tests ``@pytest.mark.browser``.
* ``tiny_dataset``, ``tiny_weights``, ``make_plan`` -- a tiny learnable
  dataset folder, a small MobileNetV2 weights file and small plans
  (see ``tests/tiny_data.py``).
* ``make_feature_run`` -- write a small synthetic run folder (``run.json``,
  ``folds.csv``, per strategy and fold ``features.parquet``, optional
  ``blocks.npz``) with planted relations between strategies, no training.
"""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomark.features.worker_pool import worker_thread_env

# Each pytest-xdist worker (`make test` runs two) gets cores // workers threads for its libraries
# (TensorFlow's pools, OpenMP, BLAS, ITK), as the report's and radiomics' worker processes get,
# set before numpy or TensorFlow start their thread pools; subprocesses the tests start inherit it.
# Left to themselves, two workers' TensorFlow pools each take both cores and fight over them: on
# the 2-core AVX2 machine `make test` took 9 min 46 s - 10 min 16 s with them, 7 min 5 s with one
# thread each (user CPU 16 min 22 s -> 11 min 32 s; twenty-sixth session). A variable already set
# in the environment is kept; a run without xdist keeps every core.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.update(worker_thread_env(int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

# Test helper modules next to this file (tiny_data) are importable by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from biomark.allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()  # as the biomark command does: before any test imports TensorFlow

from ftp_server import ftp_server  # noqa: E402
from tiny_data import make_plan, tiny_dataset, tiny_weights  # noqa: E402,F401  (fixtures for every test)

# --------------------------------------------------------------------------- #
# Parallel runs (pytest-xdist: `make test` runs `-n 2 --dist loadfile --no-loadscope-reorder`)
# --------------------------------------------------------------------------- #

# `--dist loadfile` keeps each test file on one worker, so a file's module-scoped run is trained
# once. (`--dist loadgroup` with xdist_group marks did not: pytest-xdist 3.8 writes the group into
# ``item._nodeid``, which pytest 9 no longer reads, so every file's tests were spread over both
# workers and both trained the file's module fixtures.)

#: The files that take longest, roughly longest first (20-160 s each on one worker, from
#: ``pytest --durations`` on the 2-core development machine, 2026-11-30). With
#: ``--no-loadscope-reorder`` xdist hands out files in collection order, so these start first
#: and the many short files fill the other worker around them; xdist's default order (most
#: tests first) put these few-test, long files last and left one worker idle at the end. A
#: file missing here only starts later.
_LONGEST_FILES = (
    "tests/pipelines/test_executor.py",  # Dask clusters, a worker killed mid-job
    "tests/report/test_report_page.py",
    "tests/pipelines/test_extract.py",
    "tests/pipelines/test_resume.py",
    "tests/pipelines/test_url_storage.py",
    "tests/train/test_loop.py",
    "tests/train/test_learning.py",
    "tests/train/test_accelerate.py",
    "tests/cli/test_extract_cli.py",
    "tests/models/test_lung_unet.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the longest files first (:data:`_LONGEST_FILES`); the rest keep their collection order.

    The order only matters to how the two workers share the time.
    """
    rank = {path: i for i, path in enumerate(_LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable sort


# --------------------------------------------------------------------------- #
# Headless Chromium
# --------------------------------------------------------------------------- #

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs before any other script of the page: collects errors, then writes a JSON
# summary into <pre id="__test_result"> shortly after the load event.
_PROBE = """<script>
(function () {
  window.__testErrors = [];
  window.addEventListener('error', function (e) {
    window.__testErrors.push('error: ' + (e.message || String(e)) +
      (e.filename ? ' (' + e.filename.split('/').pop() + ':' + e.lineno + ')' : ''));
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason; window.__testErrors.push('unhandledrejection: ' + (r && r.message ? r.message : String(r)));
  });
  var original = console.error;
  console.error = function () {
    window.__testErrors.push('console.error: ' + Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    setTimeout(function () {
      var q = function (s) { return document.querySelectorAll(s); };
      var result = {
        errors: window.__testErrors,
        title: document.title,
        plot_divs: q('.plotly-graph-div').length,
        plots_rendered: q('.js-plotly-plot').length,
        svg_layers: q('.js-plotly-plot .main-svg').length,
        plot_ids: Array.prototype.map.call(q('.js-plotly-plot'), function (d) { return d.id; }),
        headings: Array.prototype.map.call(q('h1, h2, h3'), function (h) { return h.textContent.trim(); }),
        tables: q('table').length,
        text: document.body ? document.body.innerText.slice(0, 20000) : ''
      };
      var pre = document.createElement('pre');
      pre.id = '__test_result';
      pre.textContent = JSON.stringify(result);
      document.body.appendChild(pre);
    }, %(settle_ms)d);
  });
})();
</script>"""  # noqa: E501


@dataclass
class BrowserResult:
    """What headless Chromium saw on a page.

    Attributes
    ----------
    errors : list of str
        Uncaught JS errors, unhandled rejections and ``console.error`` calls.
    plot_divs : int
        Elements with class ``plotly-graph-div`` (figure containers).
    plots_rendered : int
        Elements plotly.js turned into plots (``js-plotly-plot``).
    svg_layers : int
        plotly ``main-svg`` layers drawn (0 when nothing was drawn).
    plot_ids : list of str
    headings : list of str
        Text of every h1/h2/h3, in order.
    tables : int
    title : str
    text : str
        The page's visible text (first 20,000 characters).
    dom : str
        The full DOM Chromium dumped.
    """

    errors: list[str]
    plot_divs: int
    plots_rendered: int
    svg_layers: int
    plot_ids: list[str]
    headings: list[str]
    tables: int
    title: str
    text: str
    dom: str = field(repr=False)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$BIOMARK_CHROMIUM`` first), or None."""
    explicit = os.environ.get("BIOMARK_CHROMIUM")
    if explicit and Path(explicit).is_file():
        return explicit
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _inject(page: str, probe: str) -> str:
    match = re.search(r"<head[^>]*>", page, flags=re.IGNORECASE)
    if match:
        return page[: match.end()] + probe + page[match.end() :]
    return probe + page


@pytest.fixture(scope="session")
def render_in_chromium(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., BrowserResult]:
    """Return ``render(path, *, budget_ms=5000, settle_ms=500, timeout_s=120) -> BrowserResult``.

    A copy of the page (next to the original, so relative links still work)
    gets a probe script that records JS errors and, ``settle_ms`` after the
    load event, writes DOM facts into the page; Chromium runs headless with
    ``--dump-dom`` under a virtual-time budget and the facts are parsed back.
    The copy is removed afterwards. Skips the test when no Chromium is found.

    Examples
    --------
    >>> def test_page(render_in_chromium, tmp_path):         # doctest: +SKIP
    ...     result = render_in_chromium(write_my_page(tmp_path))
    ...     assert result.errors == [] and result.plots_rendered > 0
    """
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "headless Chromium not found (install the `chromium` package or set BIOMARK_CHROMIUM)"
        )

    def render(
        path: str | Path, *, budget_ms: int = 5000, settle_ms: int = 500, timeout_s: float = 120
    ) -> BrowserResult:
        path = Path(path).resolve()
        copy = path.with_name(f".{path.stem}.__probe__{path.suffix}")
        copy.write_text(
            _inject(path.read_text(encoding="utf-8"), _PROBE % {"settle_ms": settle_ms}),
            encoding="utf-8",
        )
        profile = tmp_path_factory.mktemp("chromium-profile")
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--window-size=1280,2000",
            "--dump-dom",
            copy.as_uri(),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        finally:
            copy.unlink(missing_ok=True)
        match = re.search(r'<pre id="__test_result">(.*?)</pre>', done.stdout, flags=re.DOTALL)
        if match is None:
            raise AssertionError(
                f"Chromium did not report on {path.name} (exit {done.returncode}); stderr tail:\n"
                + done.stderr[-2000:]
            )
        facts: dict[str, Any] = json.loads(html_lib.unescape(match.group(1)))
        return BrowserResult(dom=done.stdout, **facts)

    return render


# --------------------------------------------------------------------------- #
# Synthetic run folders
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def make_feature_run() -> Callable[..., Path]:
    """Return ``make(run_dir, **options) -> run_dir`` writing a synthetic run folder.

    Options (defaults): ``strategies=("scratch", "frozen", "finetune:3")``,
    ``relations={"frozen": "rotated", "finetune:3": "independent"}`` (each
    strategy other than the first is ``"rotated"`` -- the first strategy's
    features times an orthogonal matrix plus ``noise`` -- ``"independent"``,
    or ``"same"``), ``n_folds=3``, ``n_per_fold=60``, ``d=32``,
    ``classes=("covid", "normal", "pneumonia")``, ``noise=0.05``,
    ``blocks=False`` (also write ``blocks.npz`` with three blocks),
    ``seed=0``. The first strategy's features carry a class signal.
    """
    from biomark.features.deep import META_COLUMNS, fold_dir, write_block_features, write_features

    def make(
        run_dir: str | Path,
        *,
        strategies: Sequence[str] = ("scratch", "frozen", "finetune:3"),
        relations: dict[str, str] | None = None,
        n_folds: int = 3,
        n_per_fold: int = 60,
        d: int = 32,
        classes: Sequence[str] = ("covid", "normal", "pneumonia"),
        noise: float = 0.05,
        blocks: bool = False,
        seed: int = 0,
    ) -> Path:
        run_dir = Path(run_dir)
        rng = np.random.default_rng(seed)
        relations = dict({"frozen": "rotated", "finetune:3": "independent"}, **(relations or {}))
        n = n_folds * n_per_fold
        labels = np.array([classes[i % len(classes)] for i in range(n)])
        rng.shuffle(labels)
        fold_of = np.repeat(np.arange(n_folds), n_per_fold)
        centres = rng.standard_normal((len(classes), d)) * 1.5
        base = rng.standard_normal((n, d)) + centres[pd.Index(classes).get_indexer(labels)]
        ids = np.array([f"img{i:04d}" for i in range(n)])
        feats: dict[str, np.ndarray] = {}
        for i, strategy in enumerate(strategies):
            kind = "same" if i == 0 else relations.get(strategy, "independent")
            if kind == "same":
                feats[strategy] = base.copy()
            elif kind == "rotated":
                Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
                feats[strategy] = 2.0 * base @ Q + 1.0 + noise * rng.standard_normal((n, d))
            else:
                feats[strategy] = rng.standard_normal((n, d))
        meta_all = pd.DataFrame(
            {
                "image_id": ids,
                "label": labels,
                "patient_id": [f"p{i // 2:04d}" for i in range(n)],
                "source": np.where(np.arange(n) % 2 == 0, "cohen", "kermany"),
                "fold": fold_of,
            }
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"image_id": ids, "fold": fold_of}).to_csv(run_dir / "folds.csv", index=False)
        for strategy in strategies:
            for f in range(n_folds):
                rows = np.flatnonzero(fold_of == f)
                order = rng.permutation(
                    rows
                )  # each strategy lists a fold's images in its own order
                meta = meta_all.iloc[order].reset_index(drop=True).copy()
                meta["strategy"] = strategy
                meta["pred"] = meta["label"]
                meta = meta[list(META_COLUMNS)]
                probs = rng.dirichlet(np.ones(len(classes)), size=len(order))
                write_features(
                    fold_dir(run_dir, strategy, f) / "features.parquet",
                    meta,
                    feats[strategy][order],
                    probs,
                    classes,
                )
                if blocks:
                    X = feats[strategy][order]
                    write_block_features(
                        fold_dir(run_dir, strategy, f) / "blocks.npz",
                        ids[order],
                        {
                            "block_1": X[:, :8] + 0.5 * rng.standard_normal((len(order), 8)),
                            "block_2": X[:, :16],
                            "Conv_1": X,
                        },
                    )
        plan = {
            "name": run_dir.name,
            "seed": seed,
            "strategies": list(strategies),
            "cv": {"k": n_folds},
            "compare": {"n_permutations": 20, "n_bootstrap": 20},
        }
        (run_dir / "run.json").write_text(
            json.dumps({"plan": plan, "classes": list(classes)}), encoding="utf-8"
        )
        return run_dir

    return make


@pytest.fixture
def ftp_storage(tmp_path_factory: pytest.TempPathFactory):
    """A loopback FTP server (``tests/ftp_server.py``): ``(base URL, the folder it serves)``.

    Stands in for remote storage at an fsspec URL (``s3://``...): the code
    under test reaches the files only through the URL.
    """
    pytest.importorskip("pyftpdlib")
    root = tmp_path_factory.mktemp("ftp_root")
    with ftp_server(root) as url:
        yield url, root


def _built_once_per_session(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]
) -> Path:
    """``build(folder)`` run once for the whole test session, shared by every xdist worker.

    Under pytest-xdist the first worker to ask builds into a folder beside the
    workers' own temporary folders while holding an exclusive lock on
    ``<name>.lock``; the others wait for the lock and read the result (the
    path ``build`` returned, recorded relative to the folder). Read-only for
    the tests. A build that failed leaves no record, so the next worker retries.
    Without xdist it simply builds into a fresh temporary folder.
    """
    import fcntl

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / name
    record = folder.with_name(f"{name}.built")
    with open(folder.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result = build(folder)
            record.write_text(str(result.relative_to(folder)), encoding="utf-8")
        return folder / record.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def cluster_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset of the cluster and URL tests: 3 classes x 6 images at 32 px (built once per
    session)."""
    import tiny_data

    return _built_once_per_session(
        tmp_path_factory,
        "cluster_data",
        lambda folder: tiny_data.make_dataset(folder, n_per_class=6),
    )


@pytest.fixture(scope="session")
def cluster_reference(cluster_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process run every cluster and URL run is compared with.

    ``run_checks.CLUSTER_STRATEGIES`` (random backbone) x 2 folds, 1 epoch, on local
    paths, trained eagerly (``tiny_plan``); trained once per test session and
    shared by ``tests/pipelines/test_executor.py`` and
    ``tests/pipelines/test_url_storage.py`` on whichever workers they run.
    """
    from biomark.pipelines.extract import run_extract

    import tiny_data
    from run_checks import CLUSTER_STRATEGIES

    def build(folder: Path) -> Path:
        plan = tiny_data.tiny_plan(
            cluster_data, folder, strategies=list(CLUSTER_STRATEGIES), **{"cv.k": 2}
        )
        return run_extract(plan)

    return _built_once_per_session(tmp_path_factory, "cluster_reference", build)
