"""Plugin discovery through real entry points of temporary distributions placed on sys.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cald_framework.contracts import MixerPlugin, NoOptions
from cald_framework.errors import PluginError
from cald_framework.plugin_manager import PluginLoadWarning, build_registries
from cald_framework.registry import Provenance, Registry

BUILTIN_KINDS = {"source model", "mixer", "extractor", "guidance mode", "task"}

GOOD = '''
from torch import nn
from cald_framework import hookimpl
from cald_framework.contracts import MixerPlugin, NoOptions

@hookimpl
def cald_register_mixers(register):
    register(MixerPlugin("temp-mixer", NoOptions, lambda options, ctx: nn.Identity(), "causal",
                         description="a mixer from a temporary distribution"))
'''

BROKEN = "raise ImportError('this plugin is broken on purpose')\n"

DUPLICATE = GOOD.replace("a mixer from", "the same name from")

MISSPELT = '''
from cald_framework import hookimpl

@hookimpl
def cald_register_mixer(register):
    pass
'''


def make_distribution(site: Path, dist: str, version: str, module: str, code: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[cald_framework]\nmain = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "good-cald-plugin", "1.2.3", "good_cald_plugin", GOOD)
    make_distribution(site, "broken-cald-plugin", "0.1", "broken_cald_plugin", BROKEN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("CALD_STRICT_PLUGINS", raising=False)
    return site


def test_third_party_entry_point_registers_with_its_provenance(site: Path) -> None:
    with pytest.warns(PluginLoadWarning):
        registries = build_registries()
    assert registries.mixers.get("temp-mixer").direction == "causal"
    assert registries.mixers.provenance("temp-mixer") == Provenance(
        "good-cald-plugin", "1.2.3", "good_cald_plugin"
    )
    assert {kind for kind, _ in registries.all()} == BUILTIN_KINDS


def test_broken_plugin_warns_naming_its_distribution_and_the_rest_works(site: Path) -> None:
    with pytest.warns(PluginLoadWarning) as caught:
        registries = build_registries()
    messages = [str(w.message) for w in caught]
    assert messages == [
        "plugin 'broken-cald-plugin:main' from distribution broken-cald-plugin 0.1 was not "
        "loaded: ImportError: this plugin is broken on purpose"
    ]
    assert "temp-mixer" in registries.mixers


def test_strict_mode_turns_the_warning_into_an_error(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"^plugin 'broken-cald-plugin:main' .* broken on purpose$"):
        build_registries()


def test_duplicate_name_is_refused_and_the_first_registration_kept(site: Path) -> None:
    make_distribution(site, "zz-dup-plugin", "2.0", "zz_dup_plugin", DUPLICATE)
    with pytest.warns(PluginLoadWarning) as caught:
        registries = build_registries()
    assert (
        "plugin 'zz-dup-plugin:main' from distribution zz-dup-plugin 2.0 was not loaded: "
        "PluginError: mixer 'temp-mixer' from zz-dup-plugin (zz_dup_plugin) is already "
        "registered by good-cald-plugin (good_cald_plugin)"
    ) in [str(w.message) for w in caught]
    assert registries.mixers.get("temp-mixer").description == "a mixer from a temporary distribution"


def test_misspelt_hook_is_rejected_by_check_pending(site: Path) -> None:
    make_distribution(site, "misspelt-plugin", "1.0", "misspelt_plugin", MISSPELT)
    with pytest.warns(PluginLoadWarning) as caught:
        build_registries()
    assert any(
        "misspelt-plugin" in str(w.message) and "cald_register_mixer" in str(w.message)
        for w in caught
    )


def test_cli_lists_plugins_despite_a_broken_one(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "cald_framework", "plugins", "--json"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: plugin 'broken-cald-plugin:main'")
    rows = json.loads(result.stdout)
    temp = [row for row in rows if row["name"] == "temp-mixer"]
    assert temp == [
        {
            "kind": "mixer",
            "name": "temp-mixer",
            "distribution": "good-cald-plugin",
            "version": "1.2.3",
            "module": "good_cald_plugin",
            "description": "a mixer from a temporary distribution",
        }
    ]
    builtin = {row["kind"] for row in rows if row["distribution"] == "cald-framework"}
    assert builtin == BUILTIN_KINDS


def test_unknown_name_lists_the_registered_names() -> None:
    registry: Registry[MixerPlugin] = Registry("mixer", MixerPlugin)
    origin = Provenance("x", "1", "x")
    for name in ("b", "a"):
        registry.add(MixerPlugin(name, NoOptions, lambda *_: None, "causal"), origin)
    with pytest.raises(PluginError, match=r"^unknown mixer 'c'; registered: a, b$"):
        registry.get("c")


def test_wrong_record_type_is_refused() -> None:
    registry: Registry[MixerPlugin] = Registry("mixer", MixerPlugin)
    with pytest.raises(PluginError, match="registered a str as a mixer; expected MixerPlugin"):
        registry.add("linformer", Provenance("x", "1", "x.plugin"))  # type: ignore[arg-type]
