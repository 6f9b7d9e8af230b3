"""Reserving the port a multi-process activator's processes share."""

from __future__ import annotations

import socket

import pytest

from autoscaler.activator import processes


def test_a_reserved_port_takes_listeners_with_reuse_port_and_refuses_others() -> None:
    port, held = processes.reserve("127.0.0.1", 0)
    try:
        assert port > 0
        listeners = []
        for _ in range(2):
            sock = socket.socket()
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
        plain = socket.socket()
        with pytest.raises(OSError, match="in use"):
            plain.bind(("127.0.0.1", port))
        plain.close()
        for sock in listeners:
            sock.close()
    finally:
        for sock in held:
            sock.close()
