"""A port that is already taken: `run` and `activator` end with one line naming the port and its flag."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.controller import queue_autoscaler
from tests.stack import Devstack

pytestmark = pytest.mark.devstack


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on (as aiohttp would bind it: SO_REUSEADDR does not help)."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


async def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=120)


def said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What the process said besides its JSON log lines."""
    return [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("{")]


async def test_run_with_its_metrics_port_taken_exits_with_one_line_naming_the_port_and_flag(
    devstack: Devstack, namespace: str, taken_port: int
) -> None:
    done = await run(
        queue_autoscaler(
            "run",
            "--kubeconfig",
            str(devstack.kubeconfig),
            "--kafka-bootstrap",
            devstack.kafka_bootstrap,
            "--namespace",
            namespace,
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(taken_port),
            "--report-port",
            "0",
            "--report-insecure",
            "--leader-election",
            "false",
            "--log-format",
            "json",
        )
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert said(done) == [
        f"queue-autoscaler run: --metrics-port {taken_port}: cannot listen on 127.0.0.1:{taken_port}: the "
        "address is already in use (another process listens there); choose another port (0 picks a free one)"
    ]


async def test_activator_with_its_proxy_port_taken_exits_with_one_line_naming_the_port_and_flag(
    devstack: Devstack, namespace: str, taken_port: int
) -> None:
    done = await run(
        queue_autoscaler(
            "activator",
            "--kubeconfig",
            str(devstack.kubeconfig),
            "--namespace",
            namespace,
            "--host",
            "127.0.0.1",
            "--port",
            str(taken_port),
            "--metrics-port",
            "0",
            "--controller-url",
            "http://127.0.0.1:9/v1/reports",
            "--log-format",
            "json",
        )
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert said(done) == [
        f"queue-autoscaler activator: --port {taken_port}: cannot listen on 127.0.0.1:{taken_port}: the "
        "address is already in use (another process listens there); choose another port (0 picks a free one)"
    ]
