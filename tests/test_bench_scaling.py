"""The scaling benchmark's guidance-step table, on tiny models."""

from __future__ import annotations

import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cald_framework.conversion import convert
from cald_framework.plugin_manager import load_registries

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_scaling.py"


def _guidance_steps() -> Callable[..., list[dict[str, Any]]]:
    """The benchmark's function, read from the script (benchmarks/ is not a package)."""
    return runpy.run_path(str(SCRIPT), run_name="bench_scaling")["guidance_steps"]


@pytest.mark.parametrize(("case", "mixer"), [("bert", "linformer"), ("gpt-neox", "mamba")])
def test_the_guidance_step_table_times_every_mode_on_a_synthetic_batch(make_teacher, case, mixer):
    """A sequence-level head (KD on ``[B, C]`` logits) and a per-token one (masked ``[B, T, V]``)."""
    teacher = make_teacher(case)
    student, _ = convert(teacher, load_registries().mixers.get(mixer), {}, 40)
    rows = _guidance_steps()(case, teacher, student, (2, 8), steps=1, clock="wall")
    assert [(row["scenario"], row["mode"]) for row in rows] == [
        (case, "unguided"), (case, "target / waypoint / hybrid"), (case, "trajectory (T_u=4)")
    ]
    assert rows[0]["vs_unguided"] == 1.0
    assert all(row["ms_per_step"] > 0 for row in rows)
