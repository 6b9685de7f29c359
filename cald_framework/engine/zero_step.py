"""The update of a student held by a DeepSpeed engine, under the engine's rules.

DeepSpeed reduces gradients inside ``backward`` and clips (``gradient_clipping`` of its
configuration) and updates inside ``step``, where it also skips the update, on every process,
when the global gradient norm is not finite. The engine's own rule (no update when a loss is not
finite on any process) is reduced to DeepSpeed's: a micro-batch whose loss is not finite
back-propagates NaN, which the gradient reduction carries into every process's global norm.
Each micro-batch's loss is already divided by the number of micro-batches, so DeepSpeed does not
divide it again (``scale_wrt_gas=False``), and the accumulation boundary is the step's last
micro-batch, whatever ``gradient_accumulation_steps`` says. The LR schedule is the engine's
(DeepSpeed is given none), so it is stepped once per optimizer step as in every other layout.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch.optim import Optimizer


def zero_backward(engine: Any, loss: torch.Tensor, *, last: bool) -> None:
    """Back-propagate one micro-batch's (already divided) ``loss`` into the engine's gradients."""
    if not bool(torch.isfinite(loss.detach())):
        loss = loss * float("nan")  # so that DeepSpeed sees it in the gradient norm and skips
    engine.set_gradient_accumulation_boundary(last)
    engine.backward(loss, scale_wrt_gas=False)


def zero_update(engine: Any, max_norm: float | None) -> tuple[bool, torch.Tensor | None]:
    """Clip and step (DeepSpeed skips it when the gradient norm is not finite); whether the
    update was applied, and the gradient norm before clipping when clipping is on."""
    engine.step()
    if max_norm is None:
        return engine.was_step_applied(), None
    return engine.was_step_applied(), torch.tensor(float(engine.get_global_grad_norm()))


def drop_empty_groups(optimizer: Optimizer) -> None:
    """Remove the optimizer's groups without parameters, as DeepSpeed does when it takes the
    optimizer: the LR schedule, built next, must hold one rate per group DeepSpeed keeps."""
    optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]


def release_engine(accelerator: Accelerator, engine: Any) -> None:
    """Take down ``engine`` once the run's weights are gathered (every process calls it): its
    hooks and buffers are removed while the processes still run together, rather than left
    to the end of the interpreter, where ZeRO-3's teardown aborted now and then."""
    engine.destroy()
    accelerator.wait_for_everyone()
