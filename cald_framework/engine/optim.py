"""The optimizer a spec names, with the usual exemptions from weight decay.

Decay shrinks weights towards zero, which is right for matrices but wrong for offsets and
scales: biases, normalisation weights and parameters a mixer tagged ``_no_weight_decay``
(Mamba's ``A_log`` and ``D``, for instance) keep their value unless the data moves them.

``training.optimizer`` picks AdamW (``adamw``), torch's fused AdamW kernel (``adamw_fused``,
where the device has one), bitsandbytes' 8-bit AdamW (``adamw_8bit``, GPU only: a quarter of
AdamW's state memory) or Adafactor from transformers (``adafactor``: factored second moments,
no first moment, so its state is a small fraction of AdamW's, on any device). ``betas`` and
``eps`` are AdamW's; Adafactor runs with a fixed learning rate from the schedule
(``relative_step`` and ``scale_parameter`` off) and its own defaults otherwise.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn
from torch.optim import AdamW, Optimizer

from ..contracts import no_weight_decay_names
from ..errors import CaldError
from ..spec.sections import TrainingSection
from .param_groups import optimizer_groups, split_by_decay

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def _norm_parameter_names(model: nn.Module) -> set[str]:
    return {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        if isinstance(module, _NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: 1-D or scalar, in a norm, or tagged."""
    one_dimensional = {name for name, param in model.named_parameters() if param.ndim < 2}
    return one_dimensional | _norm_parameter_names(model) | no_weight_decay_names(model)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups, decayed and not, over the trainable parameters in model order."""
    exempt = no_decay_names(model)
    return split_by_decay(model.named_parameters(), lambda name: name not in exempt, weight_decay)


def _check_trainable_dtypes(groups: list[dict[str, Any]]) -> None:
    if any(p.dtype == torch.float16 for group in groups for p in group["params"]):
        raise CaldError(
            "fp16 weights cannot be trained (no fp32 master copy, no loss scaling): store them "
            "in 'bf16' or 'fp32' (teacher.dtype / student.dtype)"
        )


def _devices(groups: list[dict[str, Any]]) -> set[str]:
    return {p.device.type for group in groups for p in group["params"]}


def _fused_adamw(groups: list[dict[str, Any]], **settings: Any) -> Optimizer:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    unsupported = _devices(groups) - set(_get_fused_kernels_supported_devices())
    if unsupported:
        raise CaldError(
            f"training.optimizer = 'adamw_fused' has no fused kernel on {', '.join(sorted(unsupported))}; "
            "use 'adamw'"
        )
    return AdamW(groups, fused=True, **settings)


def _adamw_8bit(groups: list[dict[str, Any]], **settings: Any) -> Optimizer:
    if importlib.util.find_spec("bitsandbytes") is None or _devices(groups) != {"cuda"}:
        raise CaldError("training.optimizer = 'adamw_8bit' needs bitsandbytes with a GPU")
    import bitsandbytes

    return bitsandbytes.optim.AdamW8bit(groups, **settings)


def _adafactor(groups: list[dict[str, Any]], lr: float) -> Optimizer:
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)


def build_optimizer(
    model: nn.Module,
    training: TrainingSection,
    lr: float | None = None,
    *,
    param_groups: bool = False,
) -> Optimizer:
    """``training.optimizer`` over ``model`` (``lr`` overrides ``training.lr``).

    With ``param_groups`` (the run's student or fine-tuned teacher) ``training.param_groups``
    and ``training.weight_decay_on`` apply and ``freeze`` groups lose their gradients;
    without, every trainable parameter trains at one rate with ``training.weight_decay``.
    """
    rate = training.lr if lr is None else lr
    if param_groups:
        groups = optimizer_groups(model, training, no_decay_names(model), rate)
    else:
        groups = parameter_groups(model, training.weight_decay)
    _check_trainable_dtypes(groups)
    adam = {"lr": rate, "betas": training.betas, "eps": training.eps}
    if training.optimizer == "adamw_fused":
        return _fused_adamw(groups, **adam)
    if training.optimizer == "adamw_8bit":
        return _adamw_8bit(groups, **adam)
    if training.optimizer == "adafactor":
        return _adafactor(groups, rate)
    return AdamW(groups, **adam)
