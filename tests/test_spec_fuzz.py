"""Property-based tests: no spec, however broken, produces a traceback.

Random TOML documents, random edits of the text of a valid spec, and random values placed into a
valid spec must always end in success or in exactly one ``error:`` line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cald_framework import cli
from cald_framework.spec.toml_source import parse_toml
from cald_framework.spec.toml_writer import dumps
from cald_framework.testing.toy_plugins import TOY_SPEC


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

KEYS = sorted(
    {"experiment", "teacher", "student", "task", "guidance", "training", "evaluation", "assets"}
    | {"name", "source", "model", "mixer", "kind", "mode", "lr", "k", "T_h", "T_w", "target"}
    | {"mixer_options", "finetune", "seed", "output_dir", "batch_size", "extractor", "dataset"}
)


keys = st.sampled_from(KEYS) | st.text(min_size=1, max_size=8)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["enc", "dec", "bi", "uni", "cls", "target", "hybrid", "asset:x", "./nope.csv"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def assert_clean_outcome(toy_spec_dir: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    (toy_spec_dir / "spec.toml").write_text(text, encoding="utf-8")
    code = cli.main(["validate", "spec.toml"])
    captured = capsys.readouterr()
    if code == 0:
        assert captured.err == ""
        return
    assert code == 2
    assert captured.err.startswith("error: spec.toml")
    assert captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err


@SETTINGS
@given(document=st.dictionaries(keys, values, max_size=6))
def test_random_documents(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str], document: dict[str, Any]) -> None:
    assert_clean_outcome(toy_spec_dir, dumps(document), capsys)


@SETTINGS
@given(data=st.data())
def test_random_edits_of_a_valid_spec(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(TOY_SPEC)))
    removed = data.draw(st.integers(min_value=0, max_value=10))
    inserted = data.draw(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6))
    assert_clean_outcome(toy_spec_dir, TOY_SPEC[:position] + inserted + TOY_SPEC[position + removed :], capsys)


def leaf_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in node.items():
        path = prefix + (key,)
        paths.extend(leaf_paths(value, path) if isinstance(value, dict) else [path])
    return paths


@SETTINGS
@given(data=st.data())
def test_random_values_in_a_valid_spec(toy_spec_dir: Path, capsys: pytest.CaptureFixture[str], data: st.DataObject) -> None:
    document = parse_toml(TOY_SPEC, "base")
    path = data.draw(st.sampled_from(leaf_paths(document)))
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(values)
    assert_clean_outcome(toy_spec_dir, dumps(document), capsys)
