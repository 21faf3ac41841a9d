"""The paper-size grid: three strategies x 10 folds on a phantom in the paper's class proportions.

Usage::

    # paper size on one GPU (JAX backend, no TensorFlow needed); without preallocation
    # nvidia-smi shows the memory JAX uses, not the 75 % it reserves up front
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/paper_grid.py --out /tmp/grid
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/paper_grid.py --out /tmp/grid --batch-size 128
    # several folds at once on the one GPU (each JAX process must not preallocate)
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python benchmarks/paper_grid.py --out /tmp/grid --scheduler local:8
    # reduced size on a CPU
    python benchmarks/paper_grid.py --out /tmp/grid --scale 0.1 --size 64 --epochs 2 --alpha 0.35

It generates (or reuses) a phantom with the paper's seven class counts
(COVID-19 455, Edema 293, Effusion 311, Emphysema 315, Fibrosis 280,
Pneumonia 910, Normal 1341 = 3,905 images) times ``--scale``, builds it like a
real dataset, and runs ``scratch``, ``frozen`` and ``finetune:N`` over 10
folds through the real code path (:func:`biomark.pipelines.extract.run_extract`,
one call per strategy, one run folder), with the paper plan's settings
(``analyses/apostolopoulos2020.yaml``) except those given here.

No network at run time: the backbone starts from random weights
(``model.weights: none``) unless ``--weights FILE`` names a local file, so the
frozen and fine-tuned strategies are "random features" controls here; their
speed is that of the real strategies (same graph, same trainable layers).

Printed (and written to ``<out>/paper_grid.json``): per strategy and in total
the wall time; training images per second (training steps only, from each
fold's ``history.csv``: after the first epoch of a fold, and including it);
XLA compilation (JAX: programs compiled or loaded from the persistent cache,
seconds, cache hits) and the first epoch of fold 0 vs folds 1..k-1; the peak
resident memory of this process; mean CPU use; and, when ``nvidia-smi``
exists, GPU utilisation sampled every ``--sample-seconds`` in a background
thread (mean and max %, mean while training, peak memory, and the samples).

``--run-folds N`` runs only the first N of the k folds of each strategy (for a
device lease too short for the grid; the folds keep the k-fold sizes). A run
stopped by SIGTERM (``timeout``) or Ctrl-C sums up the folds it finished and
says where it stopped (``"stopped"`` in the JSON).

``--resume`` goes on with the run in ``--out``: finished folds are kept, a fold
that was stopped goes on from its last epoch's checkpoint, and the XLA cache is
kept (for a lease whose calls are shorter than the grid: two calls in a row on
the same machine). The JSON's times are then this call's.

``--stagger`` (with ``--scheduler``) starts each strategy's fold 0 first and
holds its other folds until fold 0 has trained one epoch, so that they load
the compiled programs from the persistent cache instead of all compiling them
at once (:class:`StaggerGate`).

``--job-order`` submits the strategies' jobs in the order given (Dask starts
them in that order): e.g. ``finetune:11,scratch,frozen``.

``--scheduler local:N`` trains N folds at once, each job in its Dask worker's
job process (:mod:`biomark.pipelines.job_process`) (the toolkit's own scale-out path, :mod:`biomark.cluster`; needs
``dask[distributed]``). All strategies then go into one ``run_extract`` call so
that their jobs share the workers: the wall time is the grid's, not a
strategy's, and ``train_images_per_wall_second`` is what the machine delivered.
Peak memory and CPU use are then this process's only (the jobs run elsewhere).
"""  # noqa: E501

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomark.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class Sampler(threading.Thread):
    """Sample GPU utilisation and memory (``nvidia-smi``) and this process's CPU use."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.smi = shutil.which("nvidia-smi")
        self.gpu: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self.cpu: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            import psutil  # not a biomark dependency: CPU use is reported only when present

            proc = psutil.Process()
            proc.cpu_percent(None)
        except ImportError:
            proc = None
        while not self._halt.wait(self.every):
            if proc is not None:
                self.cpu.append(proc.cpu_percent(None))
            if self.smi is None:
                continue
            try:
                out = (
                    subprocess.run(
                        [
                            self.smi,
                            "--query-gpu=utilization.gpu,memory.used",
                            "--format=csv,noheader,nounits",
                        ],
                        capture_output=True,
                        text=True,
                        timeout=10,
                    )
                    .stdout.strip()
                    .splitlines()
                )
                util, mem = (float(v) for v in out[0].split(","))
                self.gpu.append((time.perf_counter(), util, mem))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def summary(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cpu_mean_percent": round(float(np.mean(self.cpu)), 1) if self.cpu else None
        }
        if not self.gpu:
            out["gpu"] = None if self.smi is None else "nvidia-smi gave no readings"
            return out
        t, util, mem = (np.array(c) for c in zip(*self.gpu, strict=True))
        inside = np.zeros(len(t), dtype=bool)
        for a, b in windows:
            inside |= (t >= a) & (t <= b)
        out["gpu"] = {
            "samples": len(t),
            "util_mean_percent": round(float(util.mean()), 1),
            "util_max_percent": round(float(util.max()), 1),
            "util_mean_percent_in_strategies": round(float(util[inside].mean()), 1)
            if inside.any()
            else None,
            "memory_max_mib": round(float(mem.max())),
            # (seconds from the first sample, util %, memory MiB): where the GPU waited
            "timeline": [
                [round(float(a - t[0]), 1), float(b), float(c)]
                for a, b, c in zip(t, util, mem, strict=True)
            ],
        }
        return out


class StaggerGate:
    """A job function that waits, on its worker, until its strategy's lead fold has trained an
    epoch.

    The lead fold (fold 0 of each strategy) starts at once; every other job of
    that strategy first waits until the lead's ``history.csv`` exists,
    i.e. its first epoch (training and validation programs) is compiled and in
    the persistent XLA cache, so the later folds load those programs instead of
    compiling them all at once. Waits at most ``cap`` seconds (a lead that fails
    never writes the file). Hand-written: no executor in Dask or the toolkit
    orders jobs by a file another job writes.
    """

    def __init__(self, fn: Any, gates: dict[str, Path], cap: float = 400.0) -> None:
        self.fn, self.gates, self.cap = fn, gates, cap

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        strategy, fold = args[-2], args[-1]
        gate = self.gates.get(strategy)
        if gate is not None and fold != 0:
            t0 = time.monotonic()
            while not gate.exists() and time.monotonic() - t0 < self.cap:
                time.sleep(1.0)
        return self.fn(*args, **kwargs)


def grid_executor(
    inner: Any = None,
    *,
    first_folds: int | None = None,
    stagger: Path | None = None,
    order: list[str] | None = None,
) -> Any:
    """The executor of the grid: ``inner`` (default: serial, in this process), with three options.

    Parameters
    ----------
    first_folds : int, optional
        Run only the jobs of folds ``0 .. first_folds-1`` (the others stay
        unfinished): for a device lease too short for k folds. The folds keep
        the k-fold sizes, so per-image and per-fold figures are the full grid's.
    stagger : Path, optional
        The run folder: submit each strategy's fold 0 first and hold its other
        folds until fold 0's ``history.csv`` exists there (:class:`StaggerGate`).
    order : list of str, optional
        The strategies in the order their jobs are submitted (after the leads,
        with ``stagger``); default: the order ``run_extract`` gives.
    """
    from biomark.features.deep import fold_dir
    from biomark.pipelines.executor import Executor, SerialExecutor
    from biomark.train.epochs import HISTORY_FILE

    class GridExecutor(Executor):
        # delegates everything to `inner` (its settings read through, not copied), changing
        # only the jobs that map receives
        def __init__(self, inner: Executor) -> None:
            self.inner = inner

        @property
        def retries(self) -> int:  # type: ignore[override]
            return self.inner.retries

        @property
        def isolate(self) -> bool:  # type: ignore[override]
            return self.inner.isolate

        @property
        def remote(self) -> bool:  # type: ignore[override]
            return self.inner.remote

        @property
        def name(self) -> str:
            return self.inner.name

        def chunk_runner(self, cache_url: str | None = None) -> Any:
            return self.inner.chunk_runner(cache_url)

        def shared_path(self, path: Any, what: str) -> str:
            return self.inner.shared_path(path, what)

        @contextlib.contextmanager
        def opened(self) -> Any:
            with self.inner.opened():
                yield self  # this wrapper, so that jobs mapped on what `with` gives are chosen too

        def workers(self, jobs: int) -> int:
            return self.inner.workers(jobs)

        def preflight(self, shared: Any, **kwargs: Any) -> None:
            self.inner.preflight(shared, **kwargs)

        def map(self, fn: Any, items: Any, **kwargs: Any) -> Any:
            jobs = [job for job in items if first_folds is None or job.fold < first_folds]
            if order is not None:
                jobs.sort(key=lambda job: order.index(job.strategy))  # stable: folds stay in order
            if stagger is not None:
                # leads first: Dask starts the jobs in the order they are submitted
                jobs.sort(key=lambda job: job.fold != 0)
                gates = {
                    job.strategy: fold_dir(stagger, job.strategy, 0) / HISTORY_FILE for job in jobs
                }
                fn = StaggerGate(fn, gates)
            return self.inner.map(fn, jobs, **kwargs)

    return GridExecutor(inner if inner is not None else SerialExecutor())


def make_phantom(
    data_dir: Path, scale: float, size: int, seed: int
) -> tuple[dict[str, int], float]:
    """Generate and build the paper-proportion phantom unless ``data_dir`` holds one."""
    from biomark.data.build import build_dataset
    from biomark.data.dataset import dataset_paths
    from biomark.data.phantom import generate_phantom, parse_class_counts

    counts = parse_class_counts("paper", scale)
    if dataset_paths(data_dir).manifest.is_file():
        return counts, 0.0
    t0 = time.perf_counter()
    csv = generate_phantom(
        data_dir, class_counts=counts, seed=seed, image_size=max(64, size), jobs=-1
    )
    build_dataset(data_dir, sources={"manifest": [csv]}, image_size=size, jobs=-1)
    return counts, time.perf_counter() - t0


def fold_figures(run_dir: Path, strategy: str, k: int) -> dict[str, Any] | None:
    """Training throughput and compilation figures of one strategy's finished folds.

    ``None`` when no fold of ``strategy`` has finished (a run stopped early);
    ``folds_done`` says how many of the ``k`` the figures cover.
    """
    from biomark.features.deep import fold_dir

    images = steps = images_later = steps_later = 0.0
    first_epochs, compile_s, hits, misses, programs, epochs = [], 0.0, 0, 0, 0, 0
    fold_seconds: list[float] = []
    epoch_seconds: list[float] = []
    step_seconds: list[float] = []
    pipeline: dict[str, Any] = {}
    loader: dict[str, Any] = {}
    done = [f for f in range(k) if (fold_dir(run_dir, strategy, f) / "done.json").is_file()]
    if not done:
        return None
    for fold in done:
        folder = fold_dir(run_dir, strategy, fold)
        metrics = json.loads((folder / "metrics.json").read_text())
        training = metrics["training"]
        timings = json.loads((folder / "timings.json").read_text())
        pipeline = timings["execution"]["pipeline"]
        fold_seconds.append(float(timings["timings"]["total_seconds"]))
        loader = pipeline["loader"]
        per_epoch = training["n_train"] - loader["train_images_dropped"]
        history = pd.read_csv(folder / "history.csv")
        epoch_seconds.extend(history["seconds"].iloc[1:])
        step_seconds.extend(history["step_seconds"].iloc[1:])
        epochs += len(history)
        images += per_epoch * len(history)
        steps += float(history["step_seconds"].sum())
        images_later += per_epoch * (len(history) - 1)
        steps_later += float(history["step_seconds"].iloc[1:].sum())
        first_epochs.append(float(history["seconds"].iloc[0]))
        comp = pipeline["compile"] or {}
        compile_s += comp.get("compile_seconds", 0.0)
        hits += comp.get("cache_hits", 0)
        misses += comp.get("cache_misses", 0)
        programs += comp.get("compiles", 0)
    return {
        "folds_done": len(done),
        "epochs": epochs,
        "train_images": int(images),
        "fold_seconds": [round(x, 1) for x in fold_seconds],
        "epoch_seconds_after_first_median": round(float(np.median(epoch_seconds)), 2)
        if epoch_seconds
        else None,
        "step_seconds_after_first_median": round(float(np.median(step_seconds)), 2)
        if step_seconds
        else None,
        "train_images_per_second": round(images_later / steps_later, 1) if steps_later else None,
        "train_images_per_second_with_first_epochs": round(images / steps, 1) if steps else None,
        "first_epoch_seconds_fold0": round(first_epochs[0], 2),
        "first_epoch_seconds_other_folds_mean": round(float(np.mean(first_epochs[1:])), 2)
        if len(done) > 1
        else None,
        "xla_programs": programs,
        "xla_compile_or_load_seconds": round(compile_s, 1),
        "xla_cache_hits": hits,
        "xla_cache_misses": misses,
        "pipeline": {
            key: pipeline[key] for key in ("backend", "gpu", "policy", "jit_compile", "xla_cache")
        },
        "loader": {
            key: loader[key]
            for key in ("cache_in_memory", "workers", "queue_size", "batch_size", "drop_remainder")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a new temporary folder)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="phantom folder (default <out>/phantom); reused if built",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the paper's 3,905 images (default 1)"
    )
    parser.add_argument(
        "--size", type=int, default=200, help="image side in px, cache and model (default 200)"
    )
    parser.add_argument("--plan", type=Path, default=REPO / "analyses" / "apostolopoulos2020.yaml")
    parser.add_argument(
        "--finetune", type=int, default=11, help="N of the finetune:N strategy (default 11)"
    )
    parser.add_argument(
        "--strategies", default=None, help="comma-separated, overrides scratch,frozen,finetune:N"
    )
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument(
        "--run-folds",
        type=int,
        default=None,
        help=(
            "run only the first N of the --folds folds of each strategy (folds keep the k-fold "
            "size)"
        ),
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="maximum epochs (default: the plan's)"
    )
    parser.add_argument(
        "--no-early-stopping", action="store_true", help="train every fold for all epochs"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the plan's")
    parser.add_argument(
        "--alpha", type=float, default=None, help="MobileNetV2 width (default: the plan's)"
    )
    parser.add_argument("--head-units", type=int, default=None, help="default: the plan's (2500)")
    parser.add_argument(
        "--weights",
        default="none",
        help="none (default: random backbone, offline) or a local .h5 file",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: on when Keras sees a GPU (default)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="loader threads (default: the plan's)"
    )
    parser.add_argument(
        "--xla-cache",
        default=None,
        help="JAX compilation cache folder or none (default <out>/xla_cache, fresh)",
    )
    parser.add_argument("--no-blocks", action="store_true", help="skip the per-block feature dump")
    parser.add_argument(
        "--scheduler",
        default=None,
        help=(
            "run the jobs on a Dask cluster, e.g. local:N for N folds at once on this machine "
            "(all strategies in one call, so their jobs share the workers; default: one job at a "
            "time in this process)"
        ),
    )
    parser.add_argument(
        "--stagger",
        action="store_true",
        help=(
            "start each strategy's fold 0 first and its other folds once fold 0 has trained an "
            "epoch (their programs then come from the XLA cache; with --scheduler)"
        ),
    )
    parser.add_argument(
        "--job-order",
        default=None,
        help=(
            "comma-separated strategies in the order their jobs are submitted (after the leads "
            "with --stagger), e.g. finetune:11,scratch,frozen; default: scratch, frozen, finetune"
        ),
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=(
            "go on with the run in --out (keep its finished folds, checkpoints and XLA cache) "
            "instead of starting afresh"
        ),
    )
    parser.add_argument("--sample-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keep_freed_memory()  # as the biomark command does, before TensorFlow allocates

    import keras

    from biomark.cli.logs import configure_logging
    from biomark.config import apply_overrides, load_plan
    from biomark.pipelines.extract import run_extract
    from biomark.train.accelerate import has_gpu

    configure_logging(verbose=0, quiet=False)  # each finished fold is logged with the time
    out = args.out or Path(tempfile.mkdtemp(prefix="paper_grid_"))
    out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data or out / f"phantom_{args.scale:g}_{args.size}"
    strategies = (
        args.strategies.split(",")
        if args.strategies
        else ["scratch", "frozen", f"finetune:{args.finetune}"]
    )
    order = args.job_order.split(",") if args.job_order else None
    if order is not None and sorted(order) != sorted(strategies):
        parser.error(f"--job-order {args.job_order!r} must list exactly {', '.join(strategies)}")
    gpu = has_gpu()
    mixed = {"auto": gpu, "on": True, "off": False}[args.mixed_precision]
    xla_cache = args.xla_cache or str(out / "xla_cache")
    if args.xla_cache is None and (out / "xla_cache").exists() and not args.resume:
        shutil.rmtree(out / "xla_cache")  # measure compilation from scratch

    print(
        f"backend {keras.backend.backend()} {keras.__version__}, devices "
        f"{keras.distribution.list_devices()}, cpu cores {os.cpu_count()}"
    )
    counts, phantom_s = make_phantom(data_dir, args.scale, args.size, args.seed)
    print(
        f"phantom: {sum(counts.values())} images "
        f"({', '.join(f'{c} {n}' for c, n in counts.items())}), {args.size} px, "
        f"{f'built in {phantom_s:.0f} s' if phantom_s else 'reused'} -> {data_dir}"
    )

    plan = load_plan(args.plan)
    overrides: dict[str, Any] = {
        "name": "paper_grid",
        "output_dir": str(out / "runs"),
        "data.dir": str(data_dir),
        "data.phantom": None,
        "cv.k": args.folds,
        "strategies": strategies,
        "model.image_size": args.size,
        "model.weights": args.weights,
        "model.augment.shift_pixels": max(
            1, round(plan.model.augment.shift_pixels * args.size / 200)
        ),
        "training.epochs": args.epochs,
        "training.batch_size": args.batch_size,
        "training.mixed_precision": mixed,
        "training.loader_workers": args.workers,
        "training.xla_cache": xla_cache,
        "model.alpha": args.alpha,
        "model.head_units": args.head_units,
    }
    if args.no_early_stopping:
        overrides["training.early_stopping.enabled"] = False
    if args.no_blocks:
        overrides["dump.blocks"] = False
    plan = apply_overrides(plan, overrides)
    t = plan.training
    print(
        f"plan: {', '.join(strategies)} x {plan.cv.k} folds, epochs <= {t.epochs} "
        "(early stopping "
        f"{f'on, patience {t.early_stopping.patience}' if t.early_stopping.enabled else 'off'}), "
        f"batch {t.batch_size}, alpha {plan.model.alpha}, head {plan.model.head_units}, mixed "
        f"precision {t.mixed_precision}, loader workers {t.loader_workers}, blocks dump "
        f"{plan.dump.blocks}"
    )
    if str(plan.model.weights).lower() == "none":
        print(
            "weights: none - random backbone (no download); frozen/finetune are random-features "
            "controls, timed like the real strategies"
        )

    run_dir = Path(plan.output_dir) / plan.name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    done_before = {s: fold_figures(run_dir, s, plan.cv.k) for s in strategies}
    if args.resume:
        print(
            "resuming: finished folds "
            + ", ".join(f"{s} {f['folds_done'] if f else 0}" for s, f in done_before.items())
        )
    from biomark.pipelines.executor import executor_for

    inner = executor_for(args.scheduler) if args.scheduler else None
    stagger = run_dir if args.stagger else None
    executor = (
        grid_executor(inner, first_folds=args.run_folds, stagger=stagger, order=order)
        if args.run_folds or stagger or order
        else inner
    )
    # one job at a time: a run_extract call per strategy, timed apart; on a cluster one
    # call for all, so that every strategy's jobs share the workers
    batches = [[s] for s in strategies] if args.scheduler is None else [strategies]
    sampler = Sampler(args.sample_seconds)
    sampler.start()
    walls: dict[str, float] = {}
    windows: list[tuple[float, float]] = []
    # `timeout` (or a lease running out) sends SIGTERM: end like Ctrl-C, so the
    # finished folds are still summed up and paper_grid.json is written
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t_all = time.perf_counter()
    stopped = None
    try:
        for batch in batches:
            strategy = "+".join(batch)
            t0 = time.perf_counter()
            try:
                run_extract(plan, strategies=batch, executor=executor)
            finally:
                t1 = time.perf_counter()
                walls[strategy] = t1 - t0
                windows.append((t0, t1))
            print(f"  {strategy}: {walls[strategy]:.0f} s", flush=True)
    except KeyboardInterrupt:
        stopped = f"stopped after {time.perf_counter() - t_all:.0f} s, during {strategy}"
        print(f"  {stopped}: summing up the finished folds", flush=True)
    finally:
        sampler.stop()
    total = time.perf_counter() - t_all

    figures = {s: fold_figures(run_dir, s, plan.cv.k) for s in strategies}
    # the folds finished by this call (resumed: a fold begun before counts all its epochs here)
    trained = sum(f["train_images"] for f in figures.values() if f is not None) - sum(
        f["train_images"] for f in done_before.values() if f is not None
    )
    result: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in keras.distribution.list_devices()],
        "cpu_cores": os.cpu_count(),
        "images": sum(counts.values()),
        "image_size": args.size,
        "phantom_seconds": round(phantom_s, 1),
        "plan": {
            "strategies": strategies,
            "k": plan.cv.k,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "alpha": plan.model.alpha,
            "head_units": plan.model.head_units,
            "weights": plan.model.weights,
            "early_stopping": t.early_stopping.enabled,
            "mixed_precision": t.mixed_precision,
            "blocks": plan.dump.blocks,
        },
        "stopped": stopped,
        "resumed_with_folds_done": (
            {s: f["folds_done"] if f else 0 for s, f in done_before.items()}
            if args.resume
            else None
        ),
        "staggered_start": args.stagger,
        "job_order": order,
        "scheduler": args.scheduler or "serial",
        "wall_seconds": {**{s: round(w, 1) for s, w in walls.items()}, "total": round(total, 1)},
        # every finished fold's training images over the whole wall time (with several
        # folds at once, what the machine delivered; per-fold rates are per process)
        "train_images_per_wall_second": round(trained / total, 1) if total else None,
        "strategies": figures,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **sampler.summary(windows),
    }
    (out / "paper_grid.json").write_text(json.dumps(result, indent=2))

    print(
        f"\ntotal wall {total:.0f} s ({total / 60:.1f} min) for {len(strategies)} strategies x "
        f"{plan.cv.k} folds on {result['images']} images; peak RSS {result['peak_rss_mib']} MiB; "
        f"mean CPU {result['cpu_mean_percent']}% (100% = one core); {trained} training images, "
        f"{result['train_images_per_wall_second']} per wall second ({result['scheduler']})"
    )
    print(
        "strategy       wall s  epochs  train img/s (after 1st / all)  1st epoch s (fold 0 / "
        "others)  XLA programs, s, cache hits/misses"
    )
    for s, f in result["strategies"].items():
        wall = f"{walls[s]:7.0f}" if s in walls else "      -"  # one call for all: no own wall
        if f is None:
            print(f"{s:<13} {wall}  no fold finished")
            continue
        print(
            f"{s:<13} {wall} {f['epochs']:7d}  {str(f['train_images_per_second']):>12} / "
            f"{str(f['train_images_per_second_with_first_epochs']):<12}    "
            f"{f['first_epoch_seconds_fold0']:8.1f} / "
            f"{str(f['first_epoch_seconds_other_folds_mean']):<8}        {f['xla_programs']}, "
            f"{f['xla_compile_or_load_seconds']}, {f['xla_cache_hits']}/{f['xla_cache_misses']}  "
            f"({f['folds_done']}/{plan.cv.k} folds done)"
        )
    gpu_info = result["gpu"]
    if isinstance(gpu_info, dict):
        print(
            f"GPU utilisation: mean {gpu_info['util_mean_percent']}% (during strategies "
            f"{gpu_info['util_mean_percent_in_strategies']}%), max "
            f"{gpu_info['util_max_percent']}%, memory max {gpu_info['memory_max_mib']} MiB "
            f"({gpu_info['samples']} samples)"
        )
        if (
            keras.backend.backend() == "jax"
            and os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() != "false"
        ):
            print(
                "  (JAX preallocated GPU memory: set XLA_PYTHON_CLIENT_PREALLOCATE=false to see "
                "what it uses)"
            )
    else:
        print(f"GPU utilisation: not measured ({gpu_info or 'no nvidia-smi'})")
    print(f"results: {out / 'paper_grid.json'}; run folder {run_dir}")


if __name__ == "__main__":
    main()
