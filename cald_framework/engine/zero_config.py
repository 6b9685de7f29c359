"""The DeepSpeed ZeRO configuration that ``[training]`` asks for, judged by DeepSpeed itself.

Batch sizes are per process as everywhere in the engine; the precision is the engine's
autocast, so DeepSpeed keeps fp32 weights and scales no loss. Whatever DeepSpeed's config
model refuses comes back as one :class:`CaldError` line naming the offending keys.

The engine scales each micro-batch's loss itself and steps the LR schedule itself, so the
configuration has no scheduler and DeepSpeed is told not to divide by ``gradient_accumulation_steps``
(see :mod:`.zero_step`); ``gradient_accumulation_steps`` is there for DeepSpeed's batch arithmetic.
At stage 3 the whole weights are gathered on the main process for evaluation and export.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from pydantic import ValidationError

from ..errors import CaldError
from ..spec.sections import TrainingSection

#: where the host keeps what ZeRO offloads
_HOST = {"device": "cpu", "pin_memory": True}


def deepspeed_config(training: TrainingSection) -> dict[str, Any]:
    """The DeepSpeed configuration of ``[training]`` (``strategy = 'deepspeed'``), validated."""
    distributed = training.distributed
    if distributed.strategy != "deepspeed":
        raise CaldError(f"training.distributed.strategy is {distributed.strategy!r}, not 'deepspeed'")
    if training.precision == "fp16":
        raise CaldError(
            "training.precision = 'fp16' with DeepSpeed: its loss scaler and the engine's would "
            "both scale; use 'bf16' or 'fp32'"
        )
    stage = distributed.zero_stage or 2
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # whatever the weights' dtype
    if distributed.offload:
        zero["offload_optimizer"] = dict(_HOST)
        if stage == 3:
            zero["offload_param"] = dict(_HOST)
    config = {
        "train_micro_batch_size_per_gpu": training.batch_size,
        "gradient_accumulation_steps": training.grad_accum,
        "gradient_clipping": training.max_grad_norm or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
    }
    check_deepspeed_config(config)
    return config


def with_batch_size(config: dict[str, Any], processes: int) -> dict[str, Any]:
    """``config`` with the global ``train_batch_size`` of a run on ``processes`` processes
    (accelerate needs it when no dataloader goes through ``prepare``)."""
    batch = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * processes
    return {**config, "train_batch_size": batch}


def select_deepspeed_accelerator() -> None:
    """Make DeepSpeed run on the CPU when there is no GPU. DeepSpeed picks its accelerator once,
    when it is first imported, from ``DS_ACCELERATOR``: this must run before any import of
    ``deepspeed`` (its CPU accelerator talks over gloo when oneCCL is not installed)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def check_deepspeed_config(config: dict[str, Any]) -> None:
    """Have DeepSpeed's own config model (``DeepSpeedConfig``: batch arithmetic, ZeRO and
    precision sections) judge ``config``; :class:`CaldError` in one line when it refuses."""
    select_deepspeed_accelerator()
    try:
        from deepspeed.runtime.config import DeepSpeedConfig
    except ImportError as error:
        raise CaldError("training.distributed.strategy = 'deepspeed' needs the deepspeed package") from error
    try:
        DeepSpeedConfig(dict(config))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise CaldError(f"training.distributed: DeepSpeed refuses the configuration ({error.title}: {problems})") from error
    except (ValueError, AssertionError) as error:
        reason = " ".join(str(error).split())
        raise CaldError(f"training.distributed: DeepSpeed refuses the configuration ({reason})") from error
