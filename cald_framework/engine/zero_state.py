"""The state of a student held by a DeepSpeed engine, in a training checkpoint.

DeepSpeed writes its own files (``engine.save_checkpoint``: the module's states, and every
process's partition of the fp32 weights and optimizer moments) into ``deepspeed/`` of the
checkpoint's scratch directory; :func:`.checkpoints.save_sharded_checkpoint` fsyncs them,
records their sizes and checksums in ``state.json`` and renames the directory once every
process has written, so they are as atomic and verified as the engine's own files.

DeepSpeed 0.19 reads them back with ``torch.load(weights_only=False)``
(``deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py``: its files hold Python
objects besides tensors), which unpickles. Before it reads, the engine has verified every
file against the checksums that this run's save recorded, so it only unpickles what a run of
this engine wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError

#: the folder of a checkpoint that holds DeepSpeed's files, and DeepSpeed's tag inside it
ZERO_DIR = "deepspeed"
_TAG = "engine"


def save_engine(engine: Any, staging: Path) -> None:
    """DeepSpeed's files of ``engine`` into ``staging`` (every process calls it)."""
    engine.save_checkpoint(str(staging / ZERO_DIR), tag=_TAG, save_latest=False)


def load_engine(engine: Any, checkpoint: Path) -> None:
    """Weights and optimizer state of the verified ``checkpoint`` back into ``engine``. The
    weights always come with the optimizer state: at stage 3, DeepSpeed restores them from the
    optimizer's fp32 partitions."""
    loaded, _ = engine.load_checkpoint(
        str(checkpoint / ZERO_DIR), tag=_TAG, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if loaded is None:
        raise CheckpointError(f"checkpoint {checkpoint} has no DeepSpeed state in {ZERO_DIR}/")
