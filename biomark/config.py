"""Analysis plans: one YAML file per run, loaded into frozen dataclasses.

Every setting and its default lives here, once. A plan file may set any subset
of them; unknown keys, wrong types and out-of-range values are errors that
name the file, the key and the fix. Command-line flags override a plan through
:func:`apply_overrides`, which goes through the same validation.

Examples
--------
>>> from biomark.config import plan_from_mapping
>>> plan = plan_from_mapping({"name": "demo", "strategies": ["scratch", "finetune:3"]})
>>> [s.label for s in plan.strategies]
['scratch', 'finetune:3']
>>> plan.cv.k
10
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from biomark.exceptions import ConfigError, DataError

__all__ = [
    "AugmentSettings",
    "DEFAULT_POSITIVE_CLASS",
    "CompareSettings",
    "Criteria",
    "CVSettings",
    "DataSettings",
    "DumpSettings",
    "EarlyStoppingSettings",
    "ModelSettings",
    "Monitor",
    "PhantomSettings",
    "Plan",
    "RadiomicsSettings",
    "Region",
    "ReportPlanSettings",
    "StrategyName",
    "StrategySpec",
    "TrainingSettings",
    "apply_overrides",
    "check_positive_class",
    "from_mapping",
    "load_plan",
    "load_yaml",
    "parse_class_weight",
    "plan_from_mapping",
    "plan_hash",
    "plan_to_dict",
]

StrategyName = Literal["scratch", "frozen", "finetune"]
#: What early stopping may watch (``training.early_stopping.monitor``): Keras's history keys.
Monitor = Literal["loss", "accuracy", "val_loss", "val_accuracy"]
#: Where radiomics are measured (``radiomics.region``, ``biomark radiomics --region``).
Region = Literal["lung", "image", "zones"]
T = TypeVar("T")


@dataclass(frozen=True)
class StrategySpec:
    """One learning strategy of the paper.

    Parameters
    ----------
    name : {"scratch", "frozen", "finetune"}
        ``scratch``: random initialisation, every layer trained (the paper's
        best). ``frozen``: ImageNet backbone frozen, only the head trained
        ("off-the-shelf features"). ``finetune``: ImageNet backbone whose top
        ``blocks`` convolutional blocks are trained.
    blocks : int or None
        Number of trainable top blocks for ``finetune`` (1-16), else None. A
        block is one of MobileNetV2's 16 inverted-residual blocks ``block_1`` ...
        ``block_16`` (Keras layer names); ``finetune:N`` trains the final
        ``Conv_1`` stage plus ``block_{17-N}`` ... ``block_16``.
    """

    name: StrategyName
    blocks: int | None = None

    @property
    def label(self) -> str:
        """The strategy as written in plans and folder names (``finetune:3``)."""
        return self.name if self.blocks is None else f"{self.name}:{self.blocks}"

    @property
    def dirname(self) -> str:
        """A file-system-safe name (``finetune_3``)."""
        return self.label.replace(":", "_")

    @classmethod
    def parse(cls, text: str) -> StrategySpec:
        """Parse ``"scratch"``, ``"frozen"``, ``"finetune:N"`` (or ``finetune_N``).

        Raises
        ------
        ConfigError
            If the name is unknown or N is not an integer in 1-16.
        """
        match = re.fullmatch(r"\s*([a-z]+)\s*(?:[:_]\s*(\d+))?\s*", str(text))
        names = get_args(StrategyName)
        if match is None or match.group(1) not in names:
            raise ConfigError(
                f"unknown strategy {text!r}: use one of 'scratch', 'frozen' or "
                "'finetune:N' with N the number of trainable top blocks (1-16)"
            )
        name, blocks = match.group(1), match.group(2)
        if name == "finetune":
            if blocks is None:
                raise ConfigError(
                    f"strategy {text!r} needs the number of trainable blocks, e.g. 'finetune:3'"
                )
            n = int(blocks)
            if not 1 <= n <= 16:
                raise ConfigError(
                    f"strategy {text!r}: N={n} is outside 1-16 (MobileNetV2 has 16 "
                    "inverted-residual blocks block_1..block_16 above its stem)"
                )
            return cls("finetune", n)
        if blocks is not None:
            raise ConfigError(f"strategy {text!r}: only 'finetune' takes a block count")
        return cls(name)  # type: ignore[arg-type]


ClassWeightKind = Literal["balanced", "sqrt", "none", "capped"]


def parse_class_weight(text: str) -> tuple[ClassWeightKind, float | None]:
    """Check ``training.class_weight`` and split it into its kind and cap.

    Grammar: ``balanced``, ``sqrt``, ``none`` or ``capped:N`` with N >= 1
    (case-insensitive, spaces around ``:`` allowed). What each does is in
    :func:`biomark.train.class_weights.class_weights`. The default,
    ``sqrt``, is the square root of the balanced weight: it halves the
    imbalance on a log scale for any dataset size, so a 10-image class
    among ~2,400 images gets 5.9 instead of ``balanced``'s 34.6 (which made
    the model predict that class 100 times, 3 of them right) and a
    balanced dataset gets 1.0 everywhere, as with ``balanced``.

    Parameters
    ----------
    text : str
        The setting as written in the plan.

    Returns
    -------
    kind : {"balanced", "sqrt", "none", "capped"}
    cap : float or None
        N for ``capped:N``, else None.

    Raises
    ------
    ConfigError
        Naming ``training.class_weight``, the value, and the forms allowed.

    Examples
    --------
    >>> parse_class_weight("sqrt"), parse_class_weight("capped:10")
    (('sqrt', None), ('capped', 10.0))
    """
    value = str(text).strip().casefold()
    if value in ("balanced", "sqrt", "none"):
        return value, None  # type: ignore[return-value]
    match = re.fullmatch(r"capped\s*:\s*(\d+(?:\.\d*)?|\.\d+)", value)
    if match is None:
        raise ConfigError(
            f"training.class_weight={text!r} is not allowed: use 'balanced', 'sqrt' (the default), 'none' "
            "or 'capped:N' (balanced weights, none above N, e.g. 'capped:10')"
        )
    cap = float(match.group(1))
    if cap < 1:
        raise ConfigError(
            f"training.class_weight={text!r}: the cap N of 'capped:N' is the largest weight a class may get "
            "and must be at least 1 (e.g. 'capped:10')"
        )
    return "capped", cap


@dataclass(frozen=True)
class PhantomSettings:
    """How to generate the phantom dataset when the plan's data folder is empty.

    ``image_size`` is the side of the letterboxed image cache (what the model
    reads); ``raw_size`` the side the radiographs are drawn at before
    letterboxing (default: ``image_size``). Drawing larger and averaging down
    keeps fine signatures (fibrosis's reticular net) that a small drawing
    would alias away. ``signature_strength`` multiplies every planted
    signature (1: the default, deliberately hard phantom; see
    ``data/PHANTOM.md``). With ``confounder`` true, a COVID-19 patient is
    from the tagged ``site_B`` with probability ``confounder_strength`` and
    any other patient with ``1 - confounder_strength`` (0.5: the tag carries
    no class information; 1: it separates COVID-19 perfectly).
    """

    n_per_class: int = 40
    seed: int = 0
    image_size: int = 200
    raw_size: int | None = None
    images_per_patient: int = 2
    confounder: bool = False
    confounder_strength: float = 0.8
    signature_strength: float = 1.0


@dataclass(frozen=True)
class DataSettings:
    """Where the dataset (manifest + image cache) lives.

    ``dir`` is a folder written by ``biomark data build`` or ``biomark data
    phantom``. When it holds no manifest and ``phantom`` is given, the phantom
    is generated there first.
    """

    dir: str = "data/phantom"
    phantom: PhantomSettings | None = None


@dataclass(frozen=True)
class CVSettings:
    """Cross-validation shared by every strategy of a run.

    k : int, default 10
        Number of test folds. With ``grouping: source`` it must equal the
        number of sources in the dataset (one test fold per source); the
        error names the value to set.
    grouping : {"patient", "source", "none"}, default "patient"
        ``patient`` keeps all images of a patient, and every exact copy of
        them (same file SHA-256, as in ``duplicates.csv``, even under another
        patient id), in one fold (scikit-learn's ``StratifiedGroupKFold``).
        ``source`` is leave-one-source-out (DeGrave et al. 2021): fold ``i``
        tests on the ``i``-th source in name order, so every test is on a
        hospital or collection the model never saw; every class must come
        from at least two sources, otherwise the run stops before training
        naming each single-source class (such a class would be absent from
        training when its source is tested, and its features cannot be told
        from its source's). ``none`` reproduces the paper's plain stratified
        split over images.
    validation_fraction : float, default 0.1
        Share of each training fold held out (by patient group under
        ``patient`` and ``source``) for early stopping.
    near_duplicate_distance : int, default -1
        Also keep *near* duplicates in one fold: images whose perceptual
        hashes differ by at most this many of 256 bits (14 matches what
        ``data build`` lists in ``duplicates.csv``; scaled for the 64-bit
        hashes of older manifests). -1: exact copies only.
        Used by ``patient`` folds and by the validation split under
        ``patient`` and ``source`` (``none`` groups nothing).
    """

    k: int = 10
    grouping: Literal["patient", "source", "none"] = "patient"
    validation_fraction: float = 0.1
    near_duplicate_distance: int = -1

    def __post_init__(self) -> None:
        if not -1 <= self.near_duplicate_distance <= 256:
            raise ConfigError(
                f"cv.near_duplicate_distance={self.near_duplicate_distance}: use -1 (exact copies only) or a "
                "number of differing phash bits in 0-256 (14 matches duplicates.csv)"
            )


@dataclass(frozen=True)
class AugmentSettings:
    """The paper's augmentation: rotation up to ±10° and shifts up to ±20 px.

    ``interpolation`` resamples the rotated and shifted image: ``bilinear``
    (Keras's default) averages neighbouring pixels, which blurs textures a few
    pixels wide -- at 96 px the phantom's fibrotic net -- in every training
    image; ``nearest`` moves pixels without averaging, so fine texture keeps
    its contrast.
    """

    rotation_degrees: float = 10.0
    shift_pixels: int = 20
    interpolation: Literal["bilinear", "nearest"] = "bilinear"


@dataclass(frozen=True)
class ModelSettings:
    """MobileNetV2 backbone and the paper's head.

    ``weights`` is ``imagenet`` (Keras's download/cache), a path to a local
    ``.h5``/``.weights.h5`` file, or ``none`` (pretrained strategies then start
    from a seeded random backbone: a "random features" control, recorded as
    such in the run). ``image_size`` is the model's
    input side in pixels; images are resized from the cache when it differs.

    Three settings make a randomly initialised MobileNetV2 learn from a few
    hundred images (``benchmarks/learning.py`` has the measurements):

    intensity : {"per_image", "fixed"}, default "per_image"
        ``per_image`` standardises every image to zero mean and unit standard
        deviation before the backbone, so films of different exposure (and
        sources of different exposure, a classic shortcut) look alike;
        ``fixed`` is MobileNetV2's own ``x / 127.5 - 1``.
    batchnorm_momentum : float, default 0.9
        Momentum of the moving statistics of every BatchNormalization layer
        that trains (backbone and head). Keras's MobileNetV2 uses 0.999, which
        needs thousands of steps to forget its initial statistics; a fold of a
        few hundred images trains for a few hundred steps, after which 0.999
        leaves inference statistics that do not match the weights (every
        image predicted as one class). 0.9 follows the weights within ~10
        steps, so no re-estimation is needed.
    zero_init_residual : bool, default True
        Randomly initialised residual blocks start with the scale (gamma) of
        their last BatchNormalization at zero, so each block starts as the
        identity and the network trains like a shallow one at first ("zero-
        gamma", Goyal et al. 2017; He et al. 2019). Measured on the phantom
        it is the difference between learning and not learning from scratch.
        Pretrained blocks are never changed.
    """

    image_size: int = 200
    weights: str = "imagenet"
    alpha: float = 1.0
    head_units: int = 2500
    dropout: float = 0.5
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    intensity: Literal["per_image", "fixed"] = "per_image"
    batchnorm_momentum: float = 0.9
    zero_init_residual: bool = True


@dataclass(frozen=True)
class EarlyStoppingSettings:
    """Early stopping on the validation split taken inside the training folds."""

    enabled: bool = True
    monitor: Monitor = "val_loss"
    patience: int = 5
    restore_best_weights: bool = True


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation settings (the paper does not state them; see README) and the input pipeline.

    The optimisation settings are ``optimizer``, ``learning_rate`` (scratch
    and frozen), ``finetune_learning_rate``, ``epochs`` (an upper bound under
    early stopping), ``batch_size``, ``early_stopping``, ``class_weight`` and
    ``mixed_precision`` (``mixed_float16`` on a GPU, ``mixed_bfloat16`` on a
    CPU; the softmax output stays float32). The defaults are a recipe that
    trains MobileNetV2 from scratch on a few thousand images (measured in
    ``benchmarks/learning.py``; see the README):

    optimizer : {"adamw", "adam", "sgd", "rmsprop"}, default "adamw"
        AdamW (Adam with decoupled weight decay, Loshchilov & Hutter 2019).
    learning_rate : float, default 5e-3
        Peak learning rate of scratch and frozen (a new head, or a whole
        random network: large steps are safe once the warm-up is over).
    finetune_learning_rate : float, default 5e-4
        Peak learning rate of ``finetune:N``: 10x smaller, so the unfrozen
        pretrained blocks are adapted rather than overwritten by the large
        gradients of the still-random head.
    weight_decay : float, default 0.05
        Decoupled weight decay (AdamW; the other optimizers apply Keras's
        ``weight_decay`` the same way). A few thousand images fit a 2-3
        million-parameter network easily; decay keeps it from memorising them.
    schedule : {"cosine", "constant"}, default "cosine"
        ``cosine``: linear warm-up over ``warmup_epochs``, then cosine decay to
        zero at the last epoch, updated every step. Adaptive optimizers with a
        large constant rate are unstable in the first steps of a random
        network (warm-up) and keep bouncing at the end (decay).
    warmup_epochs : int, default 2
        Epochs of linear warm-up (of the ``cosine`` schedule); at most half
        of ``epochs`` is used, so a short run still decays.
    label_smoothing : float, default 0.1
        One-hot targets become ``y * (1 - eps) + eps / n_classes`` (Keras's
        definition), so the network is not pushed towards infinite logits on
        a small training set.
    batchnorm_recalibration : {"final", "none", "epoch"}, default "final"
        Re-estimate the moving statistics of the training BatchNormalization
        layers from training batches (the weights' own statistics, "precise
        BN") after training (``final``), or before every validation as well
        (``epoch``), in one compiled pass per batch. Momentum 0.9 lets most
        statistics follow the weights, but not all: in the head, units that
        stopped firing (ReLU) keep a moving variance thousands of times their
        current one, which shifts the logits of every image (measured on a
        small phantom: 64 % -> 100 % training and 57 % -> 82 % test accuracy
        after re-estimation). ``final`` costs one forward pass over at most 64
        batches.
    fit_check_epoch : int, default 3
        After this epoch (0: never) the fold checks that the network fits its
        own training images: the accuracy on up to 256 of them, without
        augmentation and with BatchNormalization statistics re-estimated for
        the current weights, must be significantly above the majority rate
        (one-sided binomial test, p < 0.01). Otherwise the log warns "cannot
        fit its own training set" and ``metrics.json`` says so; training goes
        on. The same images predicted with the statistics as they stand tell
        whether those lag behind the weights (also logged). The check leaves
        the model as it was.
    control_epochs : int, default 0
        Epochs of a random-features control: ``frozen`` or ``finetune:N``
        with ``model.weights: none`` (their backbone is seeded noise, so
        they show what a network learns without pretrained features, not
        ImageNet transfer). 0 trains them for ``epochs`` like the other
        strategies; a smaller number saves time in an offline demo. The
        schedule (warm-up, cosine decay) is laid over these epochs.
    threads : int, default 0
        CPU threads of the Keras backend's operations (TensorFlow's
        intra-op pool): 0 uses every core this process may run on
        (``os.sched_getaffinity``). Set it when several folds share a machine.

    The input-pipeline settings change speed, not results, except
    ``drop_remainder`` (which changes which images a step sees):

    cache_in_memory : bool, default True
        Copy a fold's training and validation images from the (usually
        memory-mapped) dataset cache into RAM once, before training, instead
        of reading the memory map for every batch. Costs ``n_images x side**2``
        bytes (uint8): about 135 MiB for a paper fold (~3,500 training and
        validation images at 200 px), 14 MiB at 64 px; the float32 batches
        are made from it as needed.
    loader_workers : int, default 2
        Threads (never processes) that assemble batches ahead of the model
        (``keras.utils.PyDataset`` ``workers``). 1 makes every batch in the
        training loop's thread, between steps (TensorFlow still prefetches
        through ``tf.data``; the JAX backend does not).
    loader_queue_size : int, default 8
        Batches prepared ahead when ``loader_workers`` > 1
        (``PyDataset`` ``max_queue_size``).
    drop_remainder : bool, default True
        Drop the last, partial training batch of every epoch (at most
        ``batch_size - 1`` images, different ones every epoch as the order is
        reshuffled), so every training step has the same shape in every fold:
        XLA compiles the train step once and JAX's persistent compilation
        cache lets folds 2..k reuse fold 1's. Padding it instead would put
        dummy images into BatchNormalization's batch statistics and shrink
        the step's mean loss. With fewer training images than ``batch_size``
        the one partial batch is kept. Validation and prediction batches are
        padded to the full size instead (padding is masked out exactly).
    xla_cache : str, default "auto"
        JAX backend only: folder of JAX's persistent compilation cache.
        ``auto`` is ``$BIOMARK_XLA_CACHE`` when set, else
        ``$XDG_CACHE_HOME/biomark/xla`` (``~/.cache/biomark/xla``); ``none``
        disables it; anything else is a folder path. Ignored (and recorded
        as unused) with TensorFlow.
    """

    optimizer: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    learning_rate: float = 5e-3
    finetune_learning_rate: float = 5e-4
    weight_decay: float = 0.05
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    epochs: int = 30
    batch_size: int = 32
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    class_weight: str = "sqrt"  # balanced | sqrt | none | capped:N; see parse_class_weight
    mixed_precision: bool = False
    batchnorm_recalibration: Literal["final", "none", "epoch"] = "final"
    fit_check_epoch: int = 3
    control_epochs: int = 0
    threads: int = 0
    cache_in_memory: bool = True
    loader_workers: int = 2
    loader_queue_size: int = 8
    drop_remainder: bool = True
    xla_cache: str = "auto"


@dataclass(frozen=True)
class DumpSettings:
    """What ``extract`` writes beside the models.

    ``features: oof`` dumps the GAP vector of each test-fold image;
    ``all`` dumps every image through every fold's model. ``blocks`` also
    dumps the global-average-pooled output of every MobileNetV2 block.
    """

    features: Literal["oof", "all"] = "oof"
    blocks: bool = False


@dataclass(frozen=True)
class CompareSettings:
    """Representation comparison (``biomark compare``)."""

    n_permutations: int = 1000
    n_bootstrap: int = 1000
    rbf_sigma_fraction: float = 0.8
    per_class: bool = True
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    knn_k: int = 10


@dataclass(frozen=True)
class RadiomicsSettings:
    """Radiomics extraction (``biomark radiomics``)."""

    params: str = "analyses/radiomics_cxr2d.yaml"
    region: Region = "lung"
    jobs: int = -1


# --------------------------------------------------------------------------- #
# The positive class and the report's thresholds (the ``positive_class`` key and
# the ``report:`` section of a plan).
# --------------------------------------------------------------------------- #

#: The paper's positive class: its 2-class task is this class against the rest.
DEFAULT_POSITIVE_CLASS = "COVID-19"


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the four candidate-biomarker criteria (``report.criteria``).

    Attributes
    ----------
    alpha : float, default 0.05
        FDR level for significance and for the source association.
    min_stability : float, default 0.7
        Minimum top-k frequency across folds (with 2 folds: both).
    min_lung_fraction : float, default 0.5
        Minimum share of activation mass inside the lungs.
    max_blackout_survival : float, default 0.5
        Model-level flag when this share of above-chance accuracy survives
        the lung blackout.
    min_match_r : float, default 0.5
        A unit family whose weakest member matches its reference unit below
        this activation correlation is poorly matched: its stability is
        judged on its class effect per fold, not on the top-k frequency.
    min_fold_effect : float, default 0.147
        |Cliff's delta| a member must reach in its fold, with the family's
        sign, to count as showing the class effect (0.147: the upper bound of
        a "negligible" delta, Romano et al. 2006).

    Raises
    ------
    ConfigError
        ``alpha`` outside (0, 1) or another threshold outside [0, 1].
    """

    alpha: float = 0.05
    min_stability: float = 0.7
    min_lung_fraction: float = 0.5
    max_blackout_survival: float = 0.5
    min_match_r: float = 0.5
    min_fold_effect: float = 0.147

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"report.criteria.alpha={self.alpha!r}: must lie in (0, 1)")
        for name in ("min_stability", "min_lung_fraction", "max_blackout_survival", "min_match_r",
                     "min_fold_effect"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"report.criteria.{name}={value!r}: must lie in [0, 1]")


@dataclass(frozen=True)
class ReportPlanSettings:
    """The ``report:`` section: thresholds the report, compare and radiomics pages judge by.

    Attributes
    ----------
    criteria : Criteria
        The candidate-biomarker criteria (:class:`Criteria`).
    chance_alpha : float, default 0.05
        Level of the test that a model is above chance
        (:func:`biomark.analysis.chance.chance_guard`).
    source_auc_recoverable : float, default 0.7
        Source AUC above which a significant source audit reads "source is
        recoverable" (:func:`biomark.analysis.audit.source_predictability`).
    source_auc_weak : float, default 0.6
        Source AUC reported as the "weak" band of the audit.
    cka_alpha : float, default 0.05
        Permutation p-value at or above which two strategies' CKA reads "not
        distinguishable from unrelated representations" (``biomark compare``).
    min_overlap : float, default 0.9
        Share of a run's images that must have radiomic features before the
        radiomics association is computed (``biomark radiomics``).

    Raises
    ------
    ConfigError
        A level outside (0, 1), a share outside (0, 1], or ``source_auc_weak``
        above ``source_auc_recoverable``.
    """

    criteria: Criteria = field(default_factory=Criteria)
    chance_alpha: float = 0.05
    source_auc_recoverable: float = 0.7
    source_auc_weak: float = 0.6
    cka_alpha: float = 0.05
    min_overlap: float = 0.9

    def __post_init__(self) -> None:
        for name in ("chance_alpha", "cka_alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"report.{name}={value!r}: must lie in (0, 1), e.g. 0.05")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ConfigError(f"report.min_overlap={self.min_overlap!r}: must lie in (0, 1], e.g. 0.9")
        if not 0.5 <= self.source_auc_weak <= self.source_auc_recoverable <= 1.0:
            raise ConfigError(
                f"report.source_auc_weak={self.source_auc_weak!r}, report.source_auc_recoverable="
                f"{self.source_auc_recoverable!r}: use 0.5 <= weak <= recoverable <= 1 (AUCs; 0.5 is chance)"
            )


def check_positive_class(plan: Plan, classes: typing.Collection[str], where: str = "the dataset") -> None:
    """Check that the plan's ``positive_class`` is one of the dataset's classes.

    Parameters
    ----------
    plan : Plan
    classes : collection of str
        The dataset's classes (its manifest's labels).
    where : str, default "the dataset"
        Names the dataset in the message (its folder).

    Raises
    ------
    DataError
        The positive class is not among ``classes`` (the dataset does not fit the plan).

    Examples
    --------
    >>> check_positive_class(Plan(positive_class="Normal"), ["COVID-19", "Normal"])
    """
    if plan.positive_class not in classes:
        raise DataError(
            f"positive_class={plan.positive_class!r} is not a class of {where} ({', '.join(map(str, classes))}); "
            "the 2-class metrics need it: set positive_class in the plan to one of these classes, or rebuild "
            "the dataset with that class (the recipe's finding_map)"
        )


@dataclass(frozen=True)
class Plan:
    """A whole analysis plan: the run's every decision, with defaults.

    ``positive_class`` (default ``"COVID-19"``, :data:`DEFAULT_POSITIVE_CLASS`) is the class of
    the 2-class task (it against the rest); it must be one of the dataset's classes
    (:func:`check_positive_class`). ``report`` holds the thresholds of the pages
    (:class:`ReportPlanSettings`).
    """

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    data: DataSettings = field(default_factory=DataSettings)
    cv: CVSettings = field(default_factory=CVSettings)
    strategies: tuple[StrategySpec, ...] = (
        StrategySpec("scratch"),
        StrategySpec("frozen"),
        StrategySpec("finetune", 11),
    )
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dump: DumpSettings = field(default_factory=DumpSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    radiomics: RadiomicsSettings = field(default_factory=RadiomicsSettings)
    positive_class: str = DEFAULT_POSITIVE_CLASS
    report: ReportPlanSettings = field(default_factory=ReportPlanSettings)

    def __post_init__(self) -> None:
        _check_plan(self)


# --------------------------------------------------------------------------- #
# Generic mapping -> frozen dataclass conversion with validation.
# Hand-written because neither the standard library nor our chosen
# dependencies validate nested frozen dataclasses with Literal types and
# name the offending key; pydantic would be one more heavy dependency.
# --------------------------------------------------------------------------- #


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys.

    Parameters
    ----------
    cls : dataclass type
        The frozen dataclass to build.
    mapping : mapping or None
        Keys are field names; missing keys take the field's default.
    where : str, default ""
        Prefix naming the location in the file (``"training."``), used in
        error messages.

    Returns
    -------
    instance of cls

    Raises
    ------
    ConfigError
        On unknown keys, wrong types or values outside a ``Literal`` set.
    """
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{where.rstrip('.') or 'plan'}: expected a mapping of settings, got {mapping!r}"
        )
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(where + str(u) for u in unknown)}; "
            f"valid keys under {where.rstrip('.') or 'the top level'} are: {', '.join(names)}"
        )
    values = {
        name: _coerce(hints[name], mapping[name], f"{where}{name}")
        for name in names
        if name in mapping
    }
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where.rstrip('.') or 'plan'}: {err}") from err


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"setting {key}={value!r} is not allowed: use one of "
                + ", ".join(repr(a) for a in allowed)
            )
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is StrategySpec:
        if isinstance(value, StrategySpec):
            return value
        return StrategySpec.parse(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_mapping(hint, value, where=f"{key}.")  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"setting {key}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"setting {key}={value!r} must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"setting {key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"setting {key}={value!r} must be text")
        return str(value)
    return value


def _check_plan(plan: Plan) -> None:
    checks = [
        (plan.cv.k >= 2, f"cv.k={plan.cv.k}: need at least 2 folds"),
        (
            0.0 <= plan.cv.validation_fraction < 0.5,
            f"cv.validation_fraction={plan.cv.validation_fraction}: use a value in [0, 0.5)",
        ),
        (plan.model.image_size >= 32, f"model.image_size={plan.model.image_size}: MobileNetV2 needs at least 32"),
        (0.0 <= plan.model.dropout < 1.0, f"model.dropout={plan.model.dropout}: use a value in [0, 1)"),
        (plan.model.head_units >= 1, f"model.head_units={plan.model.head_units}: must be positive"),
        (plan.training.epochs >= 1, f"training.epochs={plan.training.epochs}: must be at least 1"),
        (plan.training.batch_size >= 1, f"training.batch_size={plan.training.batch_size}: must be at least 1"),
        (plan.training.learning_rate > 0, f"training.learning_rate={plan.training.learning_rate}: must be positive"),
        (
            plan.training.finetune_learning_rate > 0,
            f"training.finetune_learning_rate={plan.training.finetune_learning_rate}: must be positive",
        ),
        (plan.training.weight_decay >= 0, f"training.weight_decay={plan.training.weight_decay}: must be >= 0"),
        (plan.training.warmup_epochs >= 0, f"training.warmup_epochs={plan.training.warmup_epochs}: must be >= 0"),
        (
            0.0 <= plan.training.label_smoothing < 1.0,
            f"training.label_smoothing={plan.training.label_smoothing}: use a value in [0, 1)",
        ),
        (plan.training.fit_check_epoch >= 0, f"training.fit_check_epoch={plan.training.fit_check_epoch}: use 0 (off) or an epoch"),
        (
            plan.training.control_epochs >= 0,
            f"training.control_epochs={plan.training.control_epochs}: use 0 (same as training.epochs) or an epoch count",
        ),
        (plan.training.threads >= 0, f"training.threads={plan.training.threads}: use 0 (every core) or a count"),
        (
            0.0 < plan.model.batchnorm_momentum < 1.0,
            f"model.batchnorm_momentum={plan.model.batchnorm_momentum}: use a value in (0, 1), e.g. 0.9",
        ),
        (
            plan.data.phantom is None or plan.data.phantom.raw_size is None or plan.data.phantom.raw_size >= 64,
            "data.phantom.raw_size: the phantom is drawn at 64 px or more",
        ),
        (
            plan.data.phantom is None or 0.0 < plan.data.phantom.signature_strength <= 4.0,
            "data.phantom.signature_strength: use a number in (0, 4] (1 = the default phantom)",
        ),
        (
            plan.data.phantom is None or 0.5 <= plan.data.phantom.confounder_strength <= 1.0,
            "data.phantom.confounder_strength: use a number in [0.5, 1] (the share of COVID-19 patients "
            "from the tagged site; 0.8 = the default)",
        ),
        (
            plan.training.loader_workers >= 1,
            f"training.loader_workers={plan.training.loader_workers}: use 1 (no extra thread) or more",
        ),
        (
            plan.training.loader_queue_size >= 1,
            f"training.loader_queue_size={plan.training.loader_queue_size}: must be at least 1",
        ),
        (
            plan.training.xla_cache.strip() != "",
            "training.xla_cache='': use 'auto', 'none' or a folder path",
        ),
        (len(plan.strategies) >= 1, "strategies: list at least one strategy"),
        (plan.positive_class.strip() != "", "positive_class='': name the class of the 2-class task, e.g. COVID-19"),
        (
            len({s.label for s in plan.strategies}) == len(plan.strategies),
            "strategies: a strategy is listed twice",
        ),
        (
            re.fullmatch(r"[A-Za-z0-9_.-]+", plan.name) is not None,
            f"name={plan.name!r}: use letters, digits, '_', '-' or '.' (it names the run folder)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    parse_class_weight(plan.training.class_weight)  # raises ConfigError naming training.class_weight


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file into a dict, with errors that name the file.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid YAML, or is not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; give the path of a YAML file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from err
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return content


def plan_from_mapping(mapping: Mapping[str, Any]) -> Plan:
    """Build a :class:`Plan` from a mapping (as read from YAML)."""
    return from_mapping(Plan, mapping)


def load_plan(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Plan:
    """Load and validate an analysis plan.

    Parameters
    ----------
    path : str or Path
        YAML plan file (see ``analyses/``).
    overrides : mapping, optional
        Dotted keys (``"training.epochs"``) to values, e.g. from CLI flags.

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        With the file name, if the file or any setting is invalid.
    """
    mapping = load_yaml(path)
    try:
        plan = plan_from_mapping(mapping)
        return apply_overrides(plan, overrides or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (strategies as their labels), for JSON/YAML."""

    def convert(obj: Any) -> Any:
        if isinstance(obj, StrategySpec):
            return obj.label
        if dataclasses.is_dataclass(obj):
            return {f.name: convert(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, (list, tuple)):
            return [convert(o) for o in obj]
        return obj

    return convert(plan)


def apply_overrides(plan: Plan, overrides: Mapping[str, Any]) -> Plan:
    """Return a new plan with dotted-key overrides applied and validated.

    Examples
    --------
    >>> plan = apply_overrides(Plan(), {"training.epochs": 2, "data.dir": "x"})
    >>> plan.training.epochs, plan.data.dir
    (2, 'x')
    """
    data = plan_to_dict(plan)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return plan_from_mapping(data)


def plan_hash(plan: Plan) -> str:
    """SHA-256 of the plan's canonical JSON form (first 16 hex digits)."""
    text = json.dumps(plan_to_dict(plan), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
