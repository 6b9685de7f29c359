"""Speed analysis: memory and time measurement, scaling rows, the summary and guidance overhead."""

from __future__ import annotations

import math
import time

import pytest
import torch

from cald_framework.analysis.bench import measure, plot_scaling, scaling, side_by_side, summarise
from cald_framework.analysis.measure import (
    clock_for,
    median_seconds,
    peak_bytes,
    positions,
    synthetic_inputs,
)
from cald_framework.analysis.overhead import guidance_overhead
from cald_framework.conversion import convert
from cald_framework.errors import CaldError
from cald_framework.plugin_manager import load_registries
from cald_framework.testing.engine import TinyTask, tiny_data

CPU = torch.device("cpu")


def test_cpu_peak_counts_live_tensor_bytes_including_frees():
    assert peak_bytes(lambda: torch.ones(1000, 1000) + torch.ones(1000, 1000), CPU) == 12_000_000

    def allocate_free_allocate() -> None:
        first = torch.ones(250_000)
        del first
        torch.ones(250_000)

    assert peak_bytes(allocate_free_allocate, CPU) == 1_000_000


def test_the_cpu_clock_ignores_waiting_and_the_wall_clock_does_not():
    assert median_seconds(lambda: time.sleep(0.05), 3, CPU, "wall") >= 0.05
    assert median_seconds(lambda: time.sleep(0.05), 3, CPU, "cpu") < 0.01
    with pytest.raises(CaldError, match="^the cpu clock cannot time work on a CUDA device"):
        clock_for("cpu", torch.device("cuda"))
    with pytest.raises(CaldError, match=r"^unknown clock 'gpu'; expected one of \['cpu', 'wall'\]$"):
        clock_for("gpu", CPU)


def test_synthetic_text_inputs_have_the_length_and_stay_in_the_vocabulary(make_teacher):
    bert = make_teacher("bert")
    inputs = synthetic_inputs(bert, 33, batch=2)
    assert set(inputs) == {"input_ids", "attention_mask"}
    assert inputs["input_ids"].shape == (2, 33) and bool(inputs["attention_mask"].all())
    assert 5 <= int(inputs["input_ids"].min()) and int(inputs["input_ids"].max()) < 60
    assert positions(bert, inputs) == 33


def test_synthetic_audio_inputs_are_seconds_at_16_khz(make_teacher):
    wav2vec2 = make_teacher("wav2vec2")
    inputs = synthetic_inputs(wav2vec2, 0.05, batch=1)
    assert inputs["input_values"].shape == (1, 800)
    assert inputs["input_values"].dtype == torch.float64
    # conv strides 5 and 2, kernels 10 and 3: (800 - 10) // 5 + 1 = 159 -> (159 - 3) // 2 + 1 = 79
    assert positions(wav2vec2, inputs) == 79


@pytest.fixture
def pair(make_teacher):
    teacher = make_teacher("bert")
    student, _ = convert(teacher, load_registries().mixers.get("linformer"), {"k": 4}, 16)
    return {"teacher": teacher, "student": student.eval()}


def test_scaling_measures_every_model_at_every_length(pair):
    rows = scaling(pair, [16, 8], repeats=2, scenario="tiny")
    assert [(row["model"], row["length"]) for row in rows] == [
        ("teacher", 8), ("student", 8), ("teacher", 16), ("student", 16)
    ]
    assert all(list(row) == ["scenario", "model", "length", "ms", "peak_mb", "note"] for row in rows)
    assert all(row["ms"] > 0 and row["peak_mb"] > 0 and row["note"] == "" for row in rows)
    table = side_by_side(rows)
    assert [list(row) for row in table] == [
        ["scenario", "length", "teacher_ms", "student_ms", "speedup", "teacher_peak_mb",
         "student_peak_mb", "note"]
    ] * 2
    assert table[1]["speedup"] == rows[2]["ms"] / rows[3]["ms"]


