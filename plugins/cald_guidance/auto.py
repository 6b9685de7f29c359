"""The ``auto`` mode: the guidance the teacher's hidden-state drift calls for (Section 4.4 of the paper).

The paper finds that guiding along the teacher's path (trajectory, waypoint) pays off when
fine-tuning moves the hidden states little from the pretrained model's, as in its NLP tasks,
and that when they drift far, as in speech recognition, starting from the target teacher and
switching to unguided training (hybrid) does better. ``auto`` measures that drift on the
waypoints of the teacher's fine-tuning run, before the student is converted, and picks:

* drift at most ``drift_threshold``: ``waypoint``. It follows the same path that ``trajectory``
  would, from the waypoints the run already has, without training a second teacher alongside
  the student (twice the teacher compute), and the drift measured is that of those very
  waypoints.
* larger: ``hybrid`` with ``T_h = "plateau"``: target guidance until the layer loss stops
  improving, then unguided.

The drift compared is the mean cosine distance over layers ``1..L`` between the last waypoint
(the fine-tuned teacher) and the pretrained model: the ``mean`` column of ``cald analyze drift``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from pydantic import Field

from cald_framework.contracts import GuidanceContext, ModeChoice, PluginOptions, TeacherDrift

from .plateau import PlateauOptions

#: the default of ``drift_threshold``: a cosine distance of 0.2 is a cosine similarity of 0.8
DRIFT_THRESHOLD = 0.2


class AutoOptions(PlateauOptions):
    #: mean cosine distance (layers 1..L, fine-tuned vs pretrained) above which drift is large
    drift_threshold: float = Field(default=DRIFT_THRESHOLD, gt=0, le=2)
    #: steps between waypoint choices when ``waypoint`` is chosen (its ``T_w``)
    T_w: int | None = Field(default=None, gt=0)


def choose_mode(options: AutoOptions, drift: TeacherDrift) -> ModeChoice:
    """``waypoint`` when the final drift is at most the threshold, else plateau-switched ``hybrid``."""
    final = drift.means[-1]
    threshold = options.drift_threshold
    details = {"drift": final, "drift_threshold": threshold, "at_step": drift.steps[-1]}
    measured = f"mean hidden-state drift {final:.4f} at the teacher's step {drift.steps[-1]}"
    if final <= threshold:
        chosen: dict[str, Any] = {} if options.T_w is None else {"T_w": options.T_w}
        reason = (
            f"{measured} is at most drift_threshold {threshold:g}: the fine-tuned teacher stays "
            "close to the pretrained model, so the student follows its waypoints"
        )
        return ModeChoice("waypoint", chosen, reason, details)
    chosen = {
        "T_h": "plateau",
        "plateau_window": options.plateau_window,
        "plateau_min_improvement": options.plateau_min_improvement,
    }
    reason = (
        f"{measured} is above drift_threshold {threshold:g}: the fine-tuned teacher is far from "
        "the pretrained model, so the student starts from it under target guidance and trains "
        "unguided once the layer loss plateaus"
    )
    return ModeChoice("hybrid", chosen, reason, details)


def never_built(options: AutoOptions, context: GuidanceContext) -> NoReturn:
    """``auto`` is replaced by the mode it chooses before training; a trainer never builds it."""
    raise ValueError(
        "guidance mode 'auto' chooses its mode from the teacher's drift before the student is "
        "converted; run it with `cald run`, not on a trainer directly"
    )
