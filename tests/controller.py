"""Runs ``queue-autoscaler run`` / ``activator`` as real processes against the devstack, for tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import Devstack


@dataclass
class Process:
    """A queue-autoscaler process with its JSON log, and its metrics port once it printed it."""

    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.started_at = time.time()
        return self

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries

    def logged(self, event: str, **fields: object) -> list[dict[str, Any]]:
        """The JSON log entries of ``event`` whose fields have the given values."""
        return [
            e
            for e in self.logs()
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def port(self, name: str) -> int:
        """The port a 'listening' log line reported for ``name`` (e.g. metrics, reports, proxy)."""
        for entry in self.logs():
            if entry.get("event") == "listening" and entry.get("endpoint") == name:
                return int(entry["port"])
        raise LookupError(name)

    async def wait_port(self, name: str, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                return self.port(name)
            except LookupError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"{name} port never logged; log tail:\n{self.tail()}")

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"process exited with {self.proc.returncode}; log tail:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        port = await self.wait_port("metrics")
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
        return parse_metric(text, name, labels or {})


def parse_metric(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The first sample ``name`` whose labels include ``labels``, in Prometheus text; None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def queue_autoscaler(*args: str) -> list[str]:
    return [sys.executable, "-m", "autoscaler.cli", *args]


def controller(
    devstack: Devstack,
    log_path: Path,
    *,
    namespaces: Sequence[str],
    interval: float = 1.0,
    identity: str = "controller-test",
    leader_election: bool = False,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Process:
    argv = queue_autoscaler(
        "run",
        "--kubeconfig",
        str(devstack.kubeconfig),
        "--kafka-bootstrap",
        devstack.kafka_bootstrap,
        "--namespace",
        ",".join(namespaces),
        "--interval",
        str(interval),
        "--metrics-port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        "--report-port",
        "0",
        "--log-format",
        "json",
        "--identity",
        identity,
        "--leader-election",
        "true" if leader_election else "false",
        *extra,
    )
    full_env = {**os.environ, **(env or {})}
    if not full_env.get("QUEUE_AUTOSCALER_REPORT_TOKEN") and "--report-token-file" not in extra:
        argv.append("--report-insecure")  # a local test controller: no activator to authenticate
    return Process(argv, log_path, full_env)


def activator(
    devstack: Devstack,
    log_path: Path,
    *,
    namespaces: Sequence[str],
    controller_url: str | None = None,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Process:
    """``queue-autoscaler activator`` on 127.0.0.1 with free ports (logged as 'listening' proxy/metrics).

    ``controller_url``: the controller's report endpoint, e.g. ``http://127.0.0.1:<reports port>/v1/reports``;
    None: the activator reads the leader's URL from the controller Lease (pass ``--lease-namespace`` in
    ``extra``). The report token comes from ``env`` (QUEUE_AUTOSCALER_REPORT_TOKEN), as for ``controller``.
    """
    argv = queue_autoscaler(
        "activator",
        "--kubeconfig",
        str(devstack.kubeconfig),
        "--namespace",
        ",".join(namespaces),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        *(("--controller-url", controller_url) if controller_url is not None else ()),
        *extra,
    )
    full_env = {**os.environ, **(env or {})}
    return Process(argv, log_path, full_env)
