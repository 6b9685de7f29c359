"""The ``init`` option every built-in mixer takes: start from the replaced attention, or afresh.

``"random"`` is the CALD paper's initialisation (each mixer's own). ``"attention"`` maps the
replaced attention's projections into the mixer so that a converted layer starts close to the
layer it replaces; each mixer documents its mapping. A mixer rebuilt from a saved config gets
no projections (its weights are loaded afterwards) and must build the same shapes without them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cald_framework.contracts import PluginOptions

InitName = Literal["attention", "random"]


class InitOptions(PluginOptions):
    """Options of mixers that can start from the attention they replace."""

    init: InitName = Field(
        "random",
        description="attention: start from the replaced attention's projections; "
        "random: the mixer's own initialisation (the paper's)",
    )

