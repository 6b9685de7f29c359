"""The DeepSpeed ZeRO configuration built from ``[training]``, judged by DeepSpeed's own model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework.engine.layouts import make_accelerator
from cald_framework.engine.zero_config import (
    check_deepspeed_config,
    deepspeed_config,
    select_deepspeed_accelerator,
    with_batch_size,
)
from cald_framework.errors import CaldError
from cald_framework.spec.sections import TrainingSection

DeepSpeedConfig = pytest.importorskip("deepspeed.runtime.config").DeepSpeedConfig


def _training(**distributed: Any) -> TrainingSection:
    return TrainingSection.model_validate(
        {"batch_size": 4, "grad_accum": 2, "max_grad_norm": 0.5, "distributed": {"strategy": "deepspeed", **distributed}}
    )


def test_zero_2_is_built_from_the_spec_and_accepted_by_deepspeed() -> None:
    config = deepspeed_config(_training(zero_stage=2))
    assert config == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "gradient_clipping": 0.5,
        "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True},
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
    }
    parsed = DeepSpeedConfig(config)
    assert (parsed.zero_optimization_stage, parsed.train_batch_size, parsed.gradient_clipping) == (2, 8, 0.5)
    assert parsed.zero_config.offload_optimizer is None and parsed.zero_config.offload_param is None
    assert deepspeed_config(_training()) == config  # stage 2 unless the spec says 3


def test_zero_3_with_offload_keeps_parameters_and_optimizer_on_the_host() -> None:
    parsed = DeepSpeedConfig(deepspeed_config(_training(zero_stage=3, offload=True)))
    assert parsed.zero_optimization_stage == 3
    assert parsed.zero_config.offload_param.device == "cpu"
    assert parsed.zero_config.offload_optimizer.device == "cpu"


def test_zero_2_offloads_only_the_optimizer() -> None:
    zero = deepspeed_config(_training(zero_stage=2, offload=True))["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True} and "offload_param" not in zero


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"zero_optimization": {"stage": 7}},
            "training.distributed: DeepSpeed refuses the configuration (DeepSpeedZeroConfig: stage: "
            "Input should be 0, 1, 2, 3 or 3)",
        ),
        (
            {"train_batch_size": 7},
            "training.distributed: DeepSpeed refuses the configuration (Check batch related parameters. "
            "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 7 != 4 * 2 * 1)",
        ),
    ],
)
def test_what_deepspeed_refuses_is_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(CaldError) as refused:
        check_deepspeed_config({**deepspeed_config(_training()), **change})
    assert str(refused.value) == message


def test_fp16_and_other_strategies_are_refused_in_one_line() -> None:
    fp16 = TrainingSection.model_validate({"precision": "fp16", "distributed": {"strategy": "deepspeed"}})
    with pytest.raises(CaldError, match=r"^training.precision = 'fp16' with DeepSpeed: .*use 'bf16' or 'fp32'$"):
        deepspeed_config(fp16)
    with pytest.raises(CaldError, match=r"^training.distributed.strategy is 'ddp', not 'deepspeed'$"):
        deepspeed_config(TrainingSection())


def test_stage_3_gathers_the_whole_weights_for_export() -> None:
    zero = deepspeed_config(_training(zero_stage=3))["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert "stage3_gather_16bit_weights_on_model_save" not in deepspeed_config(_training())["zero_optimization"]


@pytest.mark.parametrize(("processes", "batch"), [(1, 8), (2, 16), (8, 64)])
def test_the_global_batch_is_micro_batch_times_accumulation_times_processes(processes: int, batch: int) -> None:
    config = with_batch_size(deepspeed_config(_training()), processes)
    assert config["train_batch_size"] == batch
    if processes == 1:  # DeepSpeed checks the arithmetic against the process group it runs in
        assert DeepSpeedConfig(config).train_batch_size == batch


def test_clipping_is_deepspeeds_and_off_without_max_grad_norm() -> None:
    unclipped = TrainingSection.model_validate({"max_grad_norm": None, "distributed": {"strategy": "deepspeed"}})
    assert deepspeed_config(unclipped)["gradient_clipping"] == 0.0
    assert DeepSpeedConfig(deepspeed_config(_training())).gradient_clipping == 0.5


def test_deepspeed_is_told_to_use_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    select_deepspeed_accelerator()
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")  # a choice made outside is kept
    select_deepspeed_accelerator()
    assert os.environ["DS_ACCELERATOR"] == "cuda"


def test_a_configuration_deepspeed_refuses_is_named_before_any_accelerator(tmp_path: Path) -> None:
    fp16 = TrainingSection.model_validate({"precision": "fp16", "distributed": {"strategy": "deepspeed"}})
    with pytest.raises(CaldError, match="fp16"):
        make_accelerator(fp16, tmp_path)
