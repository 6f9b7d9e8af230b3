"""NATS with JetStream (Debian's nats-server) as a plain process of the devstack.

nats-server has one client listener, so it listens on loopback and a socat relay (started and stopped with
it, by pid) carries the pods' connections from the bridge address to it. The monitoring endpoint (/jsz,
what the controller reads) is on loopback. JetStream state is fresh at every start.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

from devstack import ports, procs
from devstack.config import Layout

NAME = "nats"
RELAY = "nats-pod-relay"
ACCOUNT = "$G"


def running(layout: Layout) -> bool:
    return procs.running(NAME, pid_dir=layout.pids) is not None


def config(layout: Layout) -> str:
    store = layout.run / "nats" / "jetstream"
    return "\n".join(
        [
            f"listen: 127.0.0.1:{layout.nats_port}",
            f"http: 127.0.0.1:{layout.nats_monitor_port}",
            "server_name: devstack-nats",
            f'jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 1GB }}',
            "",
        ]
    )


def start(layout: Layout) -> None:
    server, socat = shutil.which("nats-server"), shutil.which("socat")
    if server is None or socat is None:
        raise RuntimeError("nats-server or socat is missing: run devstack/build-servers")
    if not running(layout):
        home = layout.run / "nats"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "nats.conf").write_text(config(layout))
        procs.spawn(
            NAME,
            [server, "-c", str(home / "nats.conf")],
            pid_dir=layout.pids,
            log_file=layout.logs / "nats.log",
        )
    if procs.running(RELAY, pid_dir=layout.pids) is None:
        procs.spawn(
            RELAY,
            [
                socat,
                f"TCP-LISTEN:{layout.nats_port},bind={layout.bridge_ip},reuseaddr,fork",
                f"TCP:127.0.0.1:{layout.nats_port}",
            ],
            pid_dir=layout.pids,
            log_file=layout.logs / "nats-pod-relay.log",
        )


def stop(layout: Layout) -> None:
    for name in (RELAY, NAME):
        entry = procs.running(name, pid_dir=layout.pids)
        if entry is not None:
            procs.stop(entry, pid_dir=layout.pids, grace=10)
    shutil.rmtree(layout.run / "nats", ignore_errors=True)


def jsz(layout: Layout, *, account: str = ACCOUNT) -> dict[str, object]:
    """The server's own /jsz answer with consumers (what the reader reads, for comparing in tests)."""
    url = f"{layout.nats_monitoring_url}/jsz?consumers=true&acc={urllib.parse.quote(account)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def _healthy(layout: Layout) -> bool:
    try:
        url = f"{layout.nats_monitoring_url}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def ready(layout: Layout) -> bool:
    return (
        ports.open_("127.0.0.1", layout.nats_port)
        and ports.open_(layout.bridge_ip, layout.nats_port)
        and _healthy(layout)
    )


def wait_ready(layout: Layout, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in (NAME, RELAY):
            if procs.running(name, pid_dir=layout.pids) is None:
                log = layout.logs / f"{name}.log"
                raise RuntimeError(f"{name} exited during start-up; last log lines:\n" + procs.log_tail(log))
        if ready(layout):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nats not ready after {timeout:.0f}s:\n" + procs.log_tail(layout.logs / "nats.log"))
