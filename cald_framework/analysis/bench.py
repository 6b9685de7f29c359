"""Forward time and peak memory against sequence length, teacher against student (Figure 5).

Attention costs grow with the square of the length and a linear-time mixer's with the length
itself, so the student wins beyond some length and the gap widens. :func:`scaling` measures
both models on the same random inputs; :func:`summarise` reads off where the student starts to
win, the speed-up at the longest length and how each model's time grows per doubling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CaldError
from ..modeling import CaldModel
from .measure import median_seconds, peak_bytes, synthetic_inputs
from .output import figure, progress

MB = 2**20
#: default lengths: tokens for text sources, seconds of audio for speech sources
DEFAULT_LENGTHS = {
    "text": (128, 256, 512, 1024, 2048, 4096, 8192),
    "audio": (1, 2, 4, 8, 15, 30, 60),
}


def _is_out_of_memory(error: RuntimeError) -> bool:
    message = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in message


def measure(
    model: CaldModel, inputs: Mapping[str, torch.Tensor], repeats: int, clock: str = "wall"
) -> dict[str, Any]:
    """``ms`` (median of ``repeats`` by ``clock``, after a warm-up) and ``peak_mb`` of one forward.

    The warm-up call is the one whose memory is measured (it is not timed: on the CPU it runs
    under the profiler). Running out of memory, or an input the model refuses (e.g. longer than a Linformer's
    ``max_length``), gives ``nan`` figures and the reason in ``note``.
    """
    device = next(model.parameters()).device

    def forward() -> None:
        model(**inputs)

    model.eval()
    try:
        with torch.inference_mode():
            peak = peak_bytes(forward, device)
            seconds = median_seconds(forward, repeats, device, clock)
    except CaldError as error:
        return {"ms": math.nan, "peak_mb": math.nan, "note": str(error)}
    except RuntimeError as error:
        if not _is_out_of_memory(error):
            raise
        return {"ms": math.nan, "peak_mb": math.nan, "note": "out of memory"}
    return {"ms": seconds * 1000, "peak_mb": peak / MB, "note": ""}


def scaling(
    models: Mapping[str, CaldModel],
    lengths: Sequence[float],
    *,
    batch: int = 1,
    repeats: int = 5,
    max_seconds: float | None = None,
    scenario: str = "",
    clock: str = "wall",
) -> list[dict[str, Any]]:
    """One row per model and length: ``scenario, model, length, ms, peak_mb, note``.

    Every model sees the same inputs at a given length; times are read by ``clock`` (see
    :data:`.measure.CLOCKS`). Once a model takes more than ``max_seconds`` for one forward, its longer lengths are skipped (noted), which keeps the
    quadratic teacher from dominating the run time.
    """
    rows = []
    too_slow: dict[str, float] = {}
    for length in progress(sorted(lengths), f"bench {scenario}".strip()):
        for name, model in models.items():
            row = {"scenario": scenario, "model": name, "length": length}
            if name in too_slow:
                note = f"skipped: over {max_seconds:g} s at length {too_slow[name]:g}"
                rows.append({**row, "ms": math.nan, "peak_mb": math.nan, "note": note})
                continue
            inputs = synthetic_inputs(model, length, batch)
            figures = measure(model, inputs, repeats, clock)
            rows.append({**row, **figures})
            if max_seconds is not None and figures["ms"] > max_seconds * 1000:
                too_slow[name] = length
    return rows


def _times(rows: Sequence[Mapping[str, Any]], model: str) -> dict[float, float]:
    return {
        row["length"]: row["ms"] for row in rows if row["model"] == model and not math.isnan(row["ms"])
    }


def _growth_per_doubling(times: Mapping[float, float]) -> float:
    """How much the time multiplies per doubling of length, between the two longest lengths."""
    if len(times) < 2:
        return math.nan
    (short, t_short), (long, t_long) = sorted(times.items())[-2:]
    return (t_long / t_short) ** (1 / math.log2(long / short))


def summarise(
    rows: Sequence[Mapping[str, Any]], teacher: str = "teacher", student: str = "student"
) -> dict[str, Any]:
    """Where the student wins and by how much.

    ``student_wins_from``: the shortest length from which the student is faster at every
    length measured for both (``None`` if it never is); ``speedup_at_longest``: teacher time
    over student time at the longest such length; ``*_growth``: time factor per doubling of
    length between the two longest lengths each model was measured at.
    """
    teacher_times, student_times = _times(rows, teacher), _times(rows, student)
    common = sorted(set(teacher_times) & set(student_times))
    wins_from = None
    for length in reversed(common):
        if student_times[length] >= teacher_times[length]:
            break
        wins_from = length
    longest = common[-1] if common else None
    return {
        "student_wins_from": wins_from,
        "longest": longest,
        "speedup_at_longest": (
            teacher_times[longest] / student_times[longest] if longest is not None else math.nan
        ),
        "teacher_growth": _growth_per_doubling(teacher_times),
        "student_growth": _growth_per_doubling(student_times),
    }


def side_by_side(
    rows: Sequence[Mapping[str, Any]], teacher: str = "teacher", student: str = "student"
) -> list[dict[str, Any]]:
    """The rows of :func:`scaling` as one row per scenario and length, teacher beside student."""
    by_key = {(row["scenario"], row["length"], row["model"]): row for row in rows}
    table = []
    for scenario, length in dict.fromkeys((row["scenario"], row["length"]) for row in rows):
        first, second = by_key[scenario, length, teacher], by_key[scenario, length, student]
        notes = [f"{name}: {row['note']}" for name, row in ((teacher, first), (student, second)) if row["note"]]
        table.append(
            {
                "scenario": scenario,
                "length": length,
                "teacher_ms": first["ms"],
                "student_ms": second["ms"],
                "speedup": first["ms"] / second["ms"],
                "teacher_peak_mb": first["peak_mb"],
                "student_peak_mb": second["peak_mb"],
                "note": "; ".join(notes),
            }
        )
    return table


def plot_scaling(rows: Sequence[Mapping[str, Any]], path: Path, unit: str) -> Path:
    """Time and peak memory against length on log-log axes; teachers dashed, students solid."""
    lines = list(dict.fromkeys((row["scenario"], row["model"]) for row in rows))
    with figure(path, panels=2) as (timing, memory):
        colours: dict[str, str] = {}
        for scenario, model in lines:
            mine = [r for r in rows if (r["scenario"], r["model"]) == (scenario, model)]
            mine = [r for r in mine if not math.isnan(r["ms"])]
            if not mine:
                continue
            label = f"{scenario} {model}".strip()
            style = "--" if model == "teacher" else "-"
            lengths = [r["length"] for r in mine]
            (line,) = timing.plot(lengths, [r["ms"] for r in mine], style + "o", markersize=3,
                                  label=label, color=colours.get(scenario))
            colours.setdefault(scenario, line.get_color())
            memory.plot(lengths, [max(r["peak_mb"], 1e-3) for r in mine], style + "o",
                        markersize=3, label=label, color=colours[scenario])
        for axes, ylabel in ((timing, "forward time (ms)"), (memory, "peak memory (MiB)")):
            axes.set_xscale("log", base=2)
            axes.set_yscale("log")
            axes.set(xlabel=f"length ({unit})", ylabel=ylabel)
            axes.grid(alpha=0.3, which="both")
            axes.legend(fontsize=8)
        timing.set_title("forward time (teacher dashed, student solid)")
        memory.set_title("peak activation memory")
    return path
