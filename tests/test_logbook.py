"""The run's log: metrics.jsonl lines and what reaches the console."""

from __future__ import annotations

import json

from accelerate import Accelerator

from cald_framework.engine.logbook import Logbook


def _logbook(tmp_path) -> Logbook:
    return Logbook(tmp_path, Accelerator(cpu=True), total_steps=10, start_step=0, resumed=False, tracked=False)


def test_events_are_written_and_echoed_when_no_terminal(tmp_path, capsys):
    log = _logbook(tmp_path)
    log.record("train", 2, {"epoch": 0.2, "lr": 1e-4, "loss": 0.5, "task": 0.25, "samples_per_s": 30.0})
    log.record("eval", 5, {"epoch": 0.5, "metrics": {"accuracy": 0.75}, "best": True})
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(line["event"], line["step"]) for line in lines] == [("train", 2), ("eval", 5)]
    assert lines[1]["metrics"] == {"accuracy": 0.75}
    err = capsys.readouterr().err.splitlines()
    assert err == ["[train step 2/10] lr 0.0001, loss 0.5, task 0.25", "[eval step 5/10] accuracy 0.75"]


def test_a_resumed_log_drops_the_events_after_its_checkpoint(tmp_path):
    log = _logbook(tmp_path)
    for step in (1, 2, 3):
        log.record("train", step, {"loss": float(step)})
    log.close()
    Logbook(tmp_path, Accelerator(cpu=True), total_steps=10, start_step=2, resumed=True, tracked=False).close()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
