"""Assets: pinned wheels served offline from a local folder, verified, extracted and cached."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from cald_framework.assets import MARKER, AssetError, AssetSpec, fetch_asset, resolve_references

DIST, VERSION = "tinyasset", "1.0"
WHEEL = f"{DIST}-{VERSION}-py3-none-any.whl"


def build_wheel(folder: Path, files: dict[str, str]) -> str:
    """Write a minimal wheel that pip accepts and return its sha256."""
    info = f"{DIST}-{VERSION}.dist-info"
    entries = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/RECORD": "",
        **files,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in entries.items():
            wheel.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


DATA = {
    f"{DIST}/__init__.py": "",
    f"{DIST}/data/corpus.txt": "hello corpus\n",
    f"{DIST}/data/model/config.json": '{"width": 4}\n',
    f"{DIST}/data/model/sub/weights.bin": "0123",
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("index")
    return folder, build_wheel(folder, DATA)


def offline(folder: Path) -> list[str]:
    return ["--no-index", "--find-links", str(folder)]


def spec(sha256: str, member: str, **extra: str) -> AssetSpec:
    return AssetSpec(pip=f"{DIST}=={VERSION}", sha256=sha256, member=member, **extra)


def test_fetch_extracts_a_directory_and_second_call_is_a_cache_hit(index, tmp_path):
    folder, sha = index
    asset = spec(sha, f"{DIST}/data/model", filename=WHEEL)
    local = fetch_asset("model", asset, tmp_path, pip_args=offline(folder))
    assert local.name == "model"
    assert (local / "config.json").read_text() == '{"width": 4}\n'
    assert (local / "sub" / "weights.bin").read_text() == "0123"
    assert sorted(p.name for p in local.rglob("*")) == ["config.json", "sub", "weights.bin"]
    assert (local.parent / MARKER).read_text() == f"{sha} {DIST}/data/model\n"
    assert not [p for p in (tmp_path / sha[:16]).iterdir() if p.name.startswith(".tmp-")]
    # a pip call would fail here (no index, no find-links), so returning proves the cache hit
    assert fetch_asset("model", asset, tmp_path, pip_args=["--no-index"]) == local


def test_two_members_of_one_wheel_are_cached_side_by_side(index, tmp_path):
    folder, sha = index
    pip_args = offline(folder)
    corpus = fetch_asset("c", spec(sha, f"{DIST}/data/corpus.txt"), tmp_path, pip_args=pip_args)
    model = fetch_asset("m", spec(sha, f"{DIST}/data/model"), tmp_path, pip_args=pip_args)
    assert corpus.read_text() == "hello corpus\n"
    assert (model / "config.json").is_file()
    assert corpus.parent != model.parent


def test_a_foreign_marker_is_not_a_cache_hit(index, tmp_path):
    folder, sha = index
    asset = spec(sha, f"{DIST}/data/corpus.txt")
    local = fetch_asset("c", asset, tmp_path, pip_args=offline(folder))
    local.write_text("tampered")
    (local.parent / MARKER).write_text("something else\n")
    again = fetch_asset("c", asset, tmp_path, pip_args=offline(folder))
    assert again.read_text() == "hello corpus\n"


def test_hash_mismatch_names_asset_and_both_hashes(index, tmp_path):
    folder, sha = index
    wrong = "0" * 64
    with pytest.raises(AssetError) as caught:
        fetch_asset("corpus", spec(wrong, f"{DIST}/data"), tmp_path, pip_args=offline(folder))
    assert str(caught.value) == (
        f"asset 'corpus': sha256 mismatch for {WHEEL}: expected {wrong} got {sha}"
    )
    assert not list((tmp_path / wrong[:16]).iterdir())


def test_unexpected_filename_is_refused(index, tmp_path):
    folder, sha = index
    asset = spec(sha, f"{DIST}/data/corpus.txt", filename="other-1.0-py3-none-any.whl")
    with pytest.raises(AssetError, match=f"^asset 'c': downloaded {WHEEL}, expected other-1.0"):
        fetch_asset("c", asset, tmp_path, pip_args=offline(folder))


def test_missing_member_lists_the_top_level(index, tmp_path):
    folder, sha = index
    with pytest.raises(AssetError) as caught:
        fetch_asset("c", spec(sha, f"{DIST}/data/nope.txt"), tmp_path, pip_args=offline(folder))
    assert str(caught.value) == (
        f"asset 'c': no member '{DIST}/data/nope.txt' in {WHEEL} "
        f"(top level: {DIST}, {DIST}-{VERSION}.dist-info)"
    )


def test_a_prefix_of_a_name_is_not_a_member(index, tmp_path):
    folder, sha = index
    with pytest.raises(AssetError, match="no member 'tinyasset/data/mod'"):
        fetch_asset("c", spec(sha, f"{DIST}/data/mod"), tmp_path, pip_args=offline(folder))


@pytest.mark.parametrize("evil", [f"{DIST}/data/../../../escaped.txt", f"{DIST}/data//abs.txt"])
def test_path_traversal_in_the_archive_extracts_nothing(tmp_path, evil):
    folder = tmp_path / "evil-index"
    sha = build_wheel(folder, {f"{DIST}/data/ok.txt": "ok", evil: "gotcha"})
    cache = tmp_path / "cache"
    with pytest.raises(AssetError) as caught:
        fetch_asset("evil", spec(sha, f"{DIST}/data"), cache, pip_args=offline(folder))
    assert str(caught.value) == f"asset 'evil': unsafe path {evil!r} in {WHEEL}"
    assert not (tmp_path / "escaped.txt").exists()
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_pip_failure_is_one_line_naming_the_asset(index, tmp_path):
    folder, sha = index
    asset = AssetSpec(pip=f"{DIST}==9.9", sha256=sha, member=f"{DIST}/data")
    with pytest.raises(AssetError) as caught:
        fetch_asset("gone", asset, tmp_path, pip_args=offline(folder))
    message = str(caught.value)
    assert message.startswith(f"asset 'gone': pip download {DIST}==9.9 failed: ")
    assert "No matching distribution found" in message
    assert "\n" not in message


def test_resolve_references_walks_nested_structures(index, tmp_path):
    folder, sha = index
    assets = {"data": spec(sha, f"{DIST}/data")}
    raw = {
        "task": {"files": ["asset:data/corpus.txt", ("asset:data/model/sub", 3)], "plain": "x.csv"},
        "teacher": {"model": "asset:data/model", "nested": [{"deep": "asset:data"}]},
        "seed": 7,
        "hub": "org/model-asset:data",
    }
    resolved = resolve_references(raw, assets, tmp_path, pip_args=offline(folder))
    base = fetch_asset("data", assets["data"], tmp_path, pip_args=["--no-index"])
    assert resolved == {
        "task": {
            "files": [str(base / "corpus.txt"), (str(base / "model" / "sub"), 3)],
            "plain": "x.csv",
        },
        "teacher": {"model": str(base / "model"), "nested": [{"deep": str(base)}]},
        "seed": 7,
        "hub": "org/model-asset:data",
    }
    assert raw["task"]["files"][0] == "asset:data/corpus.txt"


def test_resolve_references_unknown_name_lists_declared_names(index, tmp_path):
    _, sha = index
    assets = {"data": spec(sha, f"{DIST}/data"), "bert": spec(sha, f"{DIST}/data/model")}
    with pytest.raises(AssetError) as caught:
        resolve_references({"a": ["asset:nope/x.txt"]}, assets, tmp_path)
    assert str(caught.value) == (
        "unknown asset 'nope' in 'asset:nope/x.txt'; declared assets: bert, data"
    )


@pytest.mark.parametrize("sub", ["missing.txt", "../corpus.txt", "model//config.json"])
def test_resolve_references_bad_sub_path(index, tmp_path, sub):
    folder, sha = index
    assets = {"data": spec(sha, f"{DIST}/data")}
    expected = f"'asset:data/{sub}': no such path '{sub}' inside asset 'data' ("
    with pytest.raises(AssetError, match="^" + re.escape(expected)):
        resolve_references(f"asset:data/{sub}", assets, tmp_path, pip_args=offline(folder))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pip", "tinyasset>=1.0", "exactly pinned 'name==version'"),
        ("pip", "tinyasset", "exactly pinned 'name==version'"),
        ("sha256", "abc", "expected 64 hexadecimal characters"),
        ("sha256", "g" * 64, "expected 64 hexadecimal characters"),
        ("member", "../etc/passwd", "relative path inside the archive"),
        ("member", "/etc/passwd", "relative path inside the archive"),
        ("color", "red", "Extra inputs are not permitted"),
    ],
)
def test_asset_spec_validation(field, value, message):
    fields = {"pip": "tinyasset==1.0", "sha256": "a" * 64, "member": "tinyasset/data", field: value}
    with pytest.raises(ValidationError, match=message):
        AssetSpec(**fields)


def test_asset_spec_normalises():
    asset = AssetSpec(pip="tiny-asset.x==1.0.post1", sha256="AB" * 32, member="pkg/data/")
    assert (asset.sha256, asset.member) == ("ab" * 32, "pkg/data")
