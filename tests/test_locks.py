"""Lock files: a second process is refused or waits, stale locks are taken over, errors release."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cald_framework import cli
from cald_framework.locks import LockHeldError, StaleLockWarning, holding, read_owner
from cald_framework.run.pipeline import RUN_LOCK

#: holds the lock given as argv[1] until the file argv[2] appears, saying "held" once it has it
HOLDER = """
import sys, time
from pathlib import Path
from cald_framework.locks import holding
with holding(Path(sys.argv[1]), "thing", wait=True, poll_seconds=0.05):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    """Another process holding ``tmp_path / "lock"`` until ``tmp_path / "release"`` exists."""
    lock, release = tmp_path / "lock", tmp_path / "release"
    process = _holder(lock, release)
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield process, lock, release
    release.touch()
    process.wait(timeout=30)


def _holder(lock: Path, release: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), str(release)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_is_refused_with_one_line_naming_lock_and_owner(
    holder: tuple[subprocess.Popen[str], Path, Path],
) -> None:
    process, lock, _ = holder
    owner = read_owner(lock)
    assert owner is not None and owner.pid == process.pid and owner.host == socket.gethostname()
    with pytest.raises(LockHeldError) as error:
        with holding(lock, "output_dir runs/x"):
            pass
    assert str(error.value) == (
        f"output_dir runs/x is in use by pid {process.pid} on {owner.host} (since {owner.started}): "
        f"lock {lock} (delete it if that run is gone)"
    )


def test_a_waiting_process_gets_the_lock_once_the_holder_releases_it(tmp_path: Path) -> None:
    lock, release = tmp_path / "lock", tmp_path / "release"
    try:
        with holding(lock, "thing") as owner:
            waiter = _holder(lock, release)
            assert waiter.stderr is not None
            assert waiter.stderr.readline() == (
                f"thing is in use by {owner}; waiting for lock {lock} to be released\n"
            )
            time.sleep(0.3)
            assert waiter.poll() is None and _owner_pid(lock) == owner.pid  # still waiting
        assert waiter.stdout is not None and waiter.stdout.readline() == "held\n"
        assert _owner_pid(lock) == waiter.pid
    finally:
        release.touch()
    assert waiter.wait(timeout=30) == 0
    assert not lock.exists()


def _owner_pid(lock: Path) -> int:
    owner = read_owner(lock)
    assert owner is not None
    return owner.pid


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    dead = _dead_pid()
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "then"}))
    with pytest.warns(StaleLockWarning, match=f"thing: taking over the stale lock {lock} of pid {dead} on "):
        with holding(lock, "thing") as owner:
            assert read_owner(lock) == owner
    assert not lock.exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "started": "then"}))
    with pytest.raises(LockHeldError, match="in use by pid .* on elsewhere"):
        with holding(lock, "thing"):
            pass
    assert lock.exists()


def test_the_lock_is_released_when_the_block_fails(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with pytest.raises(RuntimeError):
        with holding(lock, "thing") as owner:
            assert read_owner(lock) == owner
            raise RuntimeError("boom")
    assert not lock.exists()
    with holding(lock, "thing"):  # free again
        pass


def test_a_run_into_an_output_dir_in_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cald_testing.workspaces import build_review_workspace

    build_review_workspace(tmp_path, {"guidance.mode": "unguided", "student.init": "source"})
    monkeypatch.chdir(tmp_path)
    release = tmp_path / "release"
    process = _holder(tmp_path / "run" / RUN_LOCK, release)
    try:
        assert process.stdout is not None and process.stdout.readline() == "held\n"
        assert cli.main(["run", "spec.toml"]) == 2
    finally:
        release.touch()
        process.wait(timeout=30)
    printed = capsys.readouterr().err.strip()
    assert f"output_dir run is in use by pid {process.pid} on " in printed
    assert printed.endswith(f"lock run/{RUN_LOCK} (delete it if that run is gone)")
    assert not (tmp_path / "run" / "spec.toml").exists()  # refused before writing anything
