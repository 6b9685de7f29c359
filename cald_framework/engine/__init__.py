"""The training engine: the trainer and its step, losses, LR schedules, checkpoints, and the
host side of the guidance contract (the contract itself is in :mod:`cald_framework.contracts`)."""

from .evaluation import evaluate, evaluate_model
from .finetune import FinetuneResult, finetune_teacher, save_model
from .guidance import GuidanceSetup
from .losses import LossConfig
from .step import StepResult
from .tensorfiles import read_tensors, write_tensors
from .trainer import StepEnd, Trainer, TrainResult, train
from .waypoints import read_waypoints

__all__ = [
    "FinetuneResult",
    "GuidanceSetup",
    "LossConfig",
    "StepEnd",
    "StepResult",
    "TrainResult",
    "Trainer",
    "evaluate",
    "evaluate_model",
    "finetune_teacher",
    "read_tensors",
    "read_waypoints",
    "save_model",
    "train",
    "write_tensors",
]
