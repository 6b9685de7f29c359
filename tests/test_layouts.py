"""The engine's switch of accelerate's layout holds for the rest of the run."""

from __future__ import annotations

from accelerate import Accelerator, DistributedType
from accelerate.state import AcceleratorState

from cald_framework.engine.layouts import _set_layout


def test_a_switch_to_fsdp_survives_the_states_accelerate_builds_later() -> None:
    """accelerate builds ``AcceleratorState()`` objects inside ``prepare``; each copies the
    process state's layout over its own, which once reverted FSDP to MULTI_CPU mid-run."""
    accelerator = Accelerator(cpu=True)
    original = accelerator.distributed_type
    try:
        _set_layout(accelerator.state, DistributedType.FSDP, None)
        assert AcceleratorState().distributed_type == DistributedType.FSDP
        assert accelerator.distributed_type == DistributedType.FSDP
    finally:
        _set_layout(accelerator.state, original, None)
    assert AcceleratorState().distributed_type == original
