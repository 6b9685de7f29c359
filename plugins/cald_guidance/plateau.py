"""When the layer loss stops improving: the adaptive switch of ``hybrid`` (``T_h = "plateau"``).

Let ``l_1, l_2, ...`` be the layer loss (the unweighted ``ld`` term) of the applied steps, in
order, and ``W`` the window. Once ``2W`` values are in, after each step the mean of the last
``W`` values is compared with the mean of the ``W`` before them; the relative improvement
``(previous - current) / previous`` below ``min_improvement`` is a plateau. Target guidance
has then given what it can, and ``hybrid`` trains unguided from the next step on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from cald_framework.contracts import LossWeights, PluginOptions


class PlateauOptions(PluginOptions):
    #: steps averaged on each side of the comparison
    plateau_window: int = Field(default=100, gt=0)
    #: a relative improvement of the window mean below this is a plateau (0.01: less than 1 %)
    plateau_min_improvement: float = Field(default=0.01, ge=0, lt=1)


class PlateauDetector:
    """Follows the layer loss step by step and says when it has plateaued."""

    def __init__(self, window: int, min_improvement: float):
        self.window = window
        self.min_improvement = min_improvement
        self.recent: deque[float] = deque(maxlen=2 * window)

    def improvement(self) -> float | None:
        """The relative improvement of the last window's mean over the one before, once known."""
        if len(self.recent) < 2 * self.window:
            return None
        values = list(self.recent)
        previous = sum(values[: self.window]) / self.window
        current = sum(values[self.window :]) / self.window
        return (previous - current) / previous if previous > 0 else 0.0

    def add(self, loss: float) -> bool:
        """Record one step's layer loss; ``True`` when the loss has now plateaued."""
        self.recent.append(loss)
        change = self.improvement()
        return change is not None and change < self.min_improvement


class PlateauSwitch:
    """The switch of ``hybrid`` with ``T_h = "plateau"``: fires once, at the first plateau."""

    def __init__(self, options: PlateauOptions, weights: LossWeights):
        if weights.ld <= 0:
            raise ValueError(
                'guidance T_h = "plateau" watches the layer loss, but guidance.alpha_ld is 0'
            )
        self.detector = PlateauDetector(options.plateau_window, options.plateau_min_improvement)
        #: the ``guidance`` event of the switch, once it fired
        self.fired: dict[str, Any] | None = None

    def observe(self, step: int, losses: Mapping[str, float]) -> dict[str, Any] | None:
        """The switch event when step ``step``'s layer loss completes a plateau, else ``None``."""
        if self.fired is not None or not self.detector.add(losses["ld"]):
            return None
        detector = self.detector
        improvement = detector.improvement()
        self.fired = {
            "switch_step": step + 1,
            "layer_loss_improvement": improvement,
            "reason": (
                f"the layer loss averaged over steps {step - detector.window + 1}..{step} improved "
                f"{improvement:.2%} on the {detector.window} steps before, below "
                f"plateau_min_improvement {detector.min_improvement:.2%}: unguided from step {step + 1}"
            ),
        }
        return self.fired

    def summary(self) -> dict[str, Any]:
        """The switch for ``results.json``: when and why, or that no plateau came."""
        detector = self.detector
        settings = {"plateau_window": detector.window, "plateau_min_improvement": detector.min_improvement}
        if self.fired is None:
            return {"T_h": "plateau", **settings, "switch_step": None,
                    "reason": "the layer loss never plateaued: target guidance for the whole run"}
        return {"T_h": "plateau", **settings, **self.fired}

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.detector.recent), "fired": self.fired}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.recent.clear()
        self.detector.recent.extend(state["recent"])
        self.fired = state["fired"]
