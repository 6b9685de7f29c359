"""cald-framework: convert pretrained transformers into linear-complexity models with CALD."""

import pluggy

__version__ = "0.1.0"

PROJECT = "cald_framework"

#: Decorator that plugins use to implement the hooks in :mod:`cald_framework.hookspecs`.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "__version__", "hookimpl"]

# after ``hookimpl``: the model classes import modules that use it
from .hf.registration import register_auto_classes  # noqa: E402

register_auto_classes()
