"""``generate()`` for causal CALD models, through transformers' own generation loop.

:class:`CaldGenerationMixin` makes a causal model a :class:`~transformers.GenerationMixin`:
greedy search, sampling, top-k/top-p, ``max_new_tokens``, stop tokens and the rest come from
transformers' logits processors and stopping criteria. What is CALD's own is the cache
(:class:`~cald_framework.cache.CaldCache`): each mixer keeps a recurrent state of constant
size, and layers that kept attention (hybrid students, teachers) keep keys and values.

The prompt is read in one forward: every mixer that is a
:class:`~cald_framework.contracts.PrefillMixer` runs its parallel scan and returns the state
after the prompt (others step through it); then each new token is one recurrent step. Prompts
of different lengths are left-padded, and padded positions leave every state as it was.
``generate(..., use_cache=False)`` re-runs the whole sequence for every token instead: the
reference the cached path reproduces.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache import CaldCache
from .contracts import RecurrentSlot
from .errors import CaldError

if TYPE_CHECKING:
    from .modeling import CaldModel


@contextmanager
def attached(model: CaldModel, cache: CaldCache | None) -> Iterator[None]:
    """Every mixer slot of ``model`` runs against its layer of ``cache`` (if any) meanwhile."""
    if cache is None:
        yield
        return
    slots = {slot.layer_index: slot.module for slot in model.family.attention_slots(model.backbone)}
    stores = cache.mixer_layers
    try:
        for index, store in stores.items():
            slot = slots[index]
            assert isinstance(slot, RecurrentSlot)
            slot.attach(store)
        yield
    finally:
        for index in stores:
            slots[index].attach(None)


class CaldGenerationMixin(GenerationMixin):
    """``generate()`` for :class:`~cald_framework.modeling.CaldModel` with a causal LM head.

    ``CaldModel.forward`` hands a call that carries ``cache`` (as ``generate`` makes it) to
    :meth:`generation_forward`.
    """

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``generate``; refused with one line for models that are not causal LMs."""
        model: CaldModel = self  # type: ignore[assignment]
        if model.head_spec.kind != "causal_lm" or not model.family.causal:
            raise CaldError(
                f"generate() needs a causal language model; this {model.config.source!r} model "
                f"has a {model.head_spec.kind!r} head"
            )
        return super().generate(*args, **kwargs)

    def _prepare_cache_for_generation(
        self, generation_config: GenerationConfig, model_kwargs: dict[str, Any], *args: Any
    ) -> None:
        """A :class:`CaldCache` unless the caller passed a cache or asked for none."""
        if model_kwargs.get("cache") is not None or generation_config.use_cache is False:
            super()._prepare_cache_for_generation(generation_config, model_kwargs, *args)
            return
        model: CaldModel = self  # type: ignore[assignment]
        model_kwargs["cache"] = CaldCache(model.family, model.backbone)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: CaldCache | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The positions not read yet, the mask of the whole sequence and the cache.

        Position ids are left out: the families that generate have rotary positions inside
        attention only, whose scores depend on distances, not on where counting starts.
        """
        if next_sequence_length is not None:
            input_ids = input_ids[:, -next_sequence_length:]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache}

    def generation_forward(
        self,
        input_ids: torch.Tensor,
        cache: CaldCache | None,
        attention_mask: torch.Tensor | None = None,
        **ignored: Any,
    ) -> CausalLMOutputWithPast:
        """Logits of ``input_ids`` ``[B, T]`` continuing from ``cache``, which is advanced.

        ``attention_mask`` covers the whole sequence so far (``[B, seen + T]``, left padding
        zero; all ones when not given); mixers see its last ``T`` columns. Without a cache the
        sequence is run whole.
        """
        model: CaldModel = self  # type: ignore[assignment]
        batch, time = input_ids.shape
        if attention_mask is None:
            seen = 0 if cache is None else cache.seen
            attention_mask = input_ids.new_ones(batch, seen + time)
        model.padding_state.set(attention_mask[:, -time:].bool())
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if cache is not None:
            inputs["cache"] = cache
        with attached(model, cache):
            features = model.family.run(model.backbone, inputs, model.head_spec)
        if cache is not None:
            cache.seen += time
        mask = attention_mask[:, -time:].bool()
        logits = features if model.head is None else model.head(features, mask)
        return CausalLMOutputWithPast(logits=logits, cache=cache)
