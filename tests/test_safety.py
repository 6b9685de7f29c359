"""Nothing a run reads can execute code: no pickle, no remote code, no names that import modules.

Each malicious file would create a marker file if it were ever unpickled or imported; every
case must end in a one-line error (exit code 2) with the marker never created.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from cald_testing.workspaces import MODEL_DIR, build_review_workspace

from cald_framework import cli
from cald_framework.contracts import HeadSpec
from cald_framework.engine.checkpoints import STATE_FILE, list_checkpoints
from cald_framework.modeling import CaldModel

ROOT = Path(__file__).resolve().parents[1]
#: the code that runs: the host, the built-in plugins, scripts, benchmarks, the example plugin
CODE_DIRS = ("cald_framework", "plugins", "scripts", "benchmarks", "examples")


class _Payload:
    """Unpickling this runs ``touch marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def _write_pickle(path: Path, marker: Path, *, torch_format: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"weight": _Payload(marker)}
    if torch_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_review_workspace(tmp_path / "ws", {"training.epochs": 1})
    monkeypatch.chdir(tmp_path / "ws")
    return tmp_path / "ws"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "CODE-RAN"


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI, expecting a user error; returns its one error line."""
    assert cli.main(list(args)) == cli.USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("torch_format", [False, True], ids=["raw-pickle", "torch-save"])
def test_a_pickled_teacher_is_refused(
    workspace: Path, marker: Path, torch_format: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / MODEL_DIR / "model.safetensors").unlink()
    _write_pickle(workspace / MODEL_DIR / "pytorch_model.bin", marker, torch_format=torch_format)
    assert _refused(capsys, "run", "spec.toml") == (
        f"error: cannot load bert model './{MODEL_DIR}': its pickled weights hold more than "
        "tensors, and unpickling them could run code; convert them to safetensors"
    )
    assert not marker.exists()


def test_a_pickled_target_teacher_is_refused(
    workspace: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = workspace / "target"
    CaldModel.from_source("bert", f"./{MODEL_DIR}", HeadSpec("classification", 2)).save_pretrained(target)
    (target / "model.safetensors").unlink()
    _write_pickle(target / "pytorch_model.bin", marker, torch_format=True)
    assert _refused(capsys, "run", "spec.toml", "--set", "teacher.target=./target") == (
        "error: target is not a saved CaldModel: model.safetensors is missing"
    )
    _write_pickle(target / "model.safetensors", marker, torch_format=False)  # a pickle by another name
    line = _refused(capsys, "run", "spec.toml", "--set", "teacher.target=./target")
    assert line.startswith("error: target/model.safetensors is not a readable safetensors file (")
    assert not marker.exists()


def _waypoints(directory: Path, entries: dict[str, str]) -> None:
    directory.mkdir(exist_ok=True)
    manifest = {"format": 1, "total_steps": 6, "waypoints": entries}
    (directory / "waypoints.json").write_text(json.dumps(manifest))


def test_a_pickled_waypoint_is_refused(workspace: Path, marker: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _waypoints(workspace / "wp", {"3": "evil.pt", "6": "evil.pt"})
    _write_pickle(workspace / "wp" / "evil.pt", marker, torch_format=True)
    line = _refused(
        capsys, "run", "spec.toml", "--set", "guidance.mode=waypoint", "--set", "teacher.waypoints=./wp"
    )
    assert line.startswith("error: wp/evil.pt: not a readable safetensors file (")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../outside.safetensors", "/etc/hostname", "sub/../../outside.safetensors"])
def test_a_waypoint_manifest_cannot_point_outside_its_directory(
    workspace: Path, entry: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(workspace / MODEL_DIR / "model.safetensors", workspace / "outside.safetensors")
    _waypoints(workspace / "wp", {"3": entry})
    line = _refused(
        capsys, "run", "spec.toml", "--set", "guidance.mode=waypoint", "--set", "teacher.waypoints=./wp"
    )
    assert line == (
        f"error: waypoint manifest wp/waypoints.json is unreadable: entry {entry!r} is outside "
        "the manifest's directory"
    )


def test_a_checkpoint_holding_a_pickle_is_never_unpickled(
    workspace: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even with a state file whose sizes and hashes match the pickle, as an attacker would write it."""
    spec = ["run", "spec.toml", "--set", "guidance.mode=unguided", "--set", "student.init=source"]
    assert cli.main(spec) == 0
    checkpoints = list_checkpoints(workspace / "run" / "checkpoints")
    for checkpoint in checkpoints:
        weights = checkpoint / "model.safetensors"
        _write_pickle(weights, marker, torch_format=True)
        state = json.loads((checkpoint / STATE_FILE).read_text())
        data = weights.read_bytes()
        state["files"][weights.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (checkpoint / STATE_FILE).write_text(json.dumps(state))
    capsys.readouterr()
    line = _refused(capsys, *spec, "--resume")
    assert line == f"error: no usable checkpoint in run/checkpoints: all {len(checkpoints)} are broken"
    assert not marker.exists()


def test_remote_code_shipped_with_a_teacher_never_runs(
    workspace: Path, marker: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = workspace / "remote"
    remote.mkdir()
    auto_map = {"AutoConfig": "evil.Config", "AutoModel": "evil.Model", "AutoTokenizer": ["evil.Tokenizer", None]}
    (remote / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (remote / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map, "tokenizer_class": "Tokenizer"}))
    (remote / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    line = _refused(capsys, "run", "spec.toml", "--set", "teacher.model=./remote")
    assert line.startswith(
        "error: cannot load the preprocessor of bert model './remote': The repository ./remote "
        "contains custom code which must be executed"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("student.mixer", "mixer"),
        ("teacher.source", "source model"),
        ("task.kind", "task"),
        ("guidance.mode", "guidance mode"),
        ("guidance.extractor", "extractor"),
    ],
)
@pytest.mark.parametrize("name", ["os.system", "planted:main", "planted.Mixer"])
def test_a_spec_resolves_registered_names_only(
    workspace: Path, marker: Path, field: str, kind: str, name: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A module that could be imported (it is on ``sys.path``) is not imported by naming it."""
    (workspace / "planted.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nMixer = main = None\n")
    monkeypatch.syspath_prepend(str(workspace))
    line = _refused(capsys, "validate", "spec.toml", "--set", f"{field}={name}")
    assert line.startswith(f"error: spec.toml (--set {field}): {field}: unknown {kind} {name!r}; registered: ")
    assert not marker.exists()


# ---------------------------------------------------------------- no unsafe loader in the code


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


_UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "pd.read_pickle", "pandas.read_pickle"}
_UNSAFE_MODULES = {"dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_loads(source: str) -> list[str]:
    """What in ``source`` could unpickle or run shipped code: calls, imports and keywords."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] in _UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in _UNSAFE_MODULES or (
                module == "pickle" and {alias.name for alias in node.names} & {"load", "loads", "Unpickler"}
            ):
                found.append(f"from {module} import")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            if name in _UNSAFE_CALLS:
                found.append(name)
            elif name == "torch.load" and keywords.get("weights_only") is not True:
                found.append("torch.load without weights_only=True")
            elif keywords.get("allow_pickle") is True or keywords.get("trust_remote_code") is True:
                found.append(f"{name} with {'allow_pickle' if 'allow_pickle' in keywords else 'trust_remote_code'}=True")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "from pickle import load",
        "import dill",
        "import torch\ntorch.load('x.pt')",
        "import torch\ntorch.load('x.pt', weights_only=False)",
        "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
        "AutoModel.from_pretrained('x', trust_remote_code=True)",
    ],
)
def test_the_scanner_finds_unsafe_loads(snippet: str) -> None:
    assert unsafe_loads(snippet)


def test_no_code_unpickles_or_trusts_remote_code() -> None:
    files = [path for folder in CODE_DIRS for path in (ROOT / folder).rglob("*.py")]
    assert len(files) > 50
    found = {str(path.relative_to(ROOT)): unsafe_loads(path.read_text()) for path in files}
    assert {path: what for path, what in found.items() if what} == {}
    assert unsafe_loads("import torch\ntorch.load('x.pt', weights_only=True)") == []
