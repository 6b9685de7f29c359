"""The models ``cald eval`` evaluates, found from a run directory or a model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..analysis.runs import RunDirectory, find_spec
from ..errors import CaldError
from ..layout import SPEC_FILE, STUDENT_DIR
from ..modeling import CaldModel
from ..run.teachers import available_target_dir


@dataclass
class Candidate:
    """One model to evaluate, with the tokenizer that goes with it."""

    #: how the table names it: ``teacher``, ``student`` or the directory
    name: str
    model: CaldModel
    tokenizer: Any


class LogitsModel(nn.Module):
    """A :class:`CaldModel` called the way lm-eval's ``HFLM`` calls a causal LM.

    ``HFLM`` runs ``model(input_ids).logits`` on unpadded or right-padded batches, reads
    ``model.config`` and ``model.device``, and calls ``eval()`` and ``tie_weights()``.
    """

    def __init__(self, model: CaldModel) -> None:
        super().__init__()
        self.inner = model
        self.config = model.config

    @property
    def device(self) -> torch.device:
        return next(self.inner.parameters()).device

    def tie_weights(self) -> None:
        """Nothing to do: a loaded :class:`CaldModel` already shares its tied tensors."""

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        mask = torch.ones_like(input_ids, dtype=torch.bool)
        return SimpleNamespace(logits=self.inner(input_ids=input_ids, attention_mask=mask).logits)


def _check_causal(model: CaldModel, where: Path | str) -> CaldModel:
    kind = model.head_spec.kind
    if kind != "causal_lm":
        raise CaldError(f"cald eval evaluates causal language models; {where} has a {kind} head")
    return model


def _is_run_directory(path: Path) -> bool:
    return (path / SPEC_FILE).is_file()


def run_candidates(directory: Path, device: torch.device) -> list[Candidate]:
    """A run's teacher (its fine-tuned target, else the pretrained model) and exported student."""
    run = RunDirectory.open(directory, device)
    context = run.context
    student_dir = directory / STUDENT_DIR
    if not (student_dir / "config.json").is_file():
        raise CaldError(f"{directory} has no exported student ({student_dir}): has the run finished?")
    target = available_target_dir(context)
    teacher = CaldModel.from_pretrained(target) if target else context.source_model
    student = CaldModel.from_pretrained(student_dir)
    return [
        Candidate("teacher", _check_causal(teacher, target or context.teacher_model), context.preprocessor),
        Candidate("student", _check_causal(student, student_dir), context.preprocessor),
    ]


def model_candidate(directory: Path, device: torch.device) -> Candidate:
    """A directory saved by ``save_pretrained``; the tokenizer is in it or in its run above."""
    config = directory / "config.json"
    if not config.is_file():
        raise CaldError(f"{directory}: neither a run directory ({SPEC_FILE}) nor a model (config.json)")
    if json.loads(config.read_text()).get("model_type") != "cald":
        raise CaldError(f"{directory}: not a cald-framework model (config.json model_type)")
    model = _check_causal(CaldModel.from_pretrained(directory), directory)
    tokenizer = _tokenizer_near(directory, device)
    return Candidate(str(directory), model, tokenizer)


def _tokenizer_near(directory: Path, device: torch.device) -> Any:
    if (directory / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory)
    try:
        spec = find_spec(directory)
    except CaldError:
        raise CaldError(f"{directory}: no tokenizer in it and no run directory above it") from None
    return RunDirectory.open(directory, device, spec).context.preprocessor


def candidates(paths: list[Path], device: torch.device) -> list[Candidate]:
    """Every model the paths name, in order: a run directory gives its teacher and student."""
    found: list[Candidate] = []
    for path in paths:
        if _is_run_directory(path):
            found.extend(run_candidates(path, device))
        else:
            found.append(model_candidate(path, device))
    for candidate in found:
        candidate.model.to(device).eval()
    return found
