"""How a run spreads its trained model over processes: the Accelerator and its sharding plugin.

``[training.distributed] strategy`` picks the layout: ``ddp`` (the default) replicates the model,
``fsdp`` shards parameters, gradients and optimizer state with FSDP2 (``fully_shard``) through
accelerate's plugin. Accelerate offers FSDP on accelerators only; torch's FSDP2 also runs on
CPU processes over gloo, so there the engine switches accelerate's state to FSDP itself and the
same code path trains on CPU and GPU. ``deepspeed`` hands the student to a DeepSpeed ZeRO-2 or
ZeRO-3 engine through accelerate's plugin, with the configuration of :mod:`.zero_config`; the
engine switches accelerate's state to it the same way (accelerate offers DeepSpeed on
accelerators only, DeepSpeed's CPU accelerator runs it on gloo). An accelerate launch
configuration that asks for DeepSpeed is refused: its configuration is not the spec's.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
from torch import nn
from accelerate import Accelerator, DistributedType, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DeepSpeedPlugin,
    DistributedDataParallelKwargs,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
    ProjectConfiguration,
)

from ..errors import CaldError
from ..layout import TRACKERS_DIR
from ..spec.sections import DistributedSection, TrainingSection
from .logbook import check_trackers
from .zero_config import deepspeed_config, with_batch_size

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


def zero_plugin(training: TrainingSection, processes: int) -> DeepSpeedPlugin:
    """The DeepSpeed plugin of ``[training]`` for ``processes`` processes. Models that
    transformers builds later in the process (teachers, waypoints) are never partitioned:
    ``zero3_init_flag`` is off and the plugin's global configuration is withdrawn once selected."""
    config = with_batch_size(deepspeed_config(training), processes)
    return DeepSpeedPlugin(hf_ds_config=config, zero3_init_flag=False)


def _single_process_group() -> None:
    """DeepSpeed needs a process group, and the launcher's variables that say where this
    process is in it; a run that no launcher started gets a group of its own."""
    if not torch.distributed.is_initialized():
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend, store=torch.distributed.HashStore(), rank=0, world_size=1)


def _set_layout(
    state: AcceleratorState,
    kind: DistributedType,
    plugin: FullyShardedDataParallelPlugin | None,
    zero: DeepSpeedPlugin | None = None,
) -> None:
    """Switch accelerate's state to ``kind``, in both of its shared states as accelerate does:
    every later ``AcceleratorState()`` (accelerate builds some inside ``prepare``) copies the
    process state's layout over its own, which would silently undo a switch of one of them."""
    state.fsdp_plugin = plugin
    state.deepspeed_plugins = zero
    if zero is not None:
        from transformers.integrations import unset_hf_deepspeed_config

        zero.select(_from_accelerator_state=True)
        unset_hf_deepspeed_config()
    state.distributed_type = kind
    PartialState().distributed_type = kind


def _leave_deepspeed() -> None:
    """Go back to the launch's layout when an earlier run in this process (the teacher's
    fine-tuning) trained under DeepSpeed: a new Accelerator would adopt that run's plugin."""
    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.DEEPSPEED:
        _set_layout(AcceleratorState(), _process_group_type(PartialState()), None)


def _apply_strategy(accelerator: Accelerator, distributed: DistributedSection) -> None:
    """Switch accelerate to the spec's layout where the processes can shard."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return  # accelerate's launch configuration chose FSDP and its plugin
    base = _process_group_type(PartialState())
    if distributed.strategy == "fsdp" and base in _SHARDABLE:
        _set_layout(accelerator.state, DistributedType.FSDP, fsdp_plugin(distributed))
    elif accelerator.distributed_type == DistributedType.FSDP:
        # an earlier run in this process (the teacher's fine-tuning) sharded; this one does not
        _set_layout(accelerator.state, base, None)


def _process_group_type(partial: PartialState) -> DistributedType:
    """The layout accelerate derived from the launch, before this module switched it."""
    if partial.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return partial.distributed_type
    return DistributedType.MULTI_GPU if partial.device.type == "cuda" else DistributedType.MULTI_CPU


def make_accelerator(training: TrainingSection, output_dir: Path) -> Accelerator:
    """The run's Accelerator, in the layout of ``[training.distributed]`` (or accelerate's config)."""
    check_trackers(list(training.trackers))
    zero = training.distributed.strategy == "deepspeed"
    if zero:
        deepspeed_config(training)  # a configuration DeepSpeed refuses is named before anything starts
    _leave_deepspeed()
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
    if zero:
        _single_process_group()
        _set_layout(accelerator.state, DistributedType.DEEPSPEED, None, zero_plugin(training, accelerator.num_processes))
        # what ``Accelerator(deepspeed_plugin=...)`` would have set up (see module docstring)
        accelerator.deepspeed_engine_wrapped = None
        accelerator.gradient_accumulation_steps = training.grad_accum
        return accelerator
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
    """Whether the prepared student holds only this process's shard of each parameter (FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def is_zero(accelerator: Accelerator) -> bool:
    """Whether a DeepSpeed ZeRO engine holds the prepared student."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED
