"""Audio stand-ins: sine tones as arrays and as WAV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile


def tone(frequency: float, seconds: float, rate: int) -> np.ndarray:
    """A sine of amplitude 0.5, as float32."""
    time = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def write_tone(path: Path, frequency: float, seconds: float, rate: int) -> Path:
    """Write :func:`tone` as a 16-bit WAV file (creating its directory) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(frequency, seconds, rate), rate, subtype="PCM_16")
    return path
