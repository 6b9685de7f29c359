"""On an NVIDIA GPU: the mixers, the fused kernels and bf16 training agree with the CPU paths.

Marked ``cuda`` and skipped without CUDA; ``scripts/gpu_check.sh`` runs them (``pytest -m
cuda``) on a machine with a GPU. The mixers' own tests pin their CPU outputs to step-by-step
references, so agreeing with the CPU here ties the GPU to those references too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from cald_mixers import kernels, mamba, mamba2
from cald_mixers.bimamba2 import BiMamba2Mixer, BiMamba2Options
from cald_mixers.linformer import LinformerMixer, LinformerOptions
from cald_mixers.mamba import MambaMixer, MambaOptions
from cald_testing.mixers import context, padded_batch, small_mamba, small_mamba2

from cald_framework.engine.precision import Precision

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
]

CUDA = torch.device("cuda")


def _bimamba2() -> nn.Module:
    torch.manual_seed(0)
    options = BiMamba2Options(d_state=4, headdim=4, ngroups=2, chunk_size=4, d_conv=3)
    return BiMamba2Mixer(options, context(8, 2)).double()


def _linformer() -> nn.Module:
    torch.manual_seed(0)
    return LinformerMixer(LinformerOptions(k=4), context(8, 2, max_length=16)).double()


MIXERS: dict[str, Callable[[], nn.Module]] = {
    "mamba": small_mamba,
    "mamba2": small_mamba2,
    "bimamba2": _bimamba2,
    "linformer": _linformer,
}


@pytest.fixture
def pure_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mixers' PyTorch path on CUDA too (the fused kernels are compared separately)."""
    for module in (mamba, mamba2):
        monkeypatch.setattr(module, "cuda_kernels", lambda states: None)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixers_on_cuda_match_their_cpu_outputs(name: str, pure_pytorch: None) -> None:
    mixer = MIXERS[name]().eval()
    states, mask = padded_batch([12, 7], 8)
    with torch.no_grad():
        expected = mixer(states, mask)
        actual = mixer.to(CUDA)(states.to(CUDA), mask.to(CUDA)).cpu()
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_the_mamba_ssm_kernels_match_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels._load() is None:
        pytest.skip("mamba-ssm and causal-conv1d are not installed")
    torch.manual_seed(0)
    mixer = MambaMixer(MambaOptions(d_state=16, expand=2, d_conv=4), context(64, 4, causal=True)).to(CUDA).eval()
    states = torch.randn(2, 64, 64, device=CUDA)
    with torch.no_grad():
        fused = mixer(states)
        monkeypatch.setattr(mamba, "cuda_kernels", lambda states: None)
        pure = mixer(states)
    torch.testing.assert_close(fused, pure, rtol=1e-3, atol=1e-3)


def _train(make_teacher: Callable[..., Any], precision: str, steps: int = 3) -> list[float]:
    model = make_teacher("bert").float().train().to(CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaled = Precision(precision, CUDA)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (4, 12), generator=generator).to(CUDA)
    labels = torch.tensor([0, 1, 2, 1], device=CUDA)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with scaled.autocast():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            loss = nn.functional.cross_entropy(logits.float(), labels)
        scaled.backward(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        scaled.step(optimizer)
        losses.append(loss.item())
    return losses


def test_bf16_training_steps_follow_fp32(make_teacher: Callable[..., Any]) -> None:
    bf16, fp32 = _train(make_teacher, "bf16"), _train(make_teacher, "fp32")
    assert bf16[-1] < bf16[0]
    assert bf16 == pytest.approx(fp32, abs=5e-2)
