"""Generation: the recurrent (constant-state) path reproduces the parallel forward exactly."""

from __future__ import annotations

import pytest
import torch

from cald_framework.conversion import convert
from cald_framework.errors import CaldError
from cald_framework.generation import RecurrentDecoder, Sampling, generate
from cald_framework.plugin_manager import load_registries

#: mixer -> options that fit the tiny models (width 16)
MIXERS = {
    "mamba": {},
    "mamba2": {"d_state": 8, "headdim": 8, "chunk_size": 4},
}
CASES = [(case, mixer) for case in ("gpt-neox", "llama") for mixer in MIXERS]


@pytest.fixture
def make_student(make_teacher):
    """``make_student(case, mixer)``: a float64 converted causal student in eval mode."""
    registries = load_registries()

    def make(case: str, mixer: str):
        student, _ = convert(make_teacher(case), registries.mixers.get(mixer), MIXERS[mixer], 40)
        return student.double().eval()

    return make


def _prompts(batch: int = 3, length: int = 5) -> torch.Tensor:
    return torch.randint(3, 60, (batch, length), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize(("case", "mixer"), CASES)
def test_recurrent_logits_equal_the_parallel_forward_at_every_position(case, mixer, make_student):
    student = make_student(case, mixer)
    tokens = _prompts(length=10)
    with torch.inference_mode():
        parallel = student(input_ids=tokens).logits
        with RecurrentDecoder(student, tokens.shape[0]) as decoder:
            stepped = torch.stack([decoder.feed(tokens[:, t]) for t in range(10)], dim=1)
    torch.testing.assert_close(stepped, parallel, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("case", "mixer"), CASES)
def test_greedy_recurrent_generation_gives_the_tokens_of_greedy_parallel_decoding(
    case, mixer, make_student
):
    student = make_student(case, mixer)
    prompts = _prompts()
    recurrent = generate(student, prompts, 10)
    parallel = generate(student, prompts, 10, recurrent=False)
    assert recurrent.shape == (3, 15)
    assert torch.equal(recurrent[:, :5], prompts)
    assert torch.equal(recurrent, parallel)
    # the tiny random model does not just repeat one token: the comparison means something
    assert len(set(recurrent[:, 5:].flatten().tolist())) > 3


@pytest.mark.parametrize("case", ["gpt-neox", "llama"])
def test_seeded_sampling_gives_the_same_tokens_on_both_paths(case, make_student):
    student = make_student(case, "mamba")
    sampling = Sampling(temperature=1.5, top_k=20, top_p=0.9, seed=11)
    recurrent = generate(student, _prompts(), 8, sampling=sampling)
    parallel = generate(student, _prompts(), 8, sampling=sampling, recurrent=False)
    assert torch.equal(recurrent, parallel)
    assert not torch.equal(recurrent, generate(student, _prompts(), 8))


def test_step_mode_is_left_after_generation(make_student):
    student = make_student("gpt-neox", "mamba")
    prompts = _prompts()
    before = student(input_ids=prompts).logits
    generate(student, prompts, 3)
    torch.testing.assert_close(student(input_ids=prompts).logits, before, rtol=0, atol=0)
    assert all(
        slot.module.recurrent_state is None
        for slot in student.family.attention_slots(student.backbone)
    )


def test_finished_sequences_are_filled_with_eos_and_generation_stops(make_student):
    student = make_student("llama", "mamba")
    prompts = _prompts()
    free = generate(student, prompts, 10)
    eos = int(free[0, 6])  # the second token sequence 0 generates
    stopped = generate(student, prompts, 10, eos_token_id=eos)
    for row, sequence in zip(free, stopped):
        generated = row[5:].tolist()
        first = generated.index(eos) if eos in generated else None
        if first is not None:
            assert sequence[5 : 6 + first].tolist() == generated[: first + 1]
            assert set(sequence[6 + first :].tolist()) <= {eos}
    assert stopped.shape[1] <= free.shape[1]


def test_top_k_one_is_greedy(make_student):
    student = make_student("gpt-neox", "mamba")
    sampled = generate(student, _prompts(), 8, sampling=Sampling(temperature=1.0, top_k=1, seed=0))
    assert torch.equal(sampled, generate(student, _prompts(), 8))


def test_teachers_generate_in_parallel_mode_only(make_teacher):
    teacher = make_teacher("gpt-neox")
    assert generate(teacher, _prompts(), 4, recurrent=False).shape == (3, 9)
    with pytest.raises(CaldError, match="recurrent decoding needs a converted student; this "
                       "'gpt-neox' model still has attention"):
        generate(teacher, _prompts(), 4)


def test_bad_inputs_are_refused_with_one_line(make_teacher, make_student):
    with pytest.raises(CaldError, match="generation needs a causal language model; this 'bert' "
                       "model has a 'classification' head"):
        generate(make_teacher("bert"), _prompts(), 2, recurrent=False)
    student = make_student("gpt-neox", "mamba")
    with pytest.raises(CaldError, match=r"\[batch, length >= 1\] LongTensor .* shape \(5,\)"):
        generate(student, _prompts()[0], 2)
    with pytest.raises(CaldError, match="max_new_tokens must be >= 0, got -1"):
        generate(student, _prompts(), -1)
    with pytest.raises(CaldError, match=r"feed takes one token per sequence, shape \(3,\); got \(3, 1\)"):
        with RecurrentDecoder(student, 3) as decoder:
            decoder.feed(_prompts()[:, :1])
    with pytest.raises(CaldError, match="sampling top_p must be in"):
        Sampling(temperature=1.0, top_p=0.0)
