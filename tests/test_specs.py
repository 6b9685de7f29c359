"""Every shipped spec validates with the real registries; the paper specs do what the paper did.

Specs name local files relative to the working directory, and validation checks that they exist.
The tests run in a folder holding the CI workspace (``tiny/``) and empty stand-ins for the data
that users prepare themselves (``data/...``), so every spec validates without any download.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from cald_testing.workspaces import build_ci_workspace

from cald_framework.errors import SpecError
from cald_framework.spec import ValidatedSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "specs"
SPEC_FILES = sorted(SPECS.rglob("*.toml"))
RUN_TABLE = SPECS / "paper" / "run_table.sh"

#: files users make before running a spec (docs/specs.md says how)
PREPARED = [
    "specs/cpu/tiny-wav2vec2/config.json",
    "data/tedlium/manifest.csv",
    "data/slurp/manifest.csv",
    "data/voxceleb1/manifest.csv",
]

#: the documented variants of the CPU speech spec (its header and docs/specs.md)
SPEECH_VARIANTS = {
    "ctc-asr": ["task.kind=ctc-asr", "experiment.name=speech-commands-ctc"],
    "speaker-id": [
        "task.kind=speaker-id",
        "task.label_column=speaker",
        "experiment.name=speech-commands-speaker",
    ],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_ci_workspace(tmp_path_factory.mktemp("specs"))
    for name in PREPARED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    return root


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workdir)
    return workdir


def validate(path: Path, overrides: list[str] | None = None) -> ValidatedSpec:
    return load_spec(path, overrides or [])


def spec_id(path: Path) -> str:
    return str(path.relative_to(SPECS))


def paper(name: str) -> ValidatedSpec:
    return validate(SPECS / "paper" / f"{name}.toml")


def test_the_specs_folder_holds_the_three_scenarios_and_the_cpu_and_ci_specs() -> None:
    folders = {path.parent.name for path in SPEC_FILES}
    assert {"paper", "cpu", "ci"} <= folders
    assert len([p for p in SPEC_FILES if p.parent.name == "ci"]) == 6


@pytest.mark.parametrize("path", SPEC_FILES, ids=spec_id)
def test_every_shipped_spec_validates(in_workdir: Path, path: Path) -> None:
    validated = validate(path)
    assert validated.origin == str(path)
    prefix = "ci-" if path.parent.name == "ci" else ""
    assert validated.spec.experiment.name == prefix + path.stem


def test_experiment_names_and_output_dirs_are_unique(in_workdir: Path) -> None:
    specs = [validate(path).spec for path in SPEC_FILES]
    names = [spec.experiment.name for spec in specs]
    outputs = [spec.experiment.output_dir for spec in specs]
    assert len(set(names)) == len(names) and len(set(outputs)) == len(outputs)


def test_ci_specs_cover_every_registered_task(in_workdir: Path) -> None:
    from cald_framework.plugin_manager import load_registries

    kinds = {validate(path).spec.task.kind for path in (SPECS / "ci").glob("*.toml")}
    assert kinds == {entry.plugin.name for entry in load_registries().tasks}


def test_a_spec_names_its_missing_local_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = SPECS / "cpu" / "speech-commands-bimamba2.toml"
    with pytest.raises(SpecError) as raised:
        validate(path)
    missing = "teacher.model: no such file or directory: ./specs/cpu/tiny-wav2vec2"
    assert str(raised.value) == f"{path}:29: {missing}"


def _run_table_commands() -> list[list[str]]:
    done = subprocess.run(
        ["bash", str(RUN_TABLE), "all"],
        env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_run_table_runs_the_modes_the_paper_ran() -> None:
    runs = {}
    for command in _run_table_commands():
        assert command[:4] == ["python", "-m", "cald_framework", "run"]
        settings = dict(arg.split("=", 1) for arg in command[5:] if arg != "--set")
        runs.setdefault(Path(command[4]).stem, []).append(settings["guidance.mode"])
    assert len(runs) == 8  # 4 NLP tasks, 1 LM, 3 speech tasks
    five = ["unguided", "target", "trajectory", "waypoint", "hybrid"]
    assert all(runs[f"nlp-roberta-linformer-{t}"] == five for t in ("qnli", "qqp", "sst2", "imdb"))
    assert runs["lm-pythia1b-mamba-pile"] == ["unguided", "target", "hybrid"]
    assert runs["speech-wav2vec2-bimamba2-slurp"] == ["unguided", "target", "waypoint", "hybrid"]


def test_every_run_table_command_validates(in_workdir: Path) -> None:
    names = set()
    for command in _run_table_commands():
        overrides = [arg for arg in command[5:] if arg != "--set"]
        validated = validate(REPO / command[4], overrides)
        names.add(validated.spec.experiment.output_dir)
        if validated.guidance.name == "unguided":
            assert validated.student_init == "source"
    assert len(names) == 35


def test_run_table_rejects_an_unknown_scenario() -> None:
    command = ["bash", str(RUN_TABLE), "vision"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: ")


@pytest.mark.parametrize("variant", SPEECH_VARIANTS)
def test_documented_speech_variants_validate(in_workdir: Path, variant: str) -> None:
    validated = validate(SPECS / "cpu" / "speech-commands-bimamba2.toml", SPEECH_VARIANTS[variant])
    assert validated.spec.task.kind == variant


# ------------------------------------------------------------------ fidelity to the paper's code


@pytest.mark.parametrize("task", ["qnli", "qqp", "sst2", "imdb"])
def test_nlp_specs_sum_the_layer_loss_over_all_13_states_and_scale_kd_by_t2(task: str) -> None:
    validated = paper(f"nlp-roberta-linformer-{task}")
    guidance = validated.spec.guidance
    assert (guidance.ld_reduction, guidance.kd_scale_t2, guidance.temperature) == ("sum", True, 2.0)
    assert validated.extractor.name == "hidden_states"
    assert validated.extractor_options.skip_embeddings is False
    assert validated.extractor_options.skip_last is False
    assert validated.mixer_options.k == 256
    assert validated.spec.teacher.train_mode is True
    training = validated.spec.training
    assert (training.batch_size * training.grad_accum, training.epochs) == (32, 10)
    assert validated.teacher_training.batch_size * validated.teacher_training.grad_accum == 32


def test_lm_spec_averages_layer_normed_layers_1_to_l_minus_1_without_t2() -> None:
    validated = paper("lm-pythia1b-mamba-pile")
    guidance = validated.spec.guidance
    assert (guidance.ld_reduction, guidance.kd_scale_t2, guidance.alpha_ld) == ("mean", False, 15.0)
    assert validated.extractor.name == "layernorm"
    assert (validated.extractor_options.skip_embeddings, validated.extractor_options.skip_last) == (
        True,
        True,
    )
    assert (validated.mixer_options.dt_rank, validated.mixer_options.expand) == (160, 2)
    # the "fine-tuning" that only saves the pretrained model as the target teacher
    assert (validated.teacher_training.max_steps, validated.teacher_training.lr) == (1, 1e-12)


@pytest.mark.parametrize(
    ("task", "alpha_kd", "alpha_ld"),
    [("tedlium", 1.0, 15.0), ("slurp", 0.0, 15.0), ("voxceleb1", 0.0, 30.0)],
)
def test_speech_specs_use_the_bimamba2_defaults_and_layers_1_to_l(
    in_workdir: Path, task: str, alpha_kd: float, alpha_ld: float
) -> None:
    validated = paper(f"speech-wav2vec2-bimamba2-{task}")
    options = validated.mixer_options
    shape = (options.d_state, options.headdim, options.d_conv, options.chunk_size, options.expand)
    assert shape == (128, 64, 4, 256, 1)
    guidance = validated.spec.guidance
    weights = (guidance.alpha_kd, guidance.alpha_ld, guidance.kd_scale_t2)
    assert weights == (alpha_kd, alpha_ld, False)
    assert validated.extractor.name == "layernorm"
    assert (validated.extractor_options.skip_embeddings, validated.extractor_options.skip_last) == (
        True,
        False,
    )
    assert validated.spec.training.max_steps == 90000
    assert 90000 // validated.spec.teacher.num_waypoints == 10000  # a waypoint every 10k steps
