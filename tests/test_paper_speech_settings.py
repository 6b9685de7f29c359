"""The speech paper specs carry the research code's settings, and those settings reach the run.

Reference: idiap/linearize-distill-pretrained-transformers, speech/hyperparams.py and
speech/models/model.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cald_testing.models import TINY_MODELS
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from cald_framework.contracts import CaldOutput
from cald_framework.run.prepare import RunContext
from cald_framework.run.teachers import teacher_cache_key
from cald_framework.spec import load_spec
from cald_framework.testing.audio import write_tone

SPECS = Path(__file__).resolve().parents[1] / "specs" / "paper"
TASKS = ("tedlium", "slurp", "voxceleb1")


def _spec(task: str):  # type: ignore[no-untyped-def]
    return load_spec(SPECS / f"speech-wav2vec2-bimamba2-{task}.toml", [])


@pytest.fixture
def in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding tiny SLURP and VoxCeleb1 manifests where the specs look."""
    monkeypatch.chdir(tmp_path)
    rows = {
        "slurp": ("path,scenario,action,transcript,split", [
            "a.wav,alarm,set,wake me up at seven,train",
            "a.wav,iot,hue_lightoff,lights off,train",
            "a.wav,alarm,query,what alarms do i have,train",
            "a.wav,alarm,set,wake me up,validation",
        ]),
        "voxceleb1": ("path,speaker,split", ["a.wav,id1,train", "a.wav,id2,train", "a.wav,id1,train"]),
        "tedlium": ("path,transcript,split", ["a.wav,hello,train"]),
    }
    for name, (header, lines) in rows.items():
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        write_tone(folder / "a.wav", 200, 0.02, 16_000)
        (folder / "manifest.csv").write_text("\n".join([header, *lines]) + "\n")
    return tmp_path


def _first_batch_loss(task_name: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    validated = _spec(task_name)
    options = validated.task_options.model_copy(update={"eval_split": None, "cache_dir": "cache"})
    task = validated.task.build(options)
    data = task.build_data(Wav2Vec2FeatureExtractor(), seed=0)
    batch = data.collate([data.train[i] for i in range(len(data.train))])
    logits = torch.randn(3, len(data.metadata["label_names"]), generator=torch.Generator().manual_seed(1))
    output = CaldOutput(logits=logits, hidden_states=(), hidden_mask=torch.ones(3, 1))
    return float(task.loss(output, batch)), logits, batch["labels"]


def test_slurp_divides_the_loss_by_the_transcript_length(in_data_dir: Path) -> None:
    loss, logits, labels = _first_batch_loss("slurp")
    characters = len("wake me up at seven") + len("lights off") + len("what alarms do i have")
    # the reference sums the cross-entropy and divides every gradient by the summed lengths
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels, reduction="sum")) / characters)


def test_voxceleb1_divides_the_loss_by_three(in_data_dir: Path) -> None:
    loss, logits, labels = _first_batch_loss("voxceleb1")
    # every row's transcript is the placeholder "123" (speech/dataloader_hf.py)
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels, reduction="sum")) / (3 * 3))


@pytest.mark.parametrize("task", TASKS)
def test_weight_decay_and_the_exponential_floor(in_data_dir: Path, task: str) -> None:
    training = _spec(task).spec.training
    # reg_weight 5e-3; final_lr / max_lr = 1.5e-6 / 3e-4 reached after decay_steps 75,000
    assert training.weight_decay == 5e-3
    assert (training.schedule, training.min_lr_ratio, training.decay_steps) == (
        "exponential", pytest.approx(1.5e-6 / 3e-4), 75000
    )


#: speech/hyperparams.py, passed to Wav2Vec2ForCTC.from_pretrained by speech/models/build.py
#: (layerdrop: the checkpoint's own, which the code kept)
REFERENCE_CONFIG = {
    "mask_time_prob": 0.1,
    "feat_proj_dropout": 0.2,
    "hidden_dropout": 0.2,
    "activation_dropout": 0.2,
    "layerdrop": 0.1,
}


@pytest.mark.parametrize("task", TASKS)
def test_teacher_and_student_regularise_as_the_paper_did(in_data_dir: Path, task: str) -> None:
    spec = _spec(task).spec
    assert spec.teacher.config == REFERENCE_CONFIG and spec.student.config == REFERENCE_CONFIG


def test_the_teacher_config_reaches_the_loaded_teacher_and_the_cache_key(in_data_dir: Path) -> None:
    _, config, _ = TINY_MODELS["wav2vec2-stable"]
    settings = dict(config)
    AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings)).save_pretrained("tiny")
    Wav2Vec2FeatureExtractor().save_pretrained("tiny")
    overrides = ["teacher.model=./tiny", "task.cache_dir=cache"]
    context = RunContext.from_spec(load_spec(SPECS / "speech-wav2vec2-bimamba2-slurp.toml", overrides))
    loaded = context.source_model.backbone.config
    assert {key: getattr(loaded, key) for key in REFERENCE_CONFIG} == REFERENCE_CONFIG
    assert loaded.apply_spec_augment
    plain = RunContext.from_spec(
        load_spec(SPECS / "speech-wav2vec2-bimamba2-slurp.toml", [*overrides, "teacher.config={}"])
    )
    assert teacher_cache_key(plain) != teacher_cache_key(context)
