"""Hybrid students (``student.keep_attention``): kept layers hold the teacher's attention exactly,
the others mixers; the layout survives saving, the run, resuming and generation."""

from __future__ import annotations

import errno
import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from cald_sources.wiring import MixerSlot
from cald_testing.models import TINY_MODELS
from cald_testing.workspaces import build_ci_workspace, build_review_workspace

from cald_framework import cli
from cald_framework.analysis import commands
from cald_framework.analysis.bench import scaling, side_by_side
from cald_framework.conversion import convert
from cald_framework.engine import tensorfiles
from cald_framework.errors import CaldError
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

#: cases whose attention is plain softmax attention (WavLM adds a relative position bias)
CASES = sorted(set(TINY_MODELS) - {"wavlm"})


def _hybrid(make_teacher, mixer_plugins, case: str, keep: list[int]):
    teacher = make_teacher(case)
    student, report = convert(teacher, mixer_plugins["cumulative-mean"], {}, 40, keep_attention=keep)
    return teacher, student, report


def _slots(model: CaldModel) -> list[torch.nn.Module]:
    return [slot.module for slot in model.family.attention_slots(model.backbone)]


@pytest.mark.parametrize("case", CASES)
def test_kept_layers_hold_the_teachers_attention_and_the_others_mixers(
    case, make_teacher, mixer_plugins
):
    teacher, student, _ = _hybrid(make_teacher, mixer_plugins, case, [0])
    kept, converted = _slots(student)
    original = _slots(teacher)[0]
    assert type(kept) is type(original) and not isinstance(kept, MixerSlot)
    assert kept is not original  # a copy: training the student leaves the teacher alone
    for (name, mine), (_, theirs) in zip(kept.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(mine, theirs), name
    assert isinstance(converted, MixerSlot)
    assert student.config.kept_attention == [0]


@pytest.mark.parametrize("case", CASES)
def test_hidden_states_up_to_the_first_converted_layer_equal_the_teachers(
    case, make_teacher, make_inputs, mixer_plugins
):
    teacher, student, _ = _hybrid(make_teacher, mixer_plugins, case, [0])
    inputs = make_inputs(case)
    with torch.no_grad():
        expected, got = teacher(**inputs), student(**inputs)
    mask = expected.hidden_mask[..., None]
    for layer in (0, 1):  # the embeddings and the kept layer 0
        torch.testing.assert_close(got.hidden_states[layer] * mask, expected.hidden_states[layer] * mask, rtol=0, atol=0)
    assert not torch.allclose(got.hidden_states[2] * mask, expected.hidden_states[2] * mask)


@pytest.mark.parametrize("case", CASES)
def test_a_saved_hybrid_reloads_with_its_layout_and_outputs(
    case, tmp_path, make_teacher, make_inputs, mixer_plugins
):
    _, student, _ = _hybrid(make_teacher, mixer_plugins, case, [1])
    student.save_pretrained(tmp_path)
    reloaded = CaldModel.from_pretrained(tmp_path, mixer=mixer_plugins["cumulative-mean"]).double()
    assert reloaded.config.kept_attention == [1]
    assert [type(slot) for slot in _slots(reloaded)] == [type(slot) for slot in _slots(student)]
    inputs = make_inputs(case)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student(**inputs).logits, rtol=0, atol=0)


