"""Batches of cached chest X-rays for Keras: a :class:`keras.utils.PyDataset`.

The dataset cache (:mod:`biomark.data.dataset`) holds uint8 images of shape
``(n_images, size, size)``, usually memory-mapped. :class:`ImageBatches`
serves them to ``model.fit`` / ``model.predict`` as float32 batches of shape
``(batch, size, size, 1)`` with values 0..255 (the model scales them itself),
plus integer labels when given.

* Shuffling uses the loader's own ``numpy.random.Generator`` (seeded), never
  global state: the order of every epoch follows from ``seed`` alone. Keras's
  own batch shuffling must be off (``model.fit(..., shuffle=False)``).
* When the model's input side differs from the cache's, the selected images
  are resized once, up front, with Pillow (:func:`resize_images`), never per
  batch.

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
        Images per batch; the last batch may be smaller.
    shuffle : bool, default False
        Reorder the rows before the first epoch and after every epoch.
    seed : int, default 0
        Seed of the loader's own random generator (used only to shuffle).
    image_size : int, optional
        Model input side. When it differs from ``side``, the selected rows
        are resized once here.
    **kwargs
        Passed to :class:`keras.utils.PyDataset` (``workers``,
        ``use_multiprocessing``, ``max_queue_size``).

    Attributes
    ----------
    order_ : ndarray of shape (n_rows,)
        Positions into the served rows, in the current epoch's order.
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if images.ndim != 3:
            raise ValueError(f"images must have shape (n, side, side), got {images.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        rows = np.arange(images.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if labels is not None and len(labels) != images.shape[0]:
            raise ValueError(f"{len(labels)} labels for {images.shape[0]} images")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int32)[rows]
        if image_size is not None and image_size != images.shape[1]:
            # Read the selected rows once (sorted, friendlier to a memmap) and resize them.
            self.images = resize_images(images[np.sort(rows)][np.argsort(np.argsort(rows))], image_size)
            self._rows = np.arange(len(rows))
        else:
            self.images = images
            self._rows = rows
        self._rng = np.random.default_rng(self.seed)
        self.order_ = self._rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))

    @property
    def n_images(self) -> int:
        """Number of images served per epoch."""
        return len(self._rows)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape of one model input, ``(side, side, 1)``."""
        return (int(self.images.shape[1]), int(self.images.shape[2]), 1)

    def __len__(self) -> int:
        return math.ceil(len(self._rows) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        positions = self.order_[index * self.batch_size : (index + 1) * self.batch_size]
        cache_rows = self._rows[positions]
        # Sorted reads are faster on a memory map; put the batch back in order after.
        sort = np.argsort(cache_rows, kind="stable")
        batch = np.empty((len(cache_rows), *self.images.shape[1:]), dtype=np.float32)
        batch[sort] = self.images[cache_rows[sort]]
        batch = batch[..., np.newaxis]
        if self.labels is None:
            return batch
        return batch, self.labels[positions]

    def on_epoch_end(self) -> None:
        """Draw the next epoch's order (when shuffling)."""
        if self.shuffle:
            self.order_ = self._rng.permutation(len(self._rows))
