"""Pid files of the devstack: recorded from several threads at once, none ever lost."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from devstack import procs


def test_a_pid_file_being_written_is_skipped_not_deleted(tmp_path: Path) -> None:
    # What a reader sees while another thread is between truncating and writing a pid file.
    (tmp_path / "nats.pid").write_text("")
    procs.record("redis", os.getpid(), pid_dir=tmp_path)

    assert [entry.name for entry in procs.recorded(tmp_path)] == ["redis"]
    assert (tmp_path / "nats.pid").exists()


def test_components_recorded_while_others_look_up_theirs_are_all_found(tmp_path: Path) -> None:
    names = [f"component-{i}" for i in range(8)]
    stop = threading.Event()

    def look_up() -> None:
        while not stop.is_set():
            procs.recorded(tmp_path)

    readers = [threading.Thread(target=look_up) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(200):
            for name in names:
                procs.record(name, os.getpid(), pid_dir=tmp_path)
    finally:
        stop.set()
        for reader in readers:
            reader.join()

    assert sorted(entry.name for entry in procs.recorded(tmp_path)) == names
    assert all(procs.running(name, pid_dir=tmp_path) is not None for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.pid" for n in names)
