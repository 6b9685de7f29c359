"""``generate()``: the cached path (parallel prefill, recurrent steps, kept-attention keys and
values) gives the tokens of the token-by-token recurrence and of the full-sequence forward."""

from __future__ import annotations

import pytest
import torch
from cald_mixers.conv import CausalConvSiLU

from cald_framework.cache import CaldCache, MixerStateLayer
from cald_framework.contracts import StateStore, advance
from cald_framework.conversion import convert
from cald_framework.errors import CaldError
from cald_framework.plugin_manager import load_registries

#: mixer -> options that fit the tiny models (width 16)
MIXERS = {
    "mamba": {},
    "mamba2": {"d_state": 8, "headdim": 8, "chunk_size": 4},
}
CASES = [(case, mixer) for case in ("gpt-neox", "llama") for mixer in MIXERS]
GREEDY = {"do_sample": False, "pad_token_id": 0}


@pytest.fixture
def make_student(make_teacher):
    """``make_student(case, mixer, keep=())``: a float64 converted causal student, eval mode."""
    registries = load_registries()

    def make(case: str, mixer: str, keep: tuple[int, ...] = ()):
        student, _ = convert(
            make_teacher(case), registries.mixers.get(mixer), MIXERS[mixer], 40,
            keep_attention=list(keep),
        )
        return student.double().eval()

    return make


def _prompts(batch: int = 3, length: int = 5) -> torch.Tensor:
    return torch.randint(3, 60, (batch, length), generator=torch.Generator().manual_seed(7))


def _greedy_by_forward(model, prompts: torch.Tensor, new: int) -> torch.Tensor:
    """The reference: argmax of the full-sequence forward, re-run for every token."""
    sequences = prompts
    with torch.no_grad():
        for _ in range(new):
            token = model(input_ids=sequences).logits[:, -1].argmax(-1)
            sequences = torch.cat([sequences, token[:, None]], dim=1)
    return sequences


class _SteppedOnly(torch.nn.Module):
    """A mixer seen through its recurrent step only (no ``prefill``): generation steps."""

    def __init__(self, mixer: torch.nn.Module):
        super().__init__()
        self.inner = mixer

    def forward(self, hidden_states, padding_mask=None):
        return self.inner(hidden_states, padding_mask)

    def init_state(self, batch_size, device, dtype):
        return self.inner.init_state(batch_size, device, dtype)

    def step(self, hidden_state, state):
        return self.inner.step(hidden_state, state)


def _step_only(student) -> None:
    for slot in student.family.attention_slots(student.backbone):
        if hasattr(slot.module, "mixer"):
            slot.module.mixer = _SteppedOnly(slot.module.mixer)


@pytest.mark.parametrize(("case", "mixer"), CASES)
def test_prefill_then_steps_give_the_logits_of_the_full_forward(case, mixer, make_student):
    student = make_student(case, mixer)
    tokens = _prompts(length=10)
    with torch.no_grad():
        full = student(input_ids=tokens).logits
        cache = CaldCache(student.family, student.backbone)
        prefill = student(input_ids=tokens[:, :6], cache=cache).logits
        steps = [student(input_ids=tokens[:, t : t + 1], cache=cache).logits for t in range(6, 10)]
    torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), full, rtol=1e-9, atol=1e-9)
    assert cache.get_seq_length() == 10
    assert all(layer.state is not None for layer in cache.mixer_layers.values())


@pytest.mark.parametrize(("case", "mixer"), CASES)
def test_greedy_generation_equals_the_forward_argmax_and_the_token_by_token_recurrence(
    case, mixer, make_student
):
    student = make_student(case, mixer)
    prompts = _prompts()
    cached = student.generate(prompts, max_new_tokens=10, **GREEDY)
    assert torch.equal(cached, _greedy_by_forward(student, prompts, 10))
    assert torch.equal(cached, student.generate(prompts, max_new_tokens=10, use_cache=False, **GREEDY))
    _step_only(student)
    assert torch.equal(cached, student.generate(prompts, max_new_tokens=10, **GREEDY))
    # the tiny random model does not just repeat one token: the comparison means something
    assert len(set(cached[:, 5:].flatten().tolist())) > 3


@pytest.mark.parametrize(("case", "mixer"), CASES)
@pytest.mark.parametrize("stepped", [False, True], ids=["prefill", "stepped"])
def test_left_padded_prompts_of_different_lengths_generate_as_one_at_a_time(
    case, mixer, stepped, make_student
):
    student = make_student(case, mixer)
    with torch.no_grad():  # attention init zeroes them: then padding would reach no state anyway
        for module in student.modules():
            if isinstance(module, CausalConvSiLU):
                module.bias.normal_(generator=torch.Generator().manual_seed(3))
    if stepped:
        _step_only(student)
    prompts = [_prompts(1, length)[0] for length in (7, 3, 5)]
    batch = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        batch[row, 7 - len(prompt) :], mask[row, 7 - len(prompt) :] = prompt, 1
    together = student.generate(batch, attention_mask=mask, max_new_tokens=8, **GREEDY)
    with torch.no_grad():
        cache = CaldCache(student.family, student.backbone)
        padded = student(input_ids=batch, attention_mask=mask, cache=cache).logits
    for row, prompt in enumerate(prompts):
        alone = student.generate(prompt[None], max_new_tokens=8, **GREEDY)
        assert torch.equal(together[row, 7 - len(prompt) :], alone[0])
        with torch.no_grad():
            expected = student(input_ids=prompt[None]).logits[0]
        torch.testing.assert_close(padded[row, 7 - len(prompt) :], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["gpt-neox", "llama"])
