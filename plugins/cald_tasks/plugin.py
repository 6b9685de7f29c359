"""Registers the built-in tasks, exactly as a third-party package would."""

from __future__ import annotations

from collections.abc import Callable

from cald_framework import hookimpl
from cald_framework.contracts import TaskPlugin

from .causal_lm import CausalLMTask
from .classification import AudioClassificationTask, SpeakerIdTask, TextClassificationTask
from .ctc import CtcAsrTask
from .intent import IntentClassificationTask
from .options import (
    AudioClassificationOptions,
    CausalLMOptions,
    CtcOptions,
    IntentOptions,
    TextClassificationOptions,
)

TASKS = tuple(
    TaskPlugin(task.name, options, task, description=description)
    for task, options, description in (
        (
            TextClassificationTask,
            TextClassificationOptions,
            "one label per text or text pair; accuracy, macro F1",
        ),
        (
            AudioClassificationTask,
            AudioClassificationOptions,
            "one label per audio clip; accuracy, macro F1",
        ),
        (SpeakerIdTask, AudioClassificationOptions, "speaker of each audio clip; accuracy"),
        (
            IntentClassificationTask,
            IntentOptions,
            "joint scenario-action intent of each utterance (SLURP); intent, scenario, action "
            "accuracy",
        ),
        (CtcAsrTask, CtcOptions, "speech recognition with CTC over characters; WER, CER"),
        (CausalLMTask, CausalLMOptions, "next-token prediction over packed blocks; perplexity"),
    )
)


@hookimpl
def cald_register_tasks(register: Callable[[TaskPlugin], None]) -> None:
    for task in TASKS:
        register(task)
