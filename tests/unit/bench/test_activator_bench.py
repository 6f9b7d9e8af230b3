"""bench.activator's verdict on its own run: figures with failed requests are not a measurement."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from bench import activator


def level(concurrency: int, errors: dict[str, int], rate: int | None = None) -> dict[str, Any]:
    paths = {name: {"errors": errors.get(name, 0)} for name in activator.PATHS}
    return {"concurrency": concurrency, "rate": rate, "rounds": [{"paths": paths}, {"paths": paths}]}


def test_every_path_and_level_with_failed_requests_is_named_and_none_when_all_answered() -> None:
    clean = {"levels": [level(1, {}), level(32, {})], "paced": [level(32, {}, rate=2000)]}
    failing = {
        "levels": [level(1, {}), level(32, {"nginx": 3})],
        "paced": [level(32, {"activator": 10226}, rate=500)],
    }

    assert activator.failed_paths(clean) == []
    assert activator.failed_paths(failing) == [
        "nginx at 32 connections",
        "activator at 32 connections paced at 500/s",
    ]


def test_the_proxys_cpu_counts_the_processes_it_started() -> None:
    """A parent that only waits, its child burning 0.5 s of CPU: the parent's tree used at least that."""
    burn = (
        "import sys, time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
        "print('burnt', flush=True)\ntime.sleep(30)\n"
    )
    waits = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    with subprocess.Popen(
        [sys.executable, "-c", waits], stdout=subprocess.PIPE, start_new_session=True
    ) as parent:
        try:
            assert parent.stdout is not None
            assert parent.stdout.readline() == b"burnt\n"
            used = activator.process_tree_cpu(parent.pid)
        finally:
            os.killpg(parent.pid, signal.SIGKILL)
    assert 0.5 <= used < 5
