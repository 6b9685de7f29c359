"""AdamW with the usual exemptions from weight decay.

Decay shrinks weights towards zero, which is right for matrices but wrong for offsets and
scales: biases, normalisation weights and parameters a mixer tagged ``_no_weight_decay``
(Mamba's ``A_log`` and ``D``, for instance) keep their value unless the data moves them.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import AdamW

from ..contracts import no_weight_decay_names
from ..spec.sections import TrainingSection

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
    """Two AdamW groups, decayed and not, over the trainable parameters in model order."""
    exempt = no_decay_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for name, p in trainable if name not in exempt], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name in exempt], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, training: TrainingSection, lr: float | None = None) -> AdamW:
    """AdamW over ``model`` with the settings of ``training`` (``lr`` overrides its rate)."""
    return AdamW(
        parameter_groups(model, training.weight_decay),
        lr=training.lr if lr is None else lr,
        betas=training.betas,
        eps=training.eps,
    )
