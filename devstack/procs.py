"""Start, find and stop the stack's daemons by the pid files they were recorded in.

A pid file holds the pid and the process start time (from /proc), so a recycled pid is never mistaken for a
component and never signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Recorded:
    name: str
    pid: int
    start_ticks: int


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command, which may itself contain spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    pid_dir: Path,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Recorded:
    """Starts ``argv`` in its own session with output appended to ``log_file`` and records its pid.

    posix_spawn, not subprocess.Popen: the daemon outlives the process that started it, and a Popen object
    would warn when it is collected with its child still running.
    """
    pid_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    program = argv[0] if "/" in argv[0] else (shutil.which(argv[0]) or argv[0])
    if cwd is not None:
        # posix_spawn has no cwd argument; run through env(1)'s --chdir so the daemon starts in ``cwd``.
        argv, program = ["env", f"--chdir={cwd}", program, *argv[1:]], "/usr/bin/env"
    with log_file.open("ab") as log, open(os.devnull, "rb") as devnull:
        pid = os.posix_spawn(
            program,
            list(argv),
            dict(env) if env is not None else dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull.fileno(), 0),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
            ],
            setsid=True,
        )
    return _write_record(name, pid, pid_dir=pid_dir)


def _write_record(name: str, pid: int, *, pid_dir: Path) -> Recorded:
    """Writes the pid file whole or not at all: the stack starts components from several threads, and a
    reader must never see a half-written file."""
    ticks = _start_ticks(pid) or 0
    path = pid_dir / f"{name}.pid"
    partial = pid_dir / f".{name}.pid.{os.getpid()}.{threading.get_ident()}"
    partial.write_text(f"{pid} {ticks}\n")
    os.replace(partial, path)
    return Recorded(name, pid, ticks)


def record(name: str, pid: int, *, pid_dir: Path) -> Recorded:
    """Records a process started elsewhere (e.g. a pod's process) so ``down`` can stop it."""
    pid_dir.mkdir(parents=True, exist_ok=True)
    return _write_record(name, pid, pid_dir=pid_dir)


def forget(name: str, *, pid_dir: Path) -> None:
    (pid_dir / f"{name}.pid").unlink(missing_ok=True)


def recorded(pid_dir: Path) -> list[Recorded]:
    """Every readable pid file. One that cannot be read or parsed is skipped, never deleted: it may belong
    to a component another thread is recording right now."""
    found: list[Recorded] = []
    for path in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
        try:
            pid_text, ticks_text = path.read_text().split()
            found.append(Recorded(path.stem, int(pid_text), int(ticks_text)))
        except (OSError, ValueError):
            continue
    return found


def alive(entry: Recorded) -> bool:
    ticks = _start_ticks(entry.pid)
    if ticks is None:
        return False
    if entry.start_ticks and ticks != entry.start_ticks:
        return False  # the pid was reused by another process
    try:
        state = Path(f"/proc/{entry.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def running(name: str, *, pid_dir: Path) -> Recorded | None:
    for entry in recorded(pid_dir):
        if entry.name == name and alive(entry):
            return entry
    return None


def stop(entry: Recorded, *, pid_dir: Path, grace: float = 10.0) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace`` seconds, then forget the pid file."""
    if alive(entry):
        _signal_group(entry.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(entry) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(entry):
            _signal_group(entry.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while alive(entry) and time.monotonic() < deadline:
                time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(entry.pid, os.WNOHANG)  # reap it if this process started it
    (pid_dir / f"{entry.name}.pid").unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