def test_the_transfer_report_copies_kept_attention_and_replaces_only_the_rest(
    make_teacher, mixer_plugins
):
    _, _, report = _hybrid(make_teacher, mixer_plugins, "llama", [0])
    kept, converted = "backbone.model.layers.0.self_attn.", "backbone.model.layers.1.self_attn."
    assert report.kept_attention == [0]
    assert {name for name in report.copied if name.startswith(kept)} == {
        f"{kept}{name}.weight" for name in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    assert report.dropped and all(name.startswith(converted) for name in report.dropped)
    assert all(name.startswith((converted, "shared.")) for name in report.new)
    assert report.unexpected_missing == [] and report.unexpected_new == []
    assert report.to_dict()["kept_attention"] == [0]


def test_kept_attention_layers_still_build_their_attention_masks(make_teacher, make_inputs, mixer_plugins):
    """A kept BERT layer reads the padding mask through the library's own mask."""
    teacher, student, _ = _hybrid(make_teacher, mixer_plugins, "bert", [0])
    inputs = make_inputs("bert")
    longer = dict(inputs, input_ids=inputs["input_ids"].clone())
    longer["input_ids"][1, 6:] = 5  # padding content changes: valid outputs must not
    with torch.no_grad():
        first, second = student(**inputs).hidden_states[1], student(**longer).hidden_states[1]
    torch.testing.assert_close(first[1, :6], second[1, :6], rtol=0, atol=0)


def test_mixers_see_their_own_layer_index_and_the_full_layer_count(make_teacher, mixer_plugins):
    seen = []
    plugin = mixer_plugins["cumulative-mean"]

    def build(options, ctx):
        seen.append((ctx.layer_index, ctx.num_layers))
        return plugin.build(options, ctx)

    recording = type(plugin)(plugin.name, plugin.options, build, plugin.direction)
    convert(make_teacher("bert"), recording, {}, 40, keep_attention=[0])
    assert seen == [(1, 2)]


def test_linformer_sharing_one_projection_works_in_a_hybrid(make_teacher, make_inputs, tmp_path):
    linformer = load_registries().mixers.get("linformer")
    student, _ = convert(make_teacher("bert"), linformer, {"k": 8, "share": "layer"}, 40, keep_attention=[1])
    inputs = make_inputs("bert")
    student.save_pretrained(tmp_path)
    reloaded = CaldModel.from_pretrained(tmp_path).double()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student(**inputs).logits, rtol=0, atol=0)
    assert any(name.startswith("shared.") for name in student.state_dict())


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ([2], "keep_attention: layers [2] do not exist; the model has 2 layers (0..1)"),
        ([0, 1], "keep_attention: keeps all 2 layers, so nothing would be converted; keep fewer layers"),
    ],
)
def test_impossible_kept_layers_are_one_line_errors(keep, message, make_teacher, mixer_plugins):
    with pytest.raises(CaldError) as caught:
        _hybrid(make_teacher, mixer_plugins, "bert", keep)
    assert str(caught.value) == message


@pytest.mark.parametrize("case", ["gpt-neox", "llama"])
def test_a_hybrid_causal_student_generates_the_greedy_tokens_of_its_forward(case, make_teacher):
    mamba = load_registries().mixers.get("mamba")
    student, _ = convert(make_teacher(case), mamba, {}, 40, keep_attention=[0])
    student = student.double().eval()
    prompts = torch.randint(3, 60, (3, 5), generator=torch.Generator().manual_seed(7))
    expected = prompts
    with torch.no_grad():
        for _ in range(10):
            token = student(input_ids=expected).logits[:, -1].argmax(-1)
            expected = torch.cat([expected, token[:, None]], dim=1)
    generated = student.generate(prompts, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, expected)
    assert len(set(expected[:, 5:].flatten().tolist())) > 3


# ---------------------------------------------------------------------- the run, end to end

SPEC = "specs/ci/causal-lm.toml"
KEEP = "student.keep_attention=[0]"


