"""Memory options: weight dtypes, gradient checkpointing and the optimizer choice."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from cald_framework.conversion import convert
from cald_framework.engine.activations import checkpoint_layers, enable_gradient_checkpointing
from cald_framework.engine.optim import build_optimizer
from cald_framework.errors import CaldError
from cald_framework.spec.sections import StudentSection
from cald_framework.testing.engine import TinyModel, training
from tests.test_param_groups import run_converted


def _student(make_teacher: Any, mixer_plugins: Any, case: str = "gpt-neox") -> Any:
    return convert(make_teacher(case), mixer_plugins["cumulative-mean"], {}, max_length=40)[0].float()


def test_bf16_student_trains_and_keeps_its_state_in_bf16(
    make_teacher: Any, mixer_plugins: Any, tmp_path: Path
) -> None:
    student = convert(make_teacher("bert"), mixer_plugins["cumulative-mean"], {}, max_length=40)[0]
    student.to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    run_converted(student, tmp_path, {"optimizer": "adamw"})
    assert all(p.dtype == torch.bfloat16 for p in student.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in student.named_parameters())
    assert all(torch.isfinite(p).all() for p in student.parameters())


@pytest.mark.parametrize("case", ["gpt-neox", "wav2vec2"])
def test_bf16_weights_give_the_fp32_outputs_within_bf16_rounding(
    make_teacher: Any, make_inputs: Any, mixer_plugins: Any, case: str
) -> None:
    mixer = "cumulative-mean" if case == "gpt-neox" else "bidirectional-mean"
    student = convert(make_teacher(case), mixer_plugins[mixer], {}, max_length=40)[0].float()
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in make_inputs(case).items()}
    expected = student(**inputs).logits
    half = copy.deepcopy(student).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    got = half(**inputs).logits  # float32 audio is cast to the weights' dtype
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)


def test_a_student_in_fp16_is_refused_in_the_spec_and_at_build() -> None:
    with pytest.raises(ValidationError, match="fp16 weights cannot be trained"):
        StudentSection(mixer="mamba", dtype="fp16")
    with pytest.raises(CaldError, match="fp16 weights cannot be trained"):
        build_optimizer(TinyModel().half(), training())


def _counted(layer: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _loss_and_grads(student: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    student.zero_grad()
    output = student(**inputs)
    loss = output.logits.pow(2).mean() + output.hidden_states[1].pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("wrap", ["library", "layers"])
def test_gradient_checkpointing_recomputes_layers_and_keeps_loss_and_gradients(
    make_teacher: Any, make_inputs: Any, mixer_plugins: Any, wrap: str
) -> None:
    student = _student(make_teacher, mixer_plugins).train()
    inputs = make_inputs("gpt-neox")
    plain_loss, plain_grads = _loss_and_grads(student, inputs)
    checkpointed = copy.deepcopy(student)
    if wrap == "library":
        enable_gradient_checkpointing(checkpointed)
    else:
        checkpoint_layers(checkpointed.family.layers(checkpointed.backbone))
    mixer = checkpointed.family.attention_slots(checkpointed.backbone)[0].module
    calls = _counted(mixer)
    loss, grads = _loss_and_grads(checkpointed, inputs)
    assert len(calls) == 2  # the forward, and its recomputation in the backward
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], msg=name)
    with torch.no_grad():
        checkpointed(**inputs)
    assert len(calls) == 3  # nothing to recompute without gradients


def test_gradient_checkpointing_needs_layers() -> None:
    with pytest.raises(CaldError, match="TinyModel has no layers to checkpoint"):
        enable_gradient_checkpointing(TinyModel())


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    for _ in range(2):
        model(input_ids=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 3)).logits.sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def test_fused_adamw_takes_the_steps_of_adamw() -> None:
    plain, fused = TinyModel(dropout=0.0), TinyModel(dropout=0.0)
    _steps(plain, build_optimizer(plain, training(lr=1e-2)))
    _steps(fused, build_optimizer(fused, training(lr=1e-2, optimizer="adamw_fused")))
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[name], value, msg=name)


def test_adafactor_keeps_less_state_than_adamw() -> None:
    def state_size(optimizer: torch.optim.Optimizer) -> int:
        return sum(v.numel() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))

    sizes = {}
    for name in ("adamw", "adafactor"):
        model = TinyModel()
        optimizer = build_optimizer(model, training(optimizer=name))
        _steps(model, optimizer)
        sizes[name] = state_size(optimizer)
    assert sizes["adafactor"] < sizes["adamw"] / 2


def test_8bit_adamw_needs_bitsandbytes_and_a_gpu() -> None:
    with pytest.raises(CaldError, match=r"^training.optimizer = 'adamw_8bit' needs bitsandbytes with a GPU$"):
        build_optimizer(TinyModel(), training(optimizer="adamw_8bit"))
