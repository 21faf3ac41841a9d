"""ImageBatches: shapes, dtypes, row selection, seeded shuffling, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from biomark.data.dataset import load_dataset
from biomark.train.loader import ImageBatches, resize_images


@pytest.fixture
def images() -> np.ndarray:
    # image i is filled with the value i, so a batch reveals which rows it holds
    return np.repeat(np.arange(10, dtype=np.uint8), 16 * 16).reshape(10, 16, 16)


def rows_of(batch: np.ndarray) -> list[int]:
    return batch[:, 0, 0, 0].astype(int).tolist()


def test_batches_have_keras_shapes_and_dtypes(images: np.ndarray) -> None:
    data = ImageBatches(images, np.arange(10) % 3, batch_size=4)
    assert len(data) == 3
    x, y = data[0]
    assert x.shape == (4, 16, 16, 1) and x.dtype == np.float32
    assert y.dtype == np.int32 and y.tolist() == [0, 1, 2, 0]
    x_last, y_last = data[2]
    assert x_last.shape == (2, 16, 16, 1) and rows_of(x_last) == [8, 9]
    assert float(x.max()) == 3.0  # raw 0..255 values, the model scales them
    with pytest.raises(IndexError, match="out of range"):
        data[3]


def test_rows_select_images_and_labels_together(images: np.ndarray) -> None:
    labels = np.arange(10) * 10
    data = ImageBatches(images, labels, rows=np.array([7, 2, 5]), batch_size=8)
    x, y = data[0]
    assert rows_of(x) == [7, 2, 5]
    assert y.tolist() == [70, 20, 50]
    assert data.n_images == 3 and data.image_shape == (16, 16, 1)


def test_without_labels_a_batch_is_the_images_alone(images: np.ndarray) -> None:
    batch = ImageBatches(images, batch_size=5)[1]
    assert isinstance(batch, np.ndarray) and rows_of(batch) == [5, 6, 7, 8, 9]


def epoch_orders(data: ImageBatches, epochs: int) -> list[list[int]]:
    orders = []
    for _ in range(epochs):
        orders.append([r for i in range(len(data)) for r in rows_of(data[i][0])])
        data.on_epoch_end()
    return orders


def test_shuffling_is_seeded_and_changes_every_epoch(images: np.ndarray) -> None:
    labels = np.zeros(10, dtype=int)
    first = epoch_orders(ImageBatches(images, labels, batch_size=3, shuffle=True, seed=7), 3)
    again = epoch_orders(ImageBatches(images, labels, batch_size=3, shuffle=True, seed=7), 3)
    other = epoch_orders(ImageBatches(images, labels, batch_size=3, shuffle=True, seed=8), 3)
    assert first == again
    assert first != other
    assert first[0] != first[1]
    assert all(sorted(order) == list(range(10)) for order in first)  # a permutation each epoch


def test_no_shuffle_keeps_order_across_epochs(images: np.ndarray) -> None:
    orders = epoch_orders(ImageBatches(images, np.zeros(10, dtype=int), batch_size=4), 2)
    assert orders == [list(range(10))] * 2


def test_resize_happens_once_up_front(images: np.ndarray) -> None:
    data = ImageBatches(
        images, np.zeros(10, dtype=int), rows=np.array([9, 3]), batch_size=2, image_size=24
    )
    assert data.images.shape == (2, 24, 24)  # only the selected rows, already resized
    x, _ = data[0]
    assert x.shape == (2, 24, 24, 1)
    assert rows_of(x) == [9, 3]  # a constant image stays constant


def test_resize_images_matches_pillow_on_a_ramp() -> None:
    ramp = np.tile(np.linspace(0, 255, 8).astype(np.uint8), (8, 1))[np.newaxis]
    small = resize_images(ramp, 4)
    assert small.shape == (1, 4, 4) and small.dtype == np.uint8
    assert np.all(np.diff(small[0, 0].astype(int)) > 0)  # still increasing left to right
    assert resize_images(ramp, 8) is ramp  # same side: no copy


def test_memmapped_cache_works(tiny_dataset) -> None:
    dataset = load_dataset(tiny_dataset)
    assert isinstance(dataset.images, np.memmap)
    data = ImageBatches(
        dataset.images, dataset.labels_as_int(), rows=np.array([5, 1, 20]), batch_size=2
    )
    x, y = data[0]
    np.testing.assert_array_equal(x[..., 0], dataset.images[[5, 1]].astype(np.float32))
    assert y.tolist() == dataset.labels_as_int()[[5, 1]].tolist()


def test_bad_arguments_are_rejected(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        ImageBatches(images, batch_size=0)
    with pytest.raises(ValueError, match="labels"):
        ImageBatches(images, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="shape"):
        ImageBatches(images[0])


def test_in_memory_copies_the_selected_rows_once(tiny_dataset) -> None:
    dataset = load_dataset(tiny_dataset)
    rows = np.array([5, 1, 20])
    data = ImageBatches(
        dataset.images, dataset.labels_as_int(), rows=rows, batch_size=2, in_memory=True
    )
    assert not isinstance(data.images, np.memmap) and data.images.shape == (
        3,
        *dataset.images.shape[1:],
    )
    x, y = data[0]
    np.testing.assert_array_equal(x[..., 0], dataset.images[[5, 1]].astype(np.float32))
    assert y.tolist() == dataset.labels_as_int()[[5, 1]].tolist()


def test_drop_remainder_serves_only_full_batches(images: np.ndarray) -> None:
    data = ImageBatches(
        images, np.zeros(10, dtype=int), batch_size=4, shuffle=True, seed=3, drop_remainder=True
    )
    assert len(data) == 2 and data.n_served == 8
    orders = epoch_orders(data, 4)
    assert all(len(order) == 8 and len(set(order)) == 8 for order in orders)
    assert len({tuple(sorted(order)) for order in orders}) > 1  # other images left out each epoch
    small = ImageBatches(
        images, np.zeros(10, dtype=int), rows=np.arange(3), batch_size=4, drop_remainder=True
    )
    assert len(small) == 1 and small[0][0].shape[0] == 3  # fewer images than a batch: keep them


def test_pad_to_batch_masks_the_padding(images: np.ndarray) -> None:
    labels = np.arange(10) % 3
    data = ImageBatches(images, labels, batch_size=4, pad_to_batch=True)
    assert len(data) == 3 and data.n_served == 12 and data.n_images == 10
    x, y, w = data[2]
    assert x.shape == (4, 16, 16, 1) and rows_of(x) == [8, 9, 0, 0]
    assert y.tolist() == [2, 0, 0, 0] and w.tolist() == [1.0, 1.0, 0.0, 0.0]
    x0, _, w0 = data[0]
    assert rows_of(x0) == [0, 1, 2, 3] and w0.tolist() == [1.0] * 4
    unlabelled = ImageBatches(images, batch_size=4, pad_to_batch=True)[2]
    assert unlabelled.shape == (4, 16, 16, 1)
    with pytest.raises(ValueError, match="exclude each other"):
        ImageBatches(images, batch_size=4, pad_to_batch=True, drop_remainder=True)
