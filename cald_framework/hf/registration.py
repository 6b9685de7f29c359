"""Registering the CALD config and model classes with transformers' Auto classes.

``import cald_framework`` calls :func:`register_auto_classes`, so every ``Auto*.from_pretrained``
and ``pipeline()`` in the process knows ``model_type = "cald"``. A process that never imports
the package learns it from the ``auto_map`` that export writes into ``config.json``
(:func:`auto_map`), which names :data:`LOADER_MODULE`, a module in the exported directory that
only imports the installed package.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCausalLM,
    AutoModelForCTC,
    AutoModelForSequenceClassification,
)

from ..contracts import HeadSpec, Modality
from ..modeling import (
    CaldConfig,
    CaldForAudioClassification,
    CaldForCausalLM,
    CaldForCTC,
    CaldForSequenceClassification,
    CaldModel,
)

#: each Auto class and the CALD class it builds
AUTO_CLASSES: dict[type, type[CaldModel]] = {
    AutoModel: CaldModel,
    AutoModelForCausalLM: CaldForCausalLM,
    AutoModelForSequenceClassification: CaldForSequenceClassification,
    AutoModelForAudioClassification: CaldForAudioClassification,
    AutoModelForCTC: CaldForCTC,
}

#: the module, saved beside an exported ``config.json``, that ``auto_map`` names
LOADER_MODULE = "cald_loader"


def register_auto_classes() -> None:
    """Tell transformers' Auto classes about ``model_type = "cald"`` (idempotent)."""
    AutoConfig.register(CaldConfig.model_type, CaldConfig, exist_ok=True)
    for auto_class, model_class in AUTO_CLASSES.items():
        auto_class.register(CaldConfig, model_class, exist_ok=True)


def task_class(head: HeadSpec, modality: Modality) -> type[CaldModel]:
    """The CALD class that runs ``head`` on inputs of ``modality`` the way pipelines expect."""
    if head.kind == "causal_lm":
        return CaldForCausalLM
    if head.kind == "token_classification":
        return CaldForCTC
    return CaldForAudioClassification if modality == "audio" else CaldForSequenceClassification


def auto_map(head: HeadSpec, modality: Modality) -> dict[str, str]:
    """``config.json``'s ``auto_map``: the config, the bare model and the task's Auto class."""
    model_class = task_class(head, modality)
    task_auto = next(auto for auto, cald in AUTO_CLASSES.items() if cald is model_class)
    return {
        "AutoConfig": f"{LOADER_MODULE}.{CaldConfig.__name__}",
        "AutoModel": f"{LOADER_MODULE}.{CaldModel.__name__}",
        task_auto.__name__: f"{LOADER_MODULE}.{model_class.__name__}",
    }


def loader_source() -> str:
    """The text of :data:`LOADER_MODULE`: imports from the installed package, no model code."""
    names = ", ".join(sorted({CaldConfig.__name__, *(c.__name__ for c in AUTO_CLASSES.values())}))
    return (
        '"""Loads this CALD model with the installed cald-framework package '
        '(pip install cald-framework); it holds no model code."""\n\n'
        f"from cald_framework.modeling import {names}  # noqa: F401\n"
    )
