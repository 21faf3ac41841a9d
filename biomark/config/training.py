"""The ``model:`` and ``training:`` sections of a plan: the network, its augmentation, the
optimisation recipe and the input pipeline; ``training.class_weight``'s grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, cast

from biomark.exceptions import ConfigError

#: What early stopping may watch (``training.early_stopping.monitor``): Keras's history keys.
Monitor = Literal["loss", "accuracy", "val_loss", "val_accuracy"]

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
        return cast(ClassWeightKind, value), None
    match = re.fullmatch(r"capped\s*:\s*(\d+(?:\.\d*)?|\.\d+)", value)
    if match is None:
        raise ConfigError(
            f"training.class_weight={text!r} is not allowed: use 'balanced', 'sqrt' (the default), "
            "'none' or 'capped:N' (balanced weights, none above N, e.g. 'capped:10')"
        )
    cap = float(match.group(1))
    if cap < 1:
        raise ConfigError(
            f"training.class_weight={text!r}: the cap N of 'capped:N' is the largest weight a "
            "class may get and must be at least 1 (e.g. 'capped:10')"
        )
    return "capped", cap


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
        the model as it was. After the last epoch the final model predicts the
        same images again (``final_*`` in ``metrics.json``): the log withdraws
        an early warning for a network that fits them by then, repeats it for
        one that still does not, and warns about one that no longer does.
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
    run_eagerly : bool, default False
        Keras's ``run_eagerly``: every step runs the model op by op from
        Python instead of a traced ``tf.function`` / ``jax.jit`` program (the
        BatchNormalization re-estimation too). Tracing MobileNetV2's training
        step costs about 25 s per model on 2 CPU cores before the first step,
        and an eager step is several times slower than a traced one; so
        ``true`` only pays for runs of a few steps per model (tests, a smoke
        run of a plan on a handful of images). Part of the checkpoint's
        fingerprint: eager and traced programs may round differently.

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
    run_eagerly: bool = False
    cache_in_memory: bool = True
    loader_workers: int = 2
    loader_queue_size: int = 8
    drop_remainder: bool = True
    xla_cache: str = "auto"
