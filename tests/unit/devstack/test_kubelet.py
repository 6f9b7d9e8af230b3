"""The local kubelet's decisions that need no stack: readiness across restarts, status write order, the
interpreter a ``python`` command runs, and the log tail the kubelet API serves."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace
from typing import Any

from devstack import kubelet_api
from devstack.config import layout
from devstack.kubelet import Kubelet, PodRuntime, ready_when_started, resolve_command


class SlowFirstCore:
    """Records pod status writes; the first write takes longer than the ones after it, as a busy API server
    connection may."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.calls = 0

    async def patch_namespaced_pod_status(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            for _ in range(20):
                await asyncio.sleep(0)
        self.written.append(body["status"])


def test_a_container_without_a_readiness_probe_is_ready_each_time_its_process_starts() -> None:
    assert ready_when_started(has_probe=False) is True
    assert ready_when_started(has_probe=True) is False


async def test_the_last_status_written_is_the_pods_latest_readiness_even_when_an_earlier_write_is_slower(
    tmp_path: Any,
) -> None:
    core = SlowFirstCore()
    kubelet = Kubelet(layout(), core)
    runtime = PodRuntime(
        uid="u", namespace="ns", name="p", ip="10.0.1.1", netns="n", veth="v", log_path=tmp_path / "log"
    )
    pod = SimpleNamespace(spec=SimpleNamespace(containers=[SimpleNamespace(name="c", image="i")]))

    not_ready = asyncio.create_task(kubelet._patch_status(runtime, pod, phase="Running"))
    await asyncio.sleep(0)
    runtime.ready = True
    ready = asyncio.create_task(kubelet._patch_status(runtime, pod, phase="Running"))
    await asyncio.gather(not_ready, ready)

    last = core.written[-1]
    assert [c["status"] for c in last["conditions"] if c["type"] == "Ready"] == ["True"]
    assert last["containerStatuses"][0]["ready"] is True


def test_a_python_command_runs_the_projects_interpreter_and_other_commands_run_as_given() -> None:
    assert resolve_command(["python", "-m", "devstack.workers.kafka_worker"]) == [
        sys.executable,
        "-m",
        "devstack.workers.kafka_worker",
    ]
    assert resolve_command(["python3", "-c", "pass"])[0] == sys.executable
    assert resolve_command(["sh", "-c", "python"]) == ["sh", "-c", "python"]
    assert resolve_command([]) == []


def test_the_log_tail_takes_the_last_lines_then_cuts_to_the_byte_limit() -> None:
    data = b"one\ntwo\nthree\n"
    assert kubelet_api.tail(data, None, None) == data
    assert kubelet_api.tail(data, 2, None) == b"two\nthree\n"
    assert kubelet_api.tail(data, 0, None) == b""
    assert kubelet_api.tail(data, 2, 5) == b"two\nt"
    assert kubelet_api.tail(data, 10, None) == data
