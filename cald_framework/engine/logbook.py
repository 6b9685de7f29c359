"""Where a run reports: ``metrics.jsonl``, a progress bar and the trackers named in the spec.

Only the main process writes. ``metrics.jsonl`` holds one JSON object per event (``train``,
``eval``, ``nonfinite``, ``warning``, ``guidance`` from the guidance schedule, and ``align`` and
``guidance_choice`` from the stages before training), each
with the ``step`` it belongs to; a resumed run first drops the events after its checkpoint, so
the file reads as one uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from accelerate import Accelerator
from tqdm.auto import tqdm

from ..errors import CaldError
from ..layout import METRICS_FILE

_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}

logger = logging.getLogger("cald_framework.engine")


def check_trackers(trackers: list[str]) -> None:
    """A clear error now rather than an import error after the first steps."""
    for name in trackers:
        if not any(importlib.util.find_spec(package) for package in _TRACKER_PACKAGES[name]):
            raise CaldError(
                f"training.trackers names {name!r} but its package is not installed "
                f"(pip install {_TRACKER_PACKAGES[name][0]})"
            )


def _json_ready(value: Any) -> Any:
    """Non-finite floats as strings, since strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    return value


#: events written by the stages before training (alignment, the choice of ``auto`` guidance): a
#: training run started afresh keeps them; the alignment clears the file when it starts afresh
PRELUDE_EVENTS = frozenset({"align", "guidance_choice"})


def keep_events(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite ``metrics.jsonl`` at ``path`` with only the events for which ``keep`` is true."""
    if not path.is_file():
        return
    events = [line for line in path.read_text().splitlines() if line]
    kept = [line for line in events if keep(json.loads(line))]
    path.write_text("".join(f"{line}\n" for line in kept))


def append_event(path: Path, event: str, step: int, values: dict[str, Any]) -> None:
    """Append one event line to ``metrics.jsonl`` at ``path`` (non-finite floats as strings)."""
    line = json.dumps(_json_ready({"event": event, "step": step, **values}))
    with open(path, "a") as handle:
        handle.write(line + "\n")


class Logbook:
    """Reports of one run; on processes other than the main one every method does nothing."""

    def __init__(
        self,
        output_dir: Path,
        accelerator: Accelerator,
        *,
        total_steps: int,
        start_step: int,
        resumed: bool,
        tracked: bool,
    ):
        self.active = accelerator.is_main_process
        self.accelerator = accelerator
        self.tracked = tracked
        self.path = output_dir / METRICS_FILE
        self.bar: tqdm | None = None
        if not self.active:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            keep_events(self.path, lambda event: event["step"] <= start_step)
        else:
            keep_events(self.path, lambda event: event["event"] in PRELUDE_EVENTS)
        if tracked:
            accelerator.init_trackers(output_dir.name)
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc="train",
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        )

    def record(self, event: str, step: int, values: dict[str, Any]) -> None:
        """Append an event to ``metrics.jsonl`` and send its numbers to the trackers."""
        if not self.active:
            return
        append_event(self.path, event, step, values)
        self._echo(event, step, values)
        if self.tracked:
            flat = _flatten(values, prefix=f"{event}/")
            self.accelerator.log({k: v for k, v in flat.items() if isinstance(v, (int, float))}, step=step)

    def _echo(self, event: str, step: int, values: dict[str, Any]) -> None:
        """Evaluations always reach the console; training lines too when no bar is shown (a log file)."""
        if event == "eval":
            shown = values["metrics"]
        elif event == "train" and self.bar.disable:
            shown = {k: v for k, v in values.items() if k in ("loss", "task", "kd", "ld", "lr")}
        else:
            return
        numbers = ", ".join(f"{key} {value:.4g}" for key, value in shown.items() if isinstance(value, float))
        tqdm.write(f"[{event} step {step}/{self.bar.total}] {numbers}", file=sys.stderr)

    def warn(self, step: int, message: str) -> None:
        if self.active:
            logger.warning(message)
            self.record("warning", step, {"message": message})

    def advance(self, postfix: dict[str, Any] | None = None) -> None:
        """One step on the progress bar, showing the numbers of ``postfix`` (lists are left out)."""
        if self.bar is not None:
            if postfix:
                numbers = {k: f"{v:.4g}" for k, v in postfix.items() if isinstance(v, float)}
                self.bar.set_postfix(numbers, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.active and self.tracked:
            self.accelerator.end_training()


def _flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, list):  # per-layer values: one series per layer
            flat.update(_flatten(dict(enumerate(value)), f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