def test_a_refused_length_is_noted_and_a_slow_model_skips_longer_lengths(pair):
    refused = measure(pair["student"], synthetic_inputs(pair["student"], 20, 1), repeats=1)
    assert math.isnan(refused["ms"]) and math.isnan(refused["peak_mb"])
    assert "longer than max_length 16" in refused["note"]
    rows = scaling({"teacher": pair["teacher"]}, [4, 8, 12], repeats=1, max_seconds=0.0)
    skipped = "skipped: over 0 s at length 4"
    assert [row["note"] for row in rows] == ["", skipped, skipped]


def _rows(teacher: list[float], student: list[float]) -> list[dict]:
    return [
        {"scenario": "s", "model": model, "length": 2**i, "ms": ms, "peak_mb": 1.0, "note": ""}
        for model, times in (("teacher", teacher), ("student", student))
        for i, ms in enumerate(times)
    ]


def test_summary_reads_the_crossover_the_speedup_and_the_growth_per_doubling():
    summary = summarise(_rows([1, 4, 16, 64], [2, 4, 8, 16]))
    assert summary == {
        "student_wins_from": 4,  # equal at 2: not a win
        "longest": 8,
        "speedup_at_longest": 4.0,
        "teacher_growth": 4.0,
        "student_growth": 2.0,
    }
    assert summarise(_rows([1, 4, 16, 64], [10, 40, 160, 640]))["student_wins_from"] is None
    # a win that does not last is no crossover: only the final run of wins counts
    assert summarise(_rows([3, 1, 3], [1, 2, 1]))["student_wins_from"] == 4


def test_summary_ignores_lengths_a_model_could_not_run():
    rows = _rows([1, 4, 16], [2, 4, 8])
    rows[2]["ms"] = math.nan  # the teacher at length 4
    summary = summarise(rows)
    assert summary["longest"] == 2 and summary["speedup_at_longest"] == 1.0
    assert summary["teacher_growth"] == 4.0


def test_plot_is_written(tmp_path):
    path = plot_scaling(_rows([1, 4, 16], [2, 4, 8]), tmp_path / "bench.png", "tokens")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_guidance_overhead_times_each_step_kind_and_leaves_the_models_alone(pair, make_inputs):
    teacher, student = pair["teacher"], pair["student"]
    before = {name: value.clone() for name, value in student.state_dict().items()}
    batch = {"inputs": make_inputs("bert"), "labels": torch.tensor([0, 2])}
    rows = guidance_overhead(student, teacher, TinyTask(), tiny_data(), batch, steps=2, update_every=2)
    assert [row["mode"] for row in rows] == [
        "unguided", "target / waypoint / hybrid", "trajectory (T_u=2)"
    ]
    assert rows[0]["vs_unguided"] == 1.0
    assert all(row["ms_per_step"] > 0 for row in rows)
    assert rows[1]["vs_unguided"] == rows[1]["ms_per_step"] / rows[0]["ms_per_step"]
    assert all(torch.equal(before[name], value) for name, value in student.state_dict().items())
    assert not teacher.training and not student.training


@pytest.mark.parametrize(("case", "rows"), [("bert", 100), ("roberta", 102)])
def test_bert_position_tables_grow_with_random_rows(case, rows, make_teacher):
    model = make_teacher(case)
    family, backbone = model.family, model.backbone
    table = backbone.embeddings.position_embeddings.weight.detach().clone()
    assert family.extend_positions(backbone, 100) is True
    grown = backbone.embeddings.position_embeddings.weight
    assert grown.shape == (rows, 16) and grown.dtype == torch.float64
    assert torch.equal(grown[: table.shape[0]], table)
    assert 0.01 < float(grown[table.shape[0] :].std()) < 0.03  # initializer_range 0.02
    assert backbone.embeddings.position_ids.shape == (1, rows)
    assert backbone.config.max_position_embeddings == rows
    assert family.extend_positions(backbone, 100) is False
    long_input = synthetic_inputs(model, 100, batch=1)
    assert model(**long_input).hidden_states[-1].shape == (1, 100, 16)


def test_families_without_a_position_table_do_not_extend(make_teacher):
    for case in ("gpt-neox", "wav2vec2"):
        model = make_teacher(case)
        assert model.family.extend_positions(model.backbone, 10_000) is False
