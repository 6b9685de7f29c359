"""Text generation for causal language models, and constant-memory decoding for students.

A converted causal student has no attention and no positional input outside its mixers, so
it can decode with each mixer's recurrent ``step`` and a state whose size does not depend on
the context: :class:`RecurrentDecoder` puts every attention slot in step mode and feeds the
whole backbone one position at a time. The prompt is stepped through token by token too,
which needs nothing from a mixer beyond its :class:`~cald_framework.contracts.RecurrentMixer`
step. ``generate(..., recurrent=False)`` re-runs the full sequence for every new token: it
works for any causal model (teachers included) and is the reference the recurrent path must
reproduce. A hybrid student (``kept_attention``) has attention layers, whose state grows with
the context, so it always generates by re-running the sequence: exact, but quadratic in time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import torch

from .contracts import RecurrentSlot
from .errors import CaldError
from .modeling import CaldModel


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy when ``temperature`` is 0, else sampled.

    ``top_k`` keeps the k most likely tokens and ``top_p`` the smallest set whose probability
    reaches p, both before sampling; ``seed`` makes sampling repeatable.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise CaldError(f"sampling temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CaldError(f"sampling top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CaldError(f"sampling top_p must be in (0, 1], got {self.top_p}")

    def chooser(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function from next-token logits ``[B, V]`` to tokens ``[B]``, with its own RNG."""
        if self.temperature == 0:
            return lambda logits: logits.argmax(-1)
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)

        def sample(logits: torch.Tensor) -> torch.Tensor:
            probabilities = self._filtered(logits.double() / self.temperature).softmax(-1)
            return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)

        return sample

    def _filtered(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with the tokens outside top-k / top-p set to ``-inf``."""
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -torch.inf)
        if self.top_p is not None and self.top_p < 1:
            ordered, order = logits.sort(dim=-1, descending=True)
            before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)
            drop = torch.zeros_like(logits, dtype=torch.bool)
            drop.scatter_(-1, order, before >= self.top_p)
            logits = logits.masked_fill(drop, -torch.inf)
        return logits


GREEDY = Sampling()


def _check_causal_lm(model: CaldModel) -> None:
    if model.head_spec.kind != "causal_lm" or not model.family.causal:
        raise CaldError(
            f"generation needs a causal language model; this {model.config.source!r} model has "
            f"a {model.head_spec.kind!r} head"
        )


class RecurrentDecoder:
    """A student in step mode: :meth:`feed` one token per sequence, get next-token logits.

    Used as a context manager; on exit the model is back in whole-sequence mode. Memory and
    time per token are constant: each mixer keeps a fixed-size state and nothing else grows.
    """

    def __init__(self, model: CaldModel, batch_size: int):
        _check_causal_lm(model)
        if model.config.mixer is None:
            raise CaldError(
                f"recurrent decoding needs a converted student; this {model.config.source!r} "
                "model still has attention (use recurrent=False)"
            )
        if model.config.kept_attention:
            raise CaldError(
                f"recurrent decoding needs every layer converted; this student kept attention in "
                f"layers {model.config.kept_attention} (generate() re-runs the sequence for it)"
            )
        slots = [slot.module for slot in model.family.attention_slots(model.backbone)]
        unsupported = {type(slot).__name__ for slot in slots if not isinstance(slot, RecurrentSlot)}
        if unsupported:
            raise CaldError(
                f"source {model.config.source!r} wires mixers into {sorted(unsupported)}, "
                "which have no step mode (start_recurrence/stop_recurrence)"
            )
        self.model = model
        self.batch_size = batch_size
        self.slots: list[RecurrentSlot] = slots

    def __enter__(self) -> RecurrentDecoder:
        parameter = next(self.model.parameters())
        try:
            for slot in self.slots:
                slot.start_recurrence(self.batch_size, parameter.device, parameter.dtype)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        for slot in self.slots:
            slot.stop_recurrence()

    @torch.inference_mode()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Advance every sequence by ``tokens`` ``[B]``; returns the next-token logits ``[B, V]``."""
        if tokens.shape != (self.batch_size,):
            raise CaldError(
                f"feed takes one token per sequence, shape ({self.batch_size},); "
                f"got {tuple(tokens.shape)}"
            )
        return self.model(input_ids=tokens[:, None]).logits[:, -1]


def _check_prompt(input_ids: torch.Tensor, max_new_tokens: int) -> None:
    if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.dtype != torch.long:
        raise CaldError(
            "generation needs input_ids as a [batch, length >= 1] LongTensor of equal-length "
            f"prompts; got {input_ids.dtype} of shape {tuple(input_ids.shape)}"
        )
    if max_new_tokens < 0:
        raise CaldError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


@torch.inference_mode()
def generate(
    model: CaldModel,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    sampling: Sampling = GREEDY,
    eos_token_id: int | None = None,
    recurrent: bool = True,
) -> torch.Tensor:
    """The prompts ``input_ids`` ``[B, T]`` followed by up to ``max_new_tokens`` new tokens.

    ``recurrent`` steps the student's mixers with a constant-size state; without it, or for a
    hybrid student that kept attention layers, the whole sequence is run again for every token
    (any causal model). A sequence that has produced
    ``eos_token_id`` is filled with it until every sequence has, then generation stops.
    """
    _check_prompt(input_ids, max_new_tokens)
    _check_causal_lm(model)
    choose = sampling.chooser(input_ids.device)
    sequences = input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def extend(logits: torch.Tensor) -> torch.Tensor:
        nonlocal sequences, finished
        token = choose(logits)
        if eos_token_id is not None:
            token = token.masked_fill(finished, eos_token_id)
            finished = finished | (token == eos_token_id)
        sequences = torch.cat([sequences, token[:, None]], dim=1)
        return token

    if not recurrent or model.config.kept_attention:
        for _ in range(max_new_tokens):
            extend(model(input_ids=sequences).logits[:, -1])
            if bool(finished.all()):
                break
        return sequences
    with RecurrentDecoder(model, input_ids.shape[0]) as decoder:
        for position in range(input_ids.shape[1] - 1):
            decoder.feed(input_ids[:, position])
        token = input_ids[:, -1]
        for _ in range(max_new_tokens):
            token = extend(decoder.feed(token))
            if bool(finished.all()):
                break
    return sequences
