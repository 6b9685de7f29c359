"""Mixed precision: autocast for forwards, and loss scaling for fp16; the dtypes weights are kept in.

Two different things, two keys each. ``training.precision`` and ``teacher.precision`` are the
*autocast* of forwards: weights stay as stored (fp32 by default, the master copy the optimizer
updates) and matrix products run in the half format. ``student.dtype`` and ``teacher.dtype``
are the *storage* of the weights themselves (:data:`WEIGHT_DTYPES`): bf16 halves the memory
of weights, gradients and optimizer state, and bf16 weights compute in bf16 whatever the
autocast. fp16 storage is for frozen teachers only: training fp16 weights has no master copy.

The engine handles precision itself rather than through ``Accelerator(mixed_precision=...)``:
accelerate keeps that choice in a process-wide singleton, and one pipeline may fine-tune the
teacher and train the student with different settings in the same process. It also lets the
teacher's forward and the trajectory teacher's own updates use the same rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..contracts import PrecisionName
from ..errors import CaldError

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: storage dtype of weights by spec name (``teacher.dtype``, ``student.dtype``)
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast context, backward and optimizer step for one precision on one device."""

    def __init__(self, name: PrecisionName, device: torch.device):
        if name == "fp16" and device.type != "cuda":
            raise CaldError(
                f"training.precision = 'fp16' needs a GPU (this run is on {device.type}); "
                "use 'bf16' or 'fp32'"
            )
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CaldError("training.precision = 'bf16' is not supported by this GPU; use 'fp16'")
        self.name = name
        self.device_type = device.type
        self.dtype = _DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate (scaled up under fp16)."""
        return self.scaler.scale(loss) if self.scaler else loss

    def backward(self, loss: torch.Tensor) -> None:
        self.scale(loss).backward()

    def unscale_and_clip(
        self,
        optimizer: Optimizer,
        parameters: Iterable[nn.Parameter],
        max_norm: float | None,
        clip: Callable[[Iterable[nn.Parameter], float], torch.Tensor] = torch.nn.utils.clip_grad_norm_,
    ) -> torch.Tensor | None:
        """Bring gradients back to their true scale and clip them with ``clip`` (which may know
        about sharded gradients); the norm before clipping."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if max_norm is None:
            return None
        return clip(parameters, max_norm)

    def step(self, optimizer: Optimizer, *, skip: bool = False) -> None:
        """Take the optimizer step unless ``skip`` (fp16 also skips it when gradients overflowed)."""
        if self.scaler:
            if not skip:
                self.scaler.step(optimizer)
            self.scaler.update()
        elif not skip:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
