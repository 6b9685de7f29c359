"""Options, initialisation and scan precision shared by the Mamba-family mixers."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from .initialisation import InitOptions

#: how an unset geometry option reads in its description
DERIVED = "unset: {random} with init = random, derived from the attention with init = attention"


class SsmOptions(InitOptions):
    """What Mamba and Mamba2 have in common: the block shape and the time-step initialisation.

    Geometry options left unset (``None``) are derived: under ``init = "random"`` they take
    the mixer's own defaults (:attr:`RANDOM_GEOMETRY`) as soon as the options are validated, so
    random-init configs read exactly as before; under ``init = "attention"`` they stay unset
    and the mixer derives them from the attention's widths (``MixerContext`` carries those even
    when a saved config is rebuilt without projections).
    """

    #: the values unset geometry options take under ``init = "random"``
    RANDOM_GEOMETRY: ClassVar[dict[str, int]] = {"expand": 2}

    d_conv: int = Field(4, gt=0, description="width of the causal depthwise convolution")
    expand: int | None = Field(
        None,
        gt=0,
        description="inner width = expand * d_model; " + DERIVED.format(random=2),
    )
    dt_min: float = Field(0.001, gt=0, description="smallest initial time step")
    dt_max: float = Field(0.1, gt=0, description="largest initial time step")
    dt_init_floor: float = Field(1e-4, gt=0, description="lower bound of the initial time steps")
    conv_bias: bool = Field(True, description="bias in the convolution")
    bias: bool = Field(False, description="bias in the input and output projections")

    @model_validator(mode="before")
    @classmethod
    def _random_geometry(cls, data: Any) -> Any:
        """Fill unset geometry with the mixer's own defaults when it starts at random."""
        if not isinstance(data, dict) or data.get("init", "random") != "random":
            return data
        unset = {key: value for key, value in cls.RANDOM_GEOMETRY.items() if data.get(key) is None}
        return {**data, **unset}

    @model_validator(mode="after")
    def _time_steps_ordered(self) -> SsmOptions:
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        return self


def time_step_bias(size: int, options: SsmOptions) -> torch.Tensor:
    """The bias whose softplus is a time step drawn log-uniformly in ``[dt_min, dt_max]``.

    This is Mamba's initialisation: the initial time steps span slow and fast channels.
    """
    low, high = math.log(options.dt_min), math.log(options.dt_max)
    dt = torch.exp(torch.rand(size) * (high - low) + low).clamp(min=options.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # softplus⁻¹(dt), stable for small dt


def at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float32 or wider: scans accumulate long products (the kernels use fp32)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [tensor.to(dtype) for tensor in tensors]


class _NoDecayParameter(nn.Parameter):
    """A parameter that weight decay must leave alone (see :func:`no_decay`)."""

    _no_weight_decay = True


def no_decay(values: torch.Tensor) -> nn.Parameter:
    """A parameter tagged ``_no_weight_decay`` (decay rates, skips, time-step biases).

    The tag is a class attribute, which survives ``copy.deepcopy`` (it rebuilds parameters from
    their type), and an instance attribute, which survives pickling (it rebuilds a plain
    parameter with its ``__dict__``).
    """
    param = _NoDecayParameter(values)
    param._no_weight_decay = True
    return param
