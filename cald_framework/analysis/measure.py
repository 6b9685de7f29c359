"""Timing and peak memory of one call, on CPU or CUDA, and synthetic inputs of a given length.

Peak memory is what the call allocates on top of what was already allocated (weights and
inputs excluded). On CUDA that is ``torch.cuda.max_memory_allocated``. On the CPU, process
RSS would mostly measure the C allocator's caching, so the call runs once under
``torch.profiler`` with memory profiling and the peak is read from the running total of
tensor allocations it records.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import CaldError
from ..modeling import CaldModel

#: sample rate of the audio inputs that speech sources take
SAMPLE_RATE = 16_000


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: how durations are read: ``wall`` is elapsed time (synchronised on CUDA); ``cpu`` is the CPU
#: time of the calling thread, which other jobs on a busy machine barely disturb. It is the whole
#: cost of a call only when torch computes on that thread alone (``torch.set_num_threads(1)``).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def clock_for(name: str, device: torch.device) -> Callable[[], float]:
    """The clock called ``name``; CPU time says nothing about work done on a GPU."""
    if name == "cpu" and device.type == "cuda":
        raise CaldError("the cpu clock cannot time work on a CUDA device; use the wall clock")
    if name not in CLOCKS:
        raise CaldError(f"unknown clock {name!r}; expected one of {sorted(CLOCKS)}")
    return CLOCKS[name]


def median_seconds(
    call: Callable[[], Any], repeats: int, device: torch.device, clock: str = "wall"
) -> float:
    """The median duration of ``repeats`` calls by ``clock`` (the caller warms up first)."""
    now = clock_for(clock, device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = now()
        call()
        synchronize(device)
        times.append(now() - start)
    return statistics.median(times)


def _allocation_events(nodes: list[Any]) -> Iterator[Any]:
    from torch._C._profiler import _EventType

    for node in nodes:
        if node.tag == _EventType.Allocation:
            yield node
        yield from _allocation_events(node.children)


def _cpu_peak_bytes(call: Callable[[], Any]) -> int:
    # kineto prints two log lines to stderr per profile at its default level, unless told not to
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        call()
    events = sorted(
        _allocation_events(profiler.profiler.kineto_results.experimental_event_tree()),
        key=lambda node: node.start_time_ns,
    )
    live = peak = 0
    for event in events:
        if event.extra_fields.device.type == "cpu":
            live += event.extra_fields.alloc_size
            peak = max(peak, live)
    return peak


def peak_bytes(call: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated by ``call`` at its peak, beyond what was allocated before it."""
    if device.type != "cuda":
        return _cpu_peak_bytes(call)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def positions(model: CaldModel, inputs: dict[str, torch.Tensor]) -> int:
    """How many hidden positions ``inputs`` give (tokens for text, frames for audio)."""
    return int(model.family.hidden_mask(model.backbone, inputs).shape[1])


def synthetic_inputs(
    model: CaldModel, length: float, batch: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random inputs of ``length`` tokens (text) or seconds of 16 kHz audio, without padding."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    if model.family.modality == "audio":
        samples = round(length * SAMPLE_RATE)
        values = torch.randn(batch, samples, generator=generator)
        inputs = {"input_values": values.to(next(model.parameters()).dtype)}
        mask = torch.ones(batch, samples, dtype=torch.long)
    else:
        vocabulary = int(model.config.source_config.get("vocab_size") or 1000)
        ids = torch.randint(min(5, vocabulary - 1), vocabulary, (batch, int(length)), generator=generator)
        inputs = {"input_ids": ids}
        mask = torch.ones_like(ids)
    return {name: value.to(device) for name, value in {**inputs, "attention_mask": mask}.items()}
