"""Timing two training steps against each other in interleaved pairs.

Each pair runs both steps back to back, and the order is swapped from one pair to the next, so
that a change in the machine's load or a cache effect hits both alike; the benchmarks that
compare two steps report medians over the pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cald_framework.analysis.measure import clock_for, synchronize


def paired_times(
    first: Callable[[], None],
    second: Callable[[], None],
    *,
    pairs: int,
    warmup: int,
    device: torch.device,
    clock: str,
) -> tuple[list[float], list[float]]:
    """Seconds of each call, ``pairs`` interleaved pairs after ``warmup``, alternating who goes first."""
    now = clock_for(clock, device)
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(warmup + pairs):
        order = [(0, first), (1, second)]
        for slot, call in order if index % 2 == 0 else order[::-1]:
            synchronize(device)
            start = now()
            call()
            synchronize(device)
            if index >= warmup:
                times[slot].append(now() - start)
    return times
