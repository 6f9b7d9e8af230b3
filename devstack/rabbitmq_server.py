"""RabbitMQ (Debian's rabbitmq-server with its management plugin) as a plain process of the devstack.

The /usr/sbin wrapper switches to the rabbitmq user, so the server is started from /usr/lib/rabbitmq/bin
with every path in the environment. Its epmd is started first, by us, on its own loopback port: the server
finds it running and uses it, and ``stop`` ends it by its recorded pid (an epmd the server spawned itself
would outlive the server). State is fresh at every start. AMQP listens on loopback and on the pod bridge;
the management API on loopback only (the controller runs on the host).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

from devstack import ports, procs
from devstack.config import Layout

NAME = "rabbitmq"
EPMD = "rabbitmq-epmd"
NODE = "qa-rabbit@localhost"
USERNAME = "queue-autoscaler"
PASSWORD = "devstack"
BIN = "/usr/lib/rabbitmq/bin"


def home(layout: Layout) -> str:
    return str(layout.run / "rabbitmq")


def password_file(layout: Layout) -> str:
    """A file holding the management user's password, as a connections file names it."""
    return str(layout.run / "rabbitmq" / "password")


def environment(layout: Layout) -> dict[str, str]:
    """What rabbitmq-server and rabbitmqctl need to find this node (cookie in HOME, epmd port)."""
    base = home(layout)
    return {
        **os.environ,
        "HOME": f"{base}/home",
        "RABBITMQ_NODENAME": NODE,
        "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
        "RABBITMQ_LOG_BASE": f"{base}/log",
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
        "RABBITMQ_ENABLED_PLUGINS": "rabbitmq_management",
        "RABBITMQ_DIST_PORT": str(layout.rabbitmq_dist_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(layout.rabbitmq_epmd_port),
    }


def config(layout: Layout) -> str:
    return "\n".join(
        [
            f"listeners.tcp.1 = 127.0.0.1:{layout.rabbitmq_port}",
            f"listeners.tcp.2 = {layout.bridge_ip}:{layout.rabbitmq_port}",
            "management.tcp.ip = 127.0.0.1",
            f"management.tcp.port = {layout.rabbitmq_management_port}",
            "loopback_users = none",
            f"default_user = {USERNAME}",
            f"default_pass = {PASSWORD}",
            "log.console.level = warning",
            "",
        ]
    )


def running(layout: Layout) -> bool:
    return procs.running(NAME, pid_dir=layout.pids) is not None


def start(layout: Layout) -> None:
    """Starts epmd and the server with fresh state (whichever of the two is not running)."""
    if not os.path.exists(f"{BIN}/rabbitmq-server"):
        raise RuntimeError(f"{BIN}/rabbitmq-server is missing: run devstack/build-servers")
    base = home(layout)
    env = environment(layout)
    if procs.running(EPMD, pid_dir=layout.pids) is None:
        procs.spawn(
            EPMD,
            ["epmd", "-port", str(layout.rabbitmq_epmd_port), "-address", "127.0.0.1"],
            pid_dir=layout.pids,
            log_file=layout.logs / "rabbitmq-epmd.log",
            env=env,
        )
        ports.wait("127.0.0.1", layout.rabbitmq_epmd_port, timeout=10, what="epmd")
    if running(layout):
        return
    shutil.rmtree(base, ignore_errors=True)
    for sub in ("home", "mnesia", "log"):
        os.makedirs(f"{base}/{sub}")
    with open(f"{base}/rabbitmq.conf", "w") as conf:
        conf.write(config(layout))
    with open(password_file(layout), "w") as secret:
        secret.write(PASSWORD + "\n")
    procs.spawn(
        NAME,
        [f"{BIN}/rabbitmq-server"],
        pid_dir=layout.pids,
        log_file=layout.logs / "rabbitmq.log",
        env=env,
    )


def stop(layout: Layout) -> None:
    """Stops the server (SIGTERM is an orderly shutdown for it), then its epmd, by their pids."""
    for name, grace in ((NAME, 30.0), (EPMD, 5.0)):
        entry = procs.running(name, pid_dir=layout.pids)
        if entry is not None:
            procs.stop(entry, pid_dir=layout.pids, grace=grace)
    shutil.rmtree(home(layout), ignore_errors=True)


def management_answers(layout: Layout) -> bool:
    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"{layout.rabbitmq_management_url}/api/overview", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def ready(layout: Layout) -> bool:
    """AMQP on both addresses and the management API answering."""
    for host in ("127.0.0.1", layout.bridge_ip):
        if not ports.open_(host, layout.rabbitmq_port):
            return False
    return management_answers(layout)


def wait_ready(layout: Layout, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(layout):
            raise RuntimeError(
                "rabbitmq exited during start-up; last log lines:\n"
                + procs.log_tail(layout.logs / "rabbitmq.log")
            )
        if ready(layout):
            return
        time.sleep(0.25)
    raise RuntimeError(
        f"rabbitmq not ready after {timeout:.0f}s; last log lines:\n"
        + procs.log_tail(layout.logs / "rabbitmq.log")
    )


def rabbitmqctl(layout: Layout, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """RabbitMQ's own rabbitmqctl against this node."""
    return subprocess.run(
        [f"{BIN}/rabbitmqctl", "-n", NODE, *args],
        env=environment(layout),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_management(layout: Layout) -> None:
    """Stops the management plugin inside the running node (its HTTP listener closes); AMQP stays up."""
    _eval(layout, "application:stop(rabbitmq_management).")


def start_management(layout: Layout) -> None:
    _eval(layout, "application:start(rabbitmq_management).")


def _eval(layout: Layout, expression: str) -> None:
    done = rabbitmqctl(layout, "eval", expression)
    if done.returncode != 0 or done.stdout.strip() != "ok":
        raise RuntimeError(f"rabbitmqctl eval {expression!r} failed: {done.stdout}{done.stderr}")
