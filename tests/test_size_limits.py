"""Sizes that determine allocations are checked against what they multiply with, at validate time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cald_testing.workspaces import build_review_workspace

from cald_framework.conversion import convert
from cald_framework.errors import SpecError
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries
from cald_framework.spec import load_spec

SPEC = "spec.toml"  # the review workspace's: linformer k = 8, task max_length = 16


@pytest.fixture(autouse=True)
def workspace(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path_factory.getbasetemp() / "size-limits"
    if not root.exists():
        build_review_workspace(root)
    monkeypatch.chdir(root)


def _refusal(*overrides: str) -> str:
    with pytest.raises(SpecError) as error:
        load_spec(SPEC, overrides)
    return str(error.value)


def test_a_k_beyond_max_length_and_the_cap_is_refused_at_validate() -> None:
    assert _refusal("student.mixer_options.k=100000000") == (
        f"{SPEC} (--set student.mixer_options.k): student.mixer_options.k: k = 100000000 exceeds "
        "max_length (16) and 4096: slots past the longest sequence stay empty (mixer 'linformer')"
    )


def test_a_projection_too_large_for_memory_is_refused_at_validate() -> None:
    message = _refusal("student.max_length=1000000", "student.mixer_options.k=4096")
    assert message == (
        f"{SPEC} (--set student.mixer_options.k): student.mixer_options.k: max_length × k = "
        "4,096,000,000 values in each of E and F exceeds 268,435,456; lower k or max_length "
        "(mixer 'linformer')"
    )


@pytest.mark.parametrize("k", [256, 4096])
def test_a_k_above_a_short_max_length_but_within_the_cap_is_accepted(k: int) -> None:
    assert load_spec(SPEC, [f"student.mixer_options.k={k}"]).mixer_options.k == k  # type: ignore[attr-defined]


def test_a_k_up_to_a_long_max_length_is_accepted() -> None:
    validated = load_spec(SPEC, ["student.max_length=8192", "student.mixer_options.k=8192"])
    assert validated.mixer_options.k == 8192  # type: ignore[attr-defined]


def test_building_refuses_the_same_sizes_before_allocating(make_teacher: Callable[..., CaldModel]) -> None:
    with pytest.raises(SpecError) as error:
        convert(make_teacher("bert"), load_registries().mixers.get("linformer"), {"k": 10**8}, 40)
    assert str(error.value) == (
        "linformer: k = 100000000 exceeds max_length (40) and 4096: slots past the longest "
        "sequence stay empty"
    )