def _run(root: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(root)
    spec = Path(__file__).resolve().parents[1] / SPEC
    return cli.main(["run", str(spec), "--set", KEEP, "--set", "experiment.output_dir=run",
                     "--set", "training.save_every=1", *extra])


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_ci_workspace(tmp_path_factory.mktemp("hybrid-run"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _run(root, monkeypatch) == 0
    return root / "run"


def test_a_hybrid_run_reports_exports_and_reloads_its_layout(straight: Path) -> None:
    results = json.loads((straight / "results.json").read_text())
    assert results["kept_attention"] == [0]
    assert "Layers 0 kept the teacher's attention" in (straight / "report.md").read_text()
    assert results["speed"]["student_ms"] > 0 and results["steps"] == 3
    assert json.loads((straight / "transfer_report.json").read_text())["kept_attention"] == [0]
    student = CaldModel.from_pretrained(straight / "student")
    assert student.config.kept_attention == [0]
    kept, converted = _slots(student)
    assert not isinstance(kept, MixerSlot) and isinstance(converted, MixerSlot)


def test_an_interrupted_hybrid_run_resumes_to_the_same_student(
    straight: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_ci_workspace(tmp_path)
    real = tensorfiles.save_file

    def full_disk_at_step_two(tensors, filename, metadata=None):
        if (root / "run" / "checkpoints" / "step-00000001").is_dir():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, filename, metadata=metadata)

    with monkeypatch.context() as patch:
        patch.setattr(tensorfiles, "save_file", full_disk_at_step_two)
        assert _run(root, monkeypatch) == cli.USER_ERROR
    capsys.readouterr()
    assert _run(root, monkeypatch, "--resume") == 0
    trained = capsys.readouterr().err
    assert "[train step 1/3]" not in trained and "[train step 2/3]" in trained  # from step 1 on
    left = tensorfiles.read_tensors(straight / "student" / "model.safetensors")
    right = tensorfiles.read_tensors(root / "run" / "student" / "model.safetensors")
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def test_kept_layers_beyond_the_teacher_stop_the_run_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_ci_workspace(tmp_path)
    assert _run(root, monkeypatch, "--set", "student.keep_attention=[5]") == cli.USER_ERROR
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: student.keep_attention: layers [5] do not exist; the model has 2 layers (0..1)"
    ]
    assert not (root / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------- the scaling benchmark


def test_the_scaling_benchmark_times_hybrids_as_scenarios_of_their_own(make_teacher):
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scaling.py"))
    teacher = make_teacher("gpt-neox").float()
    students = script["hybrid_students"](teacher, "mamba", 40, (0, 1))
    assert [model.config.kept_attention for model in students.values()] == [[], [0]]
    models = {"teacher": teacher, **{f"student-{kept}": model for kept, model in students.items()}}
    rows = scaling(models, [8, 16], repeats=1, scenario="tiny -> mamba")
    split = script["per_student"](rows, "tiny -> mamba", (0, 1))
    assert [(row["scenario"], row["model"], row["length"]) for row in split] == [
        ("tiny -> mamba", "teacher", 8), ("tiny -> mamba", "student", 8),
        ("tiny -> mamba", "teacher", 16), ("tiny -> mamba", "student", 16),
        ("tiny -> mamba, 1 attention layer kept", "teacher", 8),
        ("tiny -> mamba, 1 attention layer kept", "student", 8),
        ("tiny -> mamba, 1 attention layer kept", "teacher", 16),
        ("tiny -> mamba, 1 attention layer kept", "student", 16),
    ]
    hybrid = [row for row in rows if row["model"] == "student-1"]
    assert [row["ms"] for row in split[5::2]] == [row["ms"] for row in hybrid]
    assert len(side_by_side(split)) == 4


def test_the_bench_command_times_the_hybrid_of_a_spec_and_of_a_saved_student(
    straight: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = []
    real = commands.scaling

    def recording(models, *args, **kwargs):
        timed.append(models["student"].config.kept_attention)
        return real(models, *args, **kwargs)

    monkeypatch.setattr(commands, "scaling", recording)
    monkeypatch.chdir(straight.parent)
    assert cli.main(["bench", "run/spec.toml", "run/student", "--lengths", "8,16", "--repeats", "1",
                     "--overhead-steps", "0", "--out", "bench"]) == 0
    assert timed == [[0], [0]]


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT review workspace whose spec keeps layer 1's attention, its teacher cached."""
    root = tmp_path_factory.mktemp("hybrid-modes")
    build_review_workspace(root, {
        "student.keep_attention": [1], "training.max_steps": 2, "training.save_every": None,
        "experiment.teacher_cache": "cache", "teacher.num_waypoints": 2,
    })
    return root


@pytest.mark.parametrize("mode", ["unguided", "target", "trajectory", "waypoint", "hybrid"])
def test_a_hybrid_trains_in_every_guidance_mode(reviews: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(reviews)
    extra = ["--set", "guidance.T_h=0.5"] if mode == "hybrid" else []
    assert cli.main(["run", "spec.toml", "--set", f"guidance.mode={mode}",
                     "--set", f"experiment.output_dir=run-{mode}", *extra]) == 0
    run = reviews / f"run-{mode}"
    assert json.loads((run / "results.json").read_text())["kept_attention"] == [1]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [event for event in steps if event["event"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(event["loss"]) for event in losses)
    assert CaldModel.from_pretrained(run / "student").config.kept_attention == [1]
