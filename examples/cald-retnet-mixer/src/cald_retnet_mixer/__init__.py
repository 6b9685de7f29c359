"""RetNet's multi-scale retention as a cald-framework sequence mixer."""

from .retention import RetentionMixer, RetentionOptions, RetentionState

__all__ = ["RetentionMixer", "RetentionOptions", "RetentionState"]
