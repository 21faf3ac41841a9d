"""Batches of cached chest X-rays for Keras: a :class:`keras.utils.PyDataset`.

The dataset cache (:mod:`biomark.data.dataset`) holds uint8 images of shape
``(n_images, size, size)``, usually memory-mapped. :class:`ImageBatches`
serves them to ``model.fit`` / ``model.predict`` as float32 batches of shape
``(batch, size, size, 1)`` with values 0..255 (the model scales them itself),
plus integer labels when given.

* Shuffling uses its own ``numpy.random.Generator``, never global state: the
  order of epoch ``e`` is a permutation drawn from ``default_rng([seed, e])``,
  a function of the seed and the epoch alone, so a resumed training sees the
  same order without saving any generator state (:meth:`ImageBatches.set_epoch`).
  Keras's own batch shuffling must be off (``model.fit(..., shuffle=False)``).
* When the model's input side differs from the cache's, the selected images
  are resized once, up front, with Pillow (:func:`resize_images`), never per
  batch. ``in_memory=True`` copies the selected rows into RAM up front even
  when no resize is needed, so no batch touches the memory map.
* Constant batch shapes, for XLA (one compiled program for every step and
  every fold): ``drop_remainder=True`` leaves out the last, partial batch of
  each epoch (for training: different images each epoch when shuffling);
  ``pad_to_batch=True`` fills the last batch up to ``batch_size`` with black
  images that carry sample weight 0 (for validation and prediction; with
  labels a batch is then ``(images, labels, weights)``).
* ``workers`` > 1 (a :class:`keras.utils.PyDataset` argument) assembles
  batches in threads ahead of the model; the order stays that of ``order_``.

Examples
--------
>>> import numpy as np
>>> images = np.zeros((5, 32, 32), dtype=np.uint8)
>>> batches = ImageBatches(images, np.arange(5), batch_size=2)
>>> len(batches), batches[0][0].shape, batches[2][1].tolist()
(3, (2, 32, 32, 1), [4])
"""

from __future__ import annotations

import math

import keras
import numpy as np
from PIL import Image

