"""The length-grouped batch sampler."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cald_framework.engine.batching import LengthGroupedBatchSampler


def _epoch(sampler: LengthGroupedBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=120),
    batch_size=st.integers(1, 9),
    max_tokens=st.one_of(st.none(), st.integers(1, 200)),
    megabatch_batches=st.integers(1, 4),
    seed=st.integers(0, 5),
)
def test_every_index_once_and_both_caps_hold(
    lengths: list[int], batch_size: int, max_tokens: int | None, megabatch_batches: int, seed: int
) -> None:
    sampler = LengthGroupedBatchSampler(
        lengths, batch_size, max_tokens=max_tokens, seed=seed, megabatch_batches=megabatch_batches
    )
    batches = _epoch(sampler, 3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert len(sampler) == len(batches)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        padded = max(lengths[i] for i in batch) * len(batch)
        if max_tokens is not None and len(batch) > 1:
            assert padded <= max_tokens


def test_a_row_longer_than_max_tokens_gets_a_batch_of_its_own() -> None:
    sampler = LengthGroupedBatchSampler([50, 3, 3, 3], batch_size=4, max_tokens=10, seed=0)
    assert sorted(sorted(batch) for batch in sampler) == [[0], [1, 2, 3]]


def test_batches_group_similar_lengths() -> None:
    lengths = [1, 100] * 20
    batches = list(LengthGroupedBatchSampler(lengths, batch_size=4, seed=1))
    assert all(len({lengths[i] for i in batch}) == 1 for batch in batches)


def test_largest_batch_comes_first() -> None:
    lengths = list(range(1, 41))
    longest = lengths.index(40)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=4, seed=2)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert longest in batches[0]


def test_order_is_fixed_by_seed_and_epoch() -> None:
    lengths = [(7 * i) % 23 + 1 for i in range(200)]

    def make(seed: int) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(lengths, 8, max_tokens=120, seed=seed, megabatch_batches=3)

    assert _epoch(make(0), 1) == _epoch(make(0), 1)
    assert _epoch(make(0), 1) != _epoch(make(0), 2)
    assert _epoch(make(0), 1) != _epoch(make(1), 1)


def test_without_shuffle_the_order_is_the_same_every_epoch() -> None:
    sampler = LengthGroupedBatchSampler(
        [3, 1, 2, 5, 4], batch_size=2, shuffle=False, megabatch_batches=1
    )
    assert _epoch(sampler, 0) == _epoch(sampler, 7) == [[0, 1], [3, 2], [4]]


def test_drop_last_drops_the_short_batch_of_each_megabatch() -> None:
    sampler = LengthGroupedBatchSampler([1] * 10, batch_size=4, drop_last=True, seed=0)
    batches = list(sampler)
    assert [len(batch) for batch in batches] == [4, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"batch_size": 2, "max_tokens": 0}, "max_tokens must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LengthGroupedBatchSampler([1, 2], **kwargs)
