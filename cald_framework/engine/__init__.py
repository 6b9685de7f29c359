"""The training engine: the loop, losses, LR schedules, checkpoints and the guidance interface."""

from .evaluation import evaluate, evaluate_model
from .finetune import FinetuneResult, finetune_teacher, save_model
from .guidance import (
    FrozenTeacherSchedule,
    GuidanceContext,
    GuidanceSchedule,
    GuidanceSetup,
    StepPlan,
    TaskOnly,
    TeacherSources,
    Waypoint,
    run_frozen,
)
from .losses import LossConfig, LossWeights
from .tensorfiles import read_tensors, write_tensors
from .trainer import StepEnd, TrainResult, train
from .waypoints import read_waypoints

__all__ = [
    "FinetuneResult",
    "FrozenTeacherSchedule",
    "GuidanceContext",
    "GuidanceSchedule",
    "GuidanceSetup",
    "LossConfig",
    "LossWeights",
    "StepEnd",
    "StepPlan",
    "TaskOnly",
    "TeacherSources",
    "TrainResult",
    "Waypoint",
    "evaluate",
    "evaluate_model",
    "finetune_teacher",
    "read_tensors",
    "read_waypoints",
    "run_frozen",
    "save_model",
    "train",
    "write_tensors",
]
