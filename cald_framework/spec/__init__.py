"""Experiment specs: TOML files validated by pydantic before any model is loaded."""

from .loader import ValidatedSpec, load_spec, validate_document
from .schema import spec_json_schema
from .sections import Spec, TrainingSection

__all__ = ["Spec", "TrainingSection", "ValidatedSpec", "load_spec", "spec_json_schema", "validate_document"]
