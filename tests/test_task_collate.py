"""Dynamic padding of the built-in tasks' batches."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from cald_tasks.collate import length_mask, pad_sequences


def test_pad_sequences_pads_to_the_longest_row_with_the_pad_value() -> None:
    batch = pad_sequences([np.array([1, 2, 3]), [4], np.array([5, 6])], pad_value=-1)
    assert batch.tolist() == [[1, 2, 3], [4, -1, -1], [5, 6, -1]]
    assert batch.dtype == torch.int64


def test_pad_sequences_keeps_trailing_dimensions_and_float_dtype() -> None:
    rows = [np.ones((2, 3), dtype=np.float32), np.full((4, 3), 2.0, dtype=np.float32)]
    batch = pad_sequences(rows, pad_value=0.5)
    assert batch.shape == (2, 4, 3) and batch.dtype == torch.float32
    assert torch.equal(batch[0, 2:], torch.full((2, 3), 0.5))
    assert torch.equal(batch[1], torch.full((4, 3), 2.0))


def test_pad_sequences_accepts_read_only_arrays_without_warnings() -> None:
    row = np.arange(3.0)
    row.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pad_sequences([row, row[:1]]).tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]]


def test_length_mask_marks_a_prefix_of_each_row() -> None:
    assert length_mask([2, 0, 3]).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]
