"""Is anything listening on host:port, and waiting until it is."""

from __future__ import annotations

import socket
import time


def open_(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait(host: str, port: int, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not open_(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} is not listening on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)
