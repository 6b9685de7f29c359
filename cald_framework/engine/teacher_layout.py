"""Where a frozen teacher's parameters live: whole on every process, or sharded with FSDP2.

``[training.distributed] teacher`` picks it for the teachers a guidance mode only runs (the
target and the waypoints; a teacher the mode trains stays whole, see
:mod:`.teacher_updates`). ``replicate`` keeps a whole copy on each process. ``shard`` hands
each layer (the modules held in the teacher's ``ModuleList``s, as for the student) and then the
rest to torch's ``fully_shard`` over all the processes, resharded after each forward: a process
holds ``1/W`` of the teacher and gathers one layer at a time while the teacher runs. It is plain
torch over the run's process group, so it does not depend on how the student is laid out.
``offload`` also keeps the shards in (pinned) host memory between forwards, for accelerators.

Only parameters are sharded: every layer computes with its whole weights, so the teacher's
outputs and the hidden states the extractors record are those of the whole model. Nothing here
builds an optimizer; the teacher is frozen before it is sharded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ..errors import CaldError
from ..spec.sections import TeacherLayout
from .layouts import listed_layer_classes


@dataclass(frozen=True)
class TeacherSharding:
    """How ``fully_shard`` spreads a frozen teacher: over ``processes`` processes computing on
    ``device_type``, with the shards in host memory when ``offload``."""

    device_type: str
    processes: int
    offload: bool


def teacher_sharding(
    layout: TeacherLayout, device: torch.device, processes: int, grouped: bool
) -> TeacherSharding | None:
    """The sharding of frozen teachers on a process computing on ``device``, one of
    ``processes`` (``grouped``: in a torch process group); ``None`` keeps them whole.

    ``shard`` on one process is the whole teacher, so it keeps it whole. ``offload`` is refused
    where it cannot do what it says: on CPU processes the parameters are in host memory already
    (and torch's offload pins memory, which needs an accelerator), and without a process group
    FSDP2 cannot run.
    """
    if layout == "replicate":
        return None
    if layout == "offload" and device.type == "cpu":
        raise CaldError(
            "training.distributed.teacher = 'offload' keeps teacher shards in host memory for "
            "accelerators, but these processes compute on the CPU: use 'shard'"
        )
    if layout == "offload" and not grouped:
        raise CaldError(
            "training.distributed.teacher = 'offload' needs a process group: launch with torchrun "
            "or accelerate launch (one process is enough)"
        )
    if layout == "shard" and processes < 2:
        return None
    return TeacherSharding(device.type, processes, offload=layout == "offload")


def shard_frozen_teacher(model: nn.Module, sharding: TeacherSharding) -> nn.Module:
    """``model`` (frozen) with each listed layer, then the rest, sharded by FSDP2 in place;
    the shards land on the device of the mesh, or stay in host memory when offloaded."""
    mesh = init_device_mesh(sharding.device_type, (sharding.processes,))
    policy = CPUOffloadPolicy() if sharding.offload else OffloadPolicy()
    layer_classes = listed_layer_classes(model)
    # innermost first: fully_shard takes the parameters no sharded submodule has taken
    layers = [
        module
        for module in reversed(list(model.modules()))
        if module is not model and type(module).__name__ in layer_classes
    ]
    for module in [*layers, model]:
        fully_shard(module, mesh=mesh, reshard_after_forward=True, offload_policy=policy)
    return model


def local_parameter_bytes(model: nn.Module) -> int:
    """Bytes of the teacher's parameters this process holds (its shards, when sharded)."""
    total = 0
    for parameter in model.parameters():
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        total += local.numel() * local.element_size()
    return total


def _sharding_here(layout: TeacherLayout, accelerator: Accelerator) -> TeacherSharding | None:
    grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
    return teacher_sharding(layout, accelerator.device, accelerator.num_processes, grouped)


def check_teacher_layout(layout: TeacherLayout, accelerator: Accelerator) -> None:
    """Refuse a layout these processes cannot give, before anything is trained."""
    _sharding_here(layout, accelerator)


def place_frozen_teacher(model: nn.Module, accelerator: Accelerator, layout: TeacherLayout) -> nn.Module:
    """A frozen ``model`` on this process as ``layout`` says: whole on the device, or sharded."""
    sharding = _sharding_here(layout, accelerator)
    if sharding is None:
        return model.to(accelerator.device)
    return shard_frozen_teacher(model, sharding)
