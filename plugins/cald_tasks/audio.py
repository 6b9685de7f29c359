"""Audio rows: reading with soundfile, anti-aliased resampling, cropping, feature extraction.

Decoding is done here rather than by ``datasets``' ``Audio`` feature, which needs torchcodec.
"""

from __future__ import annotations

import importlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np

from cald_framework.errors import CaldError, DataError

from .loading import Origin
from .rows import PreprocessedInputs, RowProblem


def speech_module(name: str) -> ModuleType:
    """An audio dependency, imported on first use so that text-only installs never need it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CaldError(
            f"audio tasks need the {name.split('.')[0]} package: "
            "pip install 'cald-framework[speech]'"
        ) from None


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling with scipy's Kaiser-windowed low-pass, so no aliasing folds in."""
    if from_rate == to_rate:
        return wave
    divisor = math.gcd(from_rate, to_rate)
    signal = speech_module("scipy.signal")
    return signal.resample_poly(wave, to_rate // divisor, from_rate // divisor).astype(np.float32)


def read_audio(value: Any, base_dir: Path | None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate, from a path, an ``{"bytes"|"path"}`` or an
    ``{"array", "sampling_rate"}`` dict; channels are averaged."""
    if isinstance(value, dict) and value.get("array") is not None:
        return _mono(np.asarray(value["array"], dtype=np.float32)), int(value["sampling_rate"])
    if isinstance(value, dict) and value.get("bytes") is not None:
        return _decode(io.BytesIO(value["bytes"]), value.get("path") or "embedded audio")
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise RowProblem("the audio cell has neither bytes nor a path")
    path = Path(path) if base_dir is None else base_dir / path
    if not path.is_file():
        raise RowProblem(f"cannot read audio file '{path}': no such file")
    return _decode(path, str(path))


def _decode(file: Path | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    soundfile = speech_module("soundfile")
    try:
        samples, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        raise RowProblem(f"cannot read audio file '{name}': {error.error_string}") from None
    if samples.shape[0] == 0:
        raise RowProblem(f"audio file '{name}' has no samples")
    return _mono(samples), rate


def _mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def require_feature_extractor(preprocessor: Any, task: str) -> Any:
    """The source's feature extractor; it must say which sampling rate the model expects."""
    if not isinstance(getattr(preprocessor, "sampling_rate", None), int):
        raise DataError(
            f"{task} needs an audio feature extractor with a sampling_rate; the source gave "
            f"{type(preprocessor).__name__}"
        )
    return preprocessor


@dataclass(frozen=True)
class AudioInputs(PreprocessedInputs):
    """Audio read from ``audio_column``, at the extractor's rate, cropped or rejected when long."""

    preprocessor: Any
    audio_column: str
    max_seconds: float | None
    on_too_long: Literal["crop", "reject"]
    batch_size: ClassVar[int] = 32

    def __post_init__(self) -> None:
        # fail before any data is loaded, not on the first row
        speech_module("soundfile")
        speech_module("scipy.signal")

    @property
    def sampling_rate(self) -> int:
        return self.preprocessor.sampling_rate

    def prepare(self, row: dict[str, Any], origin: Origin) -> np.ndarray:
        value = row[self.audio_column]
        if value is None:
            raise RowProblem(f"missing audio in column {self.audio_column!r}")
        wave, rate = read_audio(value, origin.base_dir)
        if self.max_seconds is not None and len(wave) > self.max_seconds * rate:
            if self.on_too_long == "reject":
                raise RowProblem(
                    f"audio is {len(wave) / rate:.2f} s long, over max_seconds = {self.max_seconds}"
                )
            wave = wave[: int(self.max_seconds * rate)]
        return resample(wave, rate, self.sampling_rate)

    def encode(self, waves: list[np.ndarray]) -> dict[str, list[Any]]:
        features = self.preprocessor(waves, sampling_rate=self.sampling_rate)
        return self.with_lengths({name: list(features[name]) for name in self.model_columns})
