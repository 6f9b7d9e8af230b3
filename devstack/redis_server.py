"""Redis (Debian's redis-server, 7.0: XINFO GROUPS reports ``lag``) as a plain process of the devstack.

In memory only (no RDB, no AOF), so every start is fresh. Listens on loopback and on the pod bridge, in
plaintext on ``redis_port`` and over TLS on ``redis_tls_port`` (the devstack's server certificate from
``certs.ensure``; a client certificate is verified against the devstack CA when one is presented).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time

from devstack import certs, procs
from devstack.config import Layout

NAME = "redis"


def running(layout: Layout) -> bool:
    return procs.running(NAME, pid_dir=layout.pids) is not None


def start(layout: Layout) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is missing: run devstack/build-servers")
    if running(layout):
        return
    workdir = layout.run / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    tls = certs.ensure(layout)
    procs.spawn(
        NAME,
        [
            server,
            "--port",
            str(layout.redis_port),
            "--bind",
            "127.0.0.1",
            layout.bridge_ip,
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *_tls_arguments(layout.redis_tls_port, tls),
        ],
        pid_dir=layout.pids,
        log_file=layout.logs / "redis.log",
    )


def _tls_arguments(port: int, tls: certs.Certificates) -> list[str]:
    return [
        "--tls-port", str(port),
        "--tls-cert-file", str(tls.server_cert),
        "--tls-key-file", str(tls.server_key),
        "--tls-ca-cert-file", str(tls.ca),
        "--tls-auth-clients", "optional",
    ]  # fmt: skip


def stop(layout: Layout) -> None:
    entry = procs.running(NAME, pid_dir=layout.pids)
    if entry is not None:
        procs.stop(entry, pid_dir=layout.pids, grace=10)
    shutil.rmtree(layout.run / "redis", ignore_errors=True)


def _pong(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _tls_pong(layout: Layout) -> bool:
    context = ssl.create_default_context(cafile=str(certs.Certificates(layout.run / "certs").ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", layout.redis_tls_port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except (OSError, ssl.SSLError):
        return False


def ready(layout: Layout) -> bool:
    plain = all(_pong(host, layout.redis_port) for host in ("127.0.0.1", layout.bridge_ip))
    return plain and _tls_pong(layout)


def wait_ready(layout: Layout, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(layout):
            raise RuntimeError(
                "redis exited during start-up; last log lines:\n" + procs.log_tail(layout.logs / "redis.log")
            )
        if ready(layout):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis not ready after {timeout:.0f}s:\n" + procs.log_tail(layout.logs / "redis.log"))


def redis_cli(layout: Layout, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Redis's own redis-cli against this server."""
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(layout.redis_port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
