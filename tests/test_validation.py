"""Plugin options are validated once, with one wording, from a spec and from an API call alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from cald_framework.errors import PluginError, SpecError
from cald_framework.modeling import mixer_options
from cald_framework.spec import load_spec
from cald_framework.testing.toy_plugins import TOY_SPEC, toy_registries
from cald_framework.validation import OptionsError


@pytest.mark.parametrize(
    ("options", "spec_text"),
    [({"k": 0}, "k = 0"), ({"rank": 8}, "rank = 8"), ({"k": "many"}, 'k = "many"')],
)
def test_a_bad_mixer_option_reads_the_same_from_a_spec_and_from_a_call(
    toy_spec_dir: Path, options: dict[str, object], spec_text: str
) -> None:
    with pytest.raises(OptionsError) as called:
        mixer_options(toy_registries().mixers.get("bi"), options)
    (toy_spec_dir / "spec.toml").write_text(TOY_SPEC.replace("k = 8", spec_text))
    with pytest.raises(SpecError) as loaded:
        load_spec("spec.toml")
    assert isinstance(called.value, PluginError)
    assert str(loaded.value) == f"spec.toml:13: student.mixer_options.{called.value}"


def test_every_problem_is_kept_and_the_first_is_told_with_a_count() -> None:
    with pytest.raises(OptionsError) as caught:
        mixer_options(toy_registries().mixers.get("bi"), {"k": -1, "rank": 2})
    assert [problem.path for problem in caught.value.problems] == [("k",), ("rank",)]
    assert str(caught.value) == (
        "k: Input should be greater than 0 (got -1) (mixer 'bi') (and 1 more)"
    )