__all__ = ["ImageBatches", "resize_images"]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize square grayscale images with Pillow (bilinear, antialiased).

    Parameters
    ----------
    images : ndarray of shape (n_images, side, side), uint8
        Images (a memory map is fine; it is read row by row).
    size : int
        Output side in pixels.

    Returns
    -------
    ndarray of shape (n_images, size, size), uint8
        A new in-memory array; ``images`` itself when the side already matches.

    Examples
    --------
    >>> images = np.zeros((2, 8, 8), dtype=np.uint8)
    >>> images[:, :, 4:] = 200  # left half black, right half grey
    >>> small = resize_images(images, 4)
    >>> small.shape, small.dtype, small[0, 0, [0, -1]].tolist()
    ((2, 4, 4), dtype('uint8'), [0, 200])
    >>> resize_images(images, 8) is images
    True
    """
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = np.empty((images.shape[0], size, size), dtype=np.uint8)
    for i in range(images.shape[0]):
        pil = Image.fromarray(np.asarray(images[i], dtype=np.uint8), mode="L")
        out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out


class ImageBatches(keras.utils.PyDataset):
    """Float32 image batches (and integer labels) from a uint8 image cache.

    Parameters
    ----------
    images : ndarray of shape (n_images, side, side), uint8
        The image cache (memory-mapped or in memory).
    labels : ndarray of shape (n_images,), int, optional
        Class index of every cached image. Without labels a batch is the
        image array alone (for ``predict``).
    rows : ndarray of shape (n_rows,), int, optional
        Which cache rows to serve (default: all, in order).
    batch_size : int, default 32
        Images per batch; the last batch may be smaller (see
        ``drop_remainder`` and ``pad_to_batch``).
    shuffle : bool, default False
        Reorder the rows every epoch (see :meth:`set_epoch`).
    seed : int, default 0
        Seed of the shuffling.
    n_classes : int, optional
        Serve labels one-hot (float32, shape ``(batch, n_classes)``), as a
        loss with label smoothing needs; default: integer labels.
    image_size : int, optional
        Model input side. When it differs from ``side``, the selected rows
        are resized once here.
    in_memory : bool, default False
        Copy the selected rows into RAM once, here (``n_rows x side**2``
        bytes), instead of reading ``images`` for every batch.
    drop_remainder : bool, default False
        Serve only full batches: ``n_rows // batch_size`` per epoch (one
        partial batch when ``n_rows < batch_size``).
    pad_to_batch : bool, default False
        Pad the last batch with zero images to ``batch_size``; with labels,
        batches carry sample weights (1 for real images, 0 for padding).
        Callers of ``predict`` drop the outputs past :attr:`n_images`.
    **kwargs
        Passed to :class:`keras.utils.PyDataset` (``workers``,
        ``use_multiprocessing``, ``max_queue_size``).

    Attributes
    ----------
    order_ : ndarray of shape (n_rows,)
        Positions into the served rows, in the current epoch's order.
    epoch_ : int
        The epoch whose order is current (0-based).

    Raises
    ------
    ValueError
        ``images`` is not 3-D, ``batch_size`` < 1, ``labels`` do not match
        the images, or both ``drop_remainder`` and ``pad_to_batch`` are set.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        rows: np.ndarray | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        image_size: int | None = None,
        in_memory: bool = False,
        drop_remainder: bool = False,
        pad_to_batch: bool = False,
        n_classes: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if images.ndim != 3:
            raise ValueError(f"images must have shape (n, side, side), got {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        if drop_remainder and pad_to_batch:
            raise ValueError(
                "drop_remainder and pad_to_batch exclude each other: drop the last batch or pad it"
            )
        rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if labels is not None and len(labels) != images.shape[0]:
            raise ValueError(f"{len(labels)} labels for {images.shape[0]} images")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.pad_to_batch = bool(pad_to_batch)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int32)[rows]
        resize = image_size is not None and image_size != images.shape[1]
        if resize or in_memory:
            # Read the selected rows once (sorted, friendlier to a memmap), in row order.
            selected = np.ascontiguousarray(images[np.sort(rows)][np.argsort(np.argsort(rows))])
            self.images = (
                resize_images(selected, image_size)
                if resize and image_size is not None
                else selected
            )
            self._rows = np.arange(len(rows))
        else:
            self.images = images
            self._rows = rows
        self.n_classes = None if n_classes is None else int(n_classes)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch``'s order current (a permutation from ``default_rng([seed, epoch])``)."""
        self.epoch_ = int(epoch)
        n = len(self._rows)
        if self.shuffle:
            self.order_ = np.random.default_rng([self.seed, self.epoch_]).permutation(n)
        else:
            self.order_ = np.arange(n)

    @property
    def n_images(self) -> int:
        """Number of images served per epoch."""
        return len(self._rows)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one model input, ``(side, side, 1)``."""
        return (int(self.images.shape[1]), int(self.images.shape[2]), 1)

    @property
    def n_served(self) -> int:
        """Image slots per epoch: dropped images excluded, padding included."""
        n = len(self._rows)
        if self.pad_to_batch or (self.drop_remainder and n >= self.batch_size):
            return len(self) * self.batch_size
        return n

    def __len__(self) -> int:
        n = len(self._rows)
        if self.drop_remainder and n >= self.batch_size:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        positions = self.order_[index * self.batch_size : (index + 1) * self.batch_size]
        cache_rows = self._rows[positions]
        n_real = len(cache_rows)
        size = self.batch_size if self.pad_to_batch else n_real
        batch = np.zeros((size, *self.images.shape[1:]), dtype=np.float32)
        if isinstance(self.images, np.memmap):
            # Sorted reads are faster on a memory map; put the batch back in order after.
            sort = np.argsort(cache_rows, kind="stable")
            batch[sort] = self.images[cache_rows[sort]]
        else:
            batch[:n_real] = self.images[cache_rows]
        batch = batch[..., np.newaxis]
        if self.labels is None:
            return batch
        labels = self.labels[positions]
        if self.n_classes is not None:
            labels = np.eye(self.n_classes, dtype=np.float32)[labels]
        if not self.pad_to_batch:
            return batch, labels
        weights = np.zeros(size, dtype=np.float32)
        weights[:n_real] = 1.0
        padding = ((0, size - n_real),) + ((0, 0),) * (labels.ndim - 1)
        return batch, np.pad(labels, padding), weights

    def on_epoch_end(self) -> None:
        """Move on to the next epoch's order."""
        self.set_epoch(self.epoch_ + 1)
