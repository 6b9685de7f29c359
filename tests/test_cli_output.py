"""``run`` prints its JSON summary alone on stdout, whatever the libraries print meanwhile."""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from cald_framework import cli

SUMMARY = {"experiment": "noisy", "results": "runs/noisy/results.json"}


def _noisy_pipeline(validated: Any, resume: bool) -> SimpleNamespace:
    """Prints and logs the way DeepSpeed does: a handler bound to the stdout of its creation."""
    logger = logging.getLogger("noisy-library")
    logger.propagate = False
    logger.addHandler(logging.StreamHandler(stream=sys.stdout))
    logger.warning("[WARNING] Setting accelerator to CPU.")
    print("progress from a library")
    return SimpleNamespace(summary=lambda: SUMMARY)


def test_run_prints_only_the_summary_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("cald_framework.spec.load_spec", lambda path, overrides: None)
    monkeypatch.setattr("cald_framework.run.pipeline.run_pipeline", _noisy_pipeline)
    assert cli.main(["run", "spec.toml"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == SUMMARY
    assert "Setting accelerator to CPU" in captured.err and "progress from a library" in captured.err