def test_a_hybrid_student_with_a_key_value_cache_generates_as_re_running_the_sequence(
    case, make_student
):
    student = make_student(case, "mamba", keep=(0,))
    prompts = _prompts()
    cached = student.generate(prompts, max_new_tokens=10, **GREEDY)
    assert torch.equal(cached, _greedy_by_forward(student, prompts, 10))
    assert torch.equal(cached, student.generate(prompts, max_new_tokens=10, use_cache=False, **GREEDY))
    batch = torch.cat([torch.zeros(1, 2, dtype=torch.long), prompts[:1, 2:]], dim=1)
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    padded = student.generate(torch.cat([batch, prompts[1:2]]), max_new_tokens=6,
                              attention_mask=torch.cat([mask, torch.ones(1, 5, dtype=torch.long)]),
                              **GREEDY)
    alone = student.generate(prompts[:1, 2:], max_new_tokens=6, **GREEDY)
    assert torch.equal(padded[0, 2:], alone[0])
    cache = CaldCache(student.family, student.backbone)
    with torch.no_grad():
        student(input_ids=prompts, cache=cache)
    assert [type(layer).__name__ for layer in cache.layers] == ["DynamicLayer", "MixerStateLayer"]
    assert cache.layers[0].keys.shape[-2] == 5


def test_seeded_sampling_is_reproducible_and_top_k_one_is_greedy(make_student):
    student = make_student("llama", "mamba")
    settings = {"do_sample": True, "temperature": 1.5, "top_k": 20, "top_p": 0.9,
                "max_new_tokens": 8, "pad_token_id": 0}
    torch.manual_seed(11)
    first = student.generate(_prompts(), **settings)
    torch.manual_seed(11)
    assert torch.equal(student.generate(_prompts(), **settings), first)
    torch.manual_seed(11)
    assert torch.equal(student.generate(_prompts(), use_cache=False, **settings), first)
    assert not torch.equal(first, student.generate(_prompts(), max_new_tokens=8, **GREEDY))
    top_one = student.generate(_prompts(), do_sample=True, top_k=1, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(top_one, student.generate(_prompts(), max_new_tokens=8, **GREEDY))


def test_stop_tokens_end_each_sequence_and_the_rest_is_padding(make_student):
    student = make_student("llama", "mamba")
    prompts = _prompts()
    free = student.generate(prompts, max_new_tokens=10, **GREEDY)
    stop = [int(free[0, 6]), int(free[1, 8])]
    stopped = student.generate(prompts, max_new_tokens=10, eos_token_id=stop, **GREEDY)
    for row, sequence in zip(free, stopped):
        generated = row[5:].tolist()
        first = min((generated.index(token) for token in stop if token in generated), default=None)
        if first is None:
            assert torch.equal(sequence, row)
        else:
            assert sequence[5 : 6 + first].tolist() == generated[: first + 1]
            assert set(sequence[6 + first :].tolist()) <= {0}
    assert stopped.shape[1] <= free.shape[1]


def test_teachers_generate_with_a_key_value_cache(make_teacher):
    teacher = make_teacher("gpt-neox")
    cached = teacher.generate(_prompts(), max_new_tokens=4, **GREEDY)
    assert torch.equal(cached, _greedy_by_forward(teacher, _prompts(), 4))


def test_a_generation_leaves_the_model_in_whole_sequence_mode(make_student):
    student = make_student("gpt-neox", "mamba")
    prompts = _prompts()
    before = student(input_ids=prompts).logits
    student.generate(prompts, max_new_tokens=3, **GREEDY)
    torch.testing.assert_close(student(input_ids=prompts).logits, before, rtol=0, atol=0)
    assert all(
        slot.module.store is None for slot in student.family.attention_slots(student.backbone)
    )


def test_beam_search_reorders_the_mixer_states(make_student):
    student = make_student("llama", "mamba2")
    prompts = _prompts(1)
    beams = student.generate(prompts, max_new_tokens=6, num_beams=3, **GREEDY)
    assert beams.shape == (1, 11)
    layer = MixerStateLayer()
    layer.state = {"a": torch.arange(3.0), "b": (torch.arange(6.0).view(3, 2),)}
    layer.reorder_cache(torch.tensor([2, 2, 0]))
    assert layer.state["a"].tolist() == [2.0, 2.0, 0.0]
    assert layer.state["b"][0].tolist() == [[4.0, 5.0], [4.0, 5.0], [0.0, 1.0]]


def test_bad_uses_are_refused_with_one_line(make_teacher, make_student):
    with pytest.raises(CaldError, match="generate\\(\\) needs a causal language model; this 'bert' "
                       "model has a 'classification' head"):
        make_teacher("bert").generate(_prompts(), max_new_tokens=2)

    class Store:
        state = None

    assert isinstance(Store(), StateStore)
    with pytest.raises(CaldError, match="mixer Linear has no recurrent step"):
        advance(torch.nn.Linear(4, 4), torch.zeros(1, 2, 4), None, Store())
    layer = MixerStateLayer()
    layer.crop(0)
    with pytest.raises(CaldError, match="recurrent state cannot forget tokens"):
        layer.crop(1)
