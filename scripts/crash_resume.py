"""Kill a real conversion with SIGKILL again and again, resume it, and check that nothing was lost.

A tiny offline workspace (see :mod:`cald_testing.workspaces`) is converted twice with
``python -m cald_framework run``: once straight through, once under fire. The second run is
killed ``--kills`` times, each kill either the moment a checkpoint write (or delete) is seen in
progress, i.e. a new ``.tmp-*`` entry in a checkpoints folder, or at a random time; after each
kill every checkpoint on disk must verify, and the run goes on with ``--resume``. At the end the
student and the fine-tuned teacher must equal the straight run's bitwise, and no leftover may
remain. Exit status 0 when all of that holds.

    python scripts/crash_resume.py --kills 6 --seed 0
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from cald_testing.workspaces import build_review_workspace

from cald_framework.engine.checkpoints import list_checkpoints, open_checkpoint
from cald_framework.engine.tensorfiles import read_tensors
from cald_framework.errors import CheckpointError
from cald_framework.layout import (
    CHECKPOINTS_DIR,
    SPEC_FILE,
    STUDENT_DIR,
    TARGET_DIR,
    TEACHER_CACHE_DIR,
)
from cald_framework.modeling import WEIGHTS_NAME

ENVIRONMENT = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
POLL_SECONDS = 0.001
#: every third kill falls at a random time, the others the moment a checkpoint write is seen
RANDOM_KILL_EVERY = 3
#: the student's epochs (24 steps): enough checkpoint writes left for every kill even when a
#: fast machine lets the watcher miss short-lived writes
STUDENT_EPOCHS = 4


@dataclass
class Tally:
    kills_mid_write: int = 0
    kills_at_random: int = 0
    #: kills after which a checkpoint write or delete was indeed left unfinished on disk
    interrupted_writes: int = 0
    resumes: int = 0
    checkpoints_verified: int = 0
    broken: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.kills_mid_write + self.kills_at_random


def _checkpoint_roots(output: Path) -> list[Path]:
    """The student's checkpoint folder and the teacher fine-tuning runs'.

    Named rather than searched for: a recursive search would walk into ``.tmp-*`` folders that
    the running process renames or removes meanwhile.
    """
    candidates = [output / CHECKPOINTS_DIR, *output.glob(f"{TEACHER_CACHE_DIR}/*/{CHECKPOINTS_DIR}")]
    return [path for path in candidates if path.is_dir()]


def _leftovers(output: Path) -> list[Path]:
    return [entry for root in _checkpoint_roots(output) for entry in root.glob(".tmp-*")]


def _verify(output: Path, tally: Tally) -> None:
    """Every finished checkpoint must open and verify; the broken ones are recorded."""
    for root in _checkpoint_roots(output):
        for path in list_checkpoints(root):
            try:
                open_checkpoint(path)
                tally.checkpoints_verified += 1
            except CheckpointError as error:
                tally.broken.append(str(error))


def _start(workspace: Path, output: str, resume: bool) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cald_framework", "run", SPEC_FILE]
    command += ["--set", f"experiment.output_dir={output}"] + (["--resume"] if resume else [])
    return subprocess.Popen(
        command, cwd=workspace, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(process: subprocess.Popen[bytes]) -> None:
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{process.args} failed ({process.returncode}):\n{stderr.decode()[-3000:]}")


def _wait_for_writes(
    process: subprocess.Popen[bytes], output: Path, count: int, stale: frozenset[Path] = frozenset()
) -> bool:
    """Wait until ``count`` new checkpoint writes or deletes were seen; ``False`` if the run ended.

    ``stale`` leftovers of an earlier kill do not count: the new process deletes them first.
    """
    seen: set[Path] = set()
    while process.poll() is None:
        seen.update(set(_leftovers(output)) - stale)
        if len(seen) >= count:
            return True
        time.sleep(POLL_SECONDS)
    return False


def _wait_for_time(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait ``seconds``; ``False`` if the run ended first."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def straight_run(workspace: Path) -> float:
    """Run ``straight/`` uninterrupted; returns the seconds until its first checkpoint write."""
    started = time.perf_counter()
    process = _start(workspace, "straight", resume=False)
    _wait_for_writes(process, workspace / "straight", 1)
    first_write = time.perf_counter() - started
    _finish(process)
    return first_write


def crash_and_resume(workspace: Path, kills: int, first_write: float, rng: random.Random) -> Tally:
    """Run ``crashed/`` with up to ``kills`` SIGKILLs, verifying the checkpoints after each.

    Random kills fall anywhere from start-up to two seconds past the first checkpoint write, so
    they also hit data loading and caching, teacher loading and the conversion.
    """
    output = workspace / "crashed"
    tally = Tally()
    resume = False
    finished = False
    while tally.kills < kills and not finished:
        before = frozenset(_leftovers(output))
        process = _start(workspace, output.name, resume)
        tally.resumes += resume
        resume = True
        mid_write = (tally.kills + 1) % RANDOM_KILL_EVERY != 0
        if mid_write:
            alive = _wait_for_writes(process, output, rng.randint(1, 4), before)
        else:
            alive = _wait_for_time(process, rng.uniform(0.0, first_write + 2.0))
        if not alive:
            print(f"  the run ended before kill {tally.kills + 1}")
            _finish(process)
            finished = True
            continue
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
        tally.kills_mid_write += mid_write
        tally.kills_at_random += not mid_write
        unfinished = len(set(_leftovers(output)) - before)
        tally.interrupted_writes += unfinished > 0
        _verify(output, tally)
        kind = "on a checkpoint write" if mid_write else "at a random time"
        print(f"  kill {tally.kills} {kind}: it left {unfinished} unfinished write(s) on disk")
    if not finished:
        tally.resumes += 1
        _finish(_start(workspace, output.name, resume=True))
    _verify(output, tally)
    return tally


def _weight_files(output: Path) -> list[Path]:
    """The student's weights and the fine-tuned teacher's, in a fixed order."""
    return [output / STUDENT_DIR / WEIGHTS_NAME] + sorted(
        output.glob(f"{TEACHER_CACHE_DIR}/*/{TARGET_DIR}/{WEIGHTS_NAME}")
    )


def _same_weights(a: Path, b: Path) -> tuple[bool, int]:
    left, right = read_tensors(a), read_tensors(b)
    same = left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)
    return same, len(left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs to survive (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--mode", default="target", help="guidance mode of the tiny spec")
    parser.add_argument("--workdir", type=Path, help="build the workspace here and keep it")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="cald-crash-") as temporary:
        workspace = args.workdir or Path(temporary)
        build_review_workspace(workspace, {"guidance.mode": args.mode, "training.epochs": STUDENT_EPOCHS})
        first_write = straight_run(workspace)
        print(f"uninterrupted run done (first checkpoint write after {first_write:.1f} s)")
        tally = crash_and_resume(workspace, args.kills, first_write, rng)
        files = list(zip(_weight_files(workspace / "straight"), _weight_files(workspace / "crashed")))
        compared = [_same_weights(a, b) for a, b in files]
        leftovers = _leftovers(workspace / "crashed")
    matched = sum(same for same, _ in compared)
    print(f"kills survived: {tally.kills} ({tally.kills_mid_write} on a checkpoint write, "
          f"{tally.kills_at_random} at a random time); {tally.interrupted_writes} left a write unfinished")
    print(f"resumes: {tally.resumes}; checkpoints verified after the kills: "
          f"{tally.checkpoints_verified}, broken: {len(tally.broken)}; leftovers at the end: {len(leftovers)}")
    print(f"weight files equal to the uninterrupted run's, bitwise: {matched} of {len(files)} "
          f"({', '.join(f'{count} tensors' for _, count in compared)})")
    for problem in tally.broken:
        print(f"broken: {problem}")
    ok = tally.kills >= args.kills and matched == len(files) > 0 and not tally.broken and not leftovers
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
