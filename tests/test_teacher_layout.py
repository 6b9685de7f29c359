"""``[training.distributed] teacher``: the spec key, and which layout each process can give.

The sharded runs themselves (two gloo processes) are in ``test_teacher_shard.py``
(``make reliability``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from cald_framework import cli
from cald_framework.engine.layouts import listed_layer_classes
from cald_framework.engine.teacher_layout import TeacherSharding, local_parameter_bytes, teacher_sharding
from cald_framework.errors import CaldError
from cald_framework.spec import load_spec
from cald_framework.testing.toy_plugins import TOY_SPEC

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_frozen_teachers_are_replicated_unless_the_spec_says_otherwise(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(TOY_SPEC)
    assert load_spec("spec.toml").spec.training.distributed.teacher == "replicate"
    sharded = load_spec("spec.toml", ["training.distributed.teacher=shard"])
    assert sharded.spec.training.distributed.teacher == "shard"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            ["training.distributed.teacher=half"],
            "spec.toml (--set training.distributed.teacher): training.distributed.teacher: Input should "
            "be 'replicate', 'shard' or 'offload' (got 'half')",
        ),
        (
            ["training.distributed.strategy=deepspeed", "training.distributed.teacher=offload"],
            "spec.toml:25: training.distributed: teacher = 'offload' shards with FSDP2, not next to DeepSpeed; "
            "use strategy 'ddp' or 'fsdp'",
        ),
    ],
)
def test_a_bad_teacher_layout_is_one_line(
    settings: list[str], expected: str, toy_spec_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (toy_spec_dir / "spec.toml").write_text(TOY_SPEC)
    argv = ["validate", "spec.toml"] + [arg for setting in settings for arg in ("--set", setting)]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


@pytest.mark.parametrize(
    ("layout", "device", "processes", "grouped", "expected"),
    [
        ("replicate", CPU, 2, True, None),
        ("shard", CPU, 2, True, TeacherSharding("cpu", 2, offload=False)),
        ("shard", CUDA, 8, True, TeacherSharding("cuda", 8, offload=False)),
        # one process holds the whole teacher either way
        ("shard", CPU, 1, False, None),
        ("shard", CUDA, 1, True, None),
        # a single GPU process still streams an offloaded teacher from host memory
        ("offload", CUDA, 1, True, TeacherSharding("cuda", 1, offload=True)),
        ("offload", CUDA, 4, True, TeacherSharding("cuda", 4, offload=True)),
    ],
)
def test_each_process_shards_where_sharding_does_something(
    layout: Any, device: torch.device, processes: int, grouped: bool, expected: TeacherSharding | None
) -> None:
    assert teacher_sharding(layout, device, processes, grouped) == expected


@pytest.mark.parametrize(
    ("device", "grouped", "message"),
    [
        (CPU, True, "training.distributed.teacher = 'offload' keeps teacher shards in host memory for "
                    "accelerators, but these processes compute on the CPU: use 'shard'"),
        (CUDA, False, "training.distributed.teacher = 'offload' needs a process group: launch with "
                      "torchrun or accelerate launch (one process is enough)"),
    ],
)
def test_offload_is_refused_where_it_cannot_offload(device: torch.device, grouped: bool, message: str) -> None:
    with pytest.raises(CaldError) as refused:
        teacher_sharding("offload", device, 2, grouped)
    assert str(refused.value) == message


def test_a_teachers_layers_are_the_modules_of_its_module_lists(make_teacher: Callable[..., Any]) -> None:
    teacher = make_teacher("bert")
    assert listed_layer_classes(teacher) == {"BertLayer"}
    assert local_parameter_bytes(teacher) == sum(p.numel() * 8 for p in teacher.parameters())  # float64
