"""How a run spreads its trained model over processes: the Accelerator and its sharding plugin.

``[training.distributed] strategy`` picks the layout: ``ddp`` (the default) replicates the model,
``fsdp`` shards parameters, gradients and optimizer state with FSDP2 (``fully_shard``) through
accelerate's plugin. Accelerate offers FSDP on accelerators only; torch's FSDP2 also runs on
CPU processes over gloo, so there the engine switches accelerate's state to FSDP itself and the
same code path trains on CPU and GPU. ``deepspeed`` builds and validates its ZeRO configuration
(:mod:`.zero_config`) but training under it is refused: its engine steps inside ``backward``,
which the non-finite skip and the checkpoints do not drive yet.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from accelerate import Accelerator, DistributedType, PartialState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
    ProjectConfiguration,
)

from ..errors import CaldError
from ..layout import TRACKERS_DIR
from ..spec.sections import DistributedSection, TrainingSection
from .logbook import check_trackers
from .zero_config import deepspeed_config

#: accelerate layouts the loop does not drive (FSDP 1 is refused by :func:`check_layout`)
_UNSUPPORTED = {
    DistributedType.DEEPSPEED: "DeepSpeed",
    DistributedType.MEGATRON_LM: "Megatron-LM",
    DistributedType.XLA: "XLA",
}
#: process groups that FSDP2 can shard over
_SHARDABLE = (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def check_distributed_type(kind: DistributedType, fsdp_version: int | None = 2) -> None:
    """Refuse an accelerate layout the loop cannot train under, rather than train wrongly."""
    if kind in _UNSUPPORTED:
        raise CaldError(
            f"the accelerate configuration asks for {_UNSUPPORTED[kind]}, which the trainer does not "
            "support: use data-parallel processes or FSDP2 (see docs/distributed.md)"
        )
    if kind == DistributedType.FSDP and fsdp_version != 2:
        raise CaldError(
            f"the accelerate configuration asks for FSDP version {fsdp_version}; the trainer "
            "drives FSDP2 only: set fsdp_version: 2 (see docs/distributed.md)"
        )


def fsdp_plugin(distributed: DistributedSection) -> FullyShardedDataParallelPlugin:
    """FSDP2 over the student's layers (see :func:`shard_layers_of`) and the rest as one unit."""
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        cpu_offload=distributed.offload,
        state_dict_type="SHARDED_STATE_DICT",
    )


def _process_group_type(partial: PartialState) -> DistributedType:
    """The layout accelerate derived from the launch, before this module switched it to FSDP."""
    if partial.distributed_type != DistributedType.FSDP:
        return partial.distributed_type
    return DistributedType.MULTI_GPU if partial.device.type == "cuda" else DistributedType.MULTI_CPU


def _set_layout(accelerator: Accelerator, kind: DistributedType, plugin: FullyShardedDataParallelPlugin | None) -> None:
    """Switch accelerate's state to ``kind``, in both of its shared states as accelerate does:
    every later ``AcceleratorState()`` (accelerate builds some inside ``prepare``) copies the
    process state's layout over its own, which would silently undo a switch of one of them."""
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = kind
    PartialState().distributed_type = kind


def _apply_strategy(accelerator: Accelerator, distributed: DistributedSection) -> None:
    """Switch accelerate to the spec's layout where the processes can shard."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return  # accelerate's launch configuration chose FSDP and its plugin
    base = _process_group_type(PartialState())
    if distributed.strategy == "fsdp" and base in _SHARDABLE:
        _set_layout(accelerator, DistributedType.FSDP, fsdp_plugin(distributed))
    elif accelerator.distributed_type == DistributedType.FSDP:
        # an earlier run in this process (the teacher's fine-tuning) sharded; this one does not
        _set_layout(accelerator, base, None)


def make_accelerator(training: TrainingSection, output_dir: Path) -> Accelerator:
    """The run's Accelerator, in the layout of ``[training.distributed]`` (or accelerate's config)."""
    check_trackers(list(training.trackers))
    if training.distributed.strategy == "deepspeed":
        deepspeed_config(training)  # a configuration DeepSpeed refuses is named first
        raise CaldError(
            "training.distributed.strategy = 'deepspeed': the configuration is built and checked, "
            "but the trainer does not train under DeepSpeed yet; use 'fsdp' (see docs/distributed.md)"
        )
    accelerator = Accelerator(
        # under torchrun on a CPU-only machine, ``cpu=True`` is what makes the processes a group
        cpu=not torch.cuda.is_available(),
        log_with=list(training.trackers) or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / TRACKERS_DIR)
        ),
        # the engine steps the LR schedule once per optimizer step, skipped or not
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=True),
            # evaluation runs on the main process while the others wait
            InitProcessGroupKwargs(timeout=timedelta(hours=2)),
        ],
    )
    _apply_strategy(accelerator, training.distributed)
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    check_distributed_type(accelerator.distributed_type, plugin.fsdp_version if plugin else None)
    return accelerator


def shard_layers_of(accelerator: Accelerator, model: nn.Module) -> None:
    """Give each layer of ``model`` a shard group of its own: the modules held in a
    ``ModuleList`` (a transformer's blocks, whatever the family)."""
    if is_sharded(accelerator):
        accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap = sorted(listed_layer_classes(model))


def listed_layer_classes(model: nn.Module) -> set[str]:
    """The class names of the modules ``model`` holds in ``ModuleList``s: its layers, whatever
    the family, which FSDP2 makes one shard group each."""
    return {type(layer).__name__ for module in model.modules() if isinstance(module, nn.ModuleList) for layer in module}


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether the prepared student holds only this process's shard of each parameter."""
    return accelerator.distributed_type == DistributedType.FSDP
