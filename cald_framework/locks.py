"""Lock files that keep two runs from writing the same directory at the same time.

A lock is a small JSON file naming its owner: process id, host and start time. It is created
complete in one step (written aside, then hard-linked into place, which fails if a lock exists),
so a reader never sees half an owner. A lock whose owner is a dead process on this host is
stale: it is taken over with a :class:`StaleLockWarning`. An owner on another host cannot be
checked, so its lock counts as held until someone removes it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import CaldError


class LockHeldError(CaldError):
    """Another live run holds the lock."""


class StaleLockWarning(UserWarning):
    """A lock left by a dead process was taken over."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock."""

    pid: int
    host: str
    started: str

    @classmethod
    def me(cls) -> LockOwner:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.started})"

    def is_dead(self) -> bool:
        """Whether the owner is known to be gone: a process of this host that no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by another user
            return False
        return False


def read_owner(path: Path) -> LockOwner | None:
    """The owner recorded in the lock file at ``path``; ``None`` if there is none (or it is
    unreadable, which a complete-on-creation lock only is when something else wrote it)."""
    try:
        return LockOwner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _try_create(path: Path, owner: LockOwner) -> bool:
    """Create the lock at ``path`` naming ``owner``; ``False`` if a lock is already there."""
    aside = path.with_name(f"{path.name}.{owner.pid}.tmp")
    aside.write_text(json.dumps(asdict(owner)))
    try:
        os.link(aside, path)
        return True
    except FileExistsError:
        return False
    finally:
        aside.unlink()


def _remove_stale(path: Path, holder: LockOwner) -> None:
    """Remove the lock at ``path`` if it still names ``holder``: a process that took it over
    in the meantime keeps its own lock."""
    grabbed = path.with_name(f"{path.name}.{os.getpid()}.stale")
    try:
        os.rename(path, grabbed)
    except FileNotFoundError:
        return
    if read_owner(grabbed) != holder:
        try:
            os.link(grabbed, path)
        except FileExistsError:
            pass
    grabbed.unlink()


def _acquire(path: Path, what: str, owner: LockOwner, wait: bool, poll_seconds: float) -> None:
    announced = False
    while not _try_create(path, owner):
        holder = read_owner(path)
        if holder is not None and holder.is_dead():
            warnings.warn(
                f"{what}: taking over the stale lock {path} of {holder}, "
                "which is no longer running",
                StaleLockWarning,
                stacklevel=4,
            )
            _remove_stale(path, holder)
            continue
        described = str(holder) if holder is not None else "an unknown owner"
        if not wait:
            raise LockHeldError(
                f"{what} is in use by {described}: lock {path} (delete it if that run is gone)"
            )
        if not announced:
            waiting = f"{what} is in use by {described}; waiting for lock {path} to be released"
            print(waiting, file=sys.stderr)
            announced = True
        time.sleep(poll_seconds)


@contextmanager
def holding(
    path: Path, what: str, *, wait: bool = False, poll_seconds: float = 1.0
) -> Iterator[LockOwner]:
    """Hold the lock file at ``path`` for the duration of the block, released however it ends.

    ``what`` names the locked thing in messages. A live holder makes this raise
    :class:`LockHeldError` at once, or, with ``wait``, wait until the holder releases it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = LockOwner.me()
    _acquire(path, what, owner, wait, poll_seconds)
    try:
        yield owner
    finally:
        if read_owner(path) == owner:
            path.unlink(missing_ok=True)
