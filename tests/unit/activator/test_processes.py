"""A multi-process activator: its settings, and the port its processes share."""

from __future__ import annotations

import socket

import pytest

from autoscaler import cli, errors, settings
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


def test_the_activator_runs_one_process_unless_told_and_refuses_metrics_ports_past_65535() -> None:
    parse = cli.build_parser().parse_args
    assert settings.activator_settings(parse(["activator"])).processes == 1
    assert settings.activator_settings(parse(["activator", "--processes", "4"])).processes == 4
    with pytest.raises(errors.SettingsError, match=r"--processes='0': an integer > 0"):
        settings.activator_settings(parse(["activator", "--processes", "0"]))
    with pytest.raises(errors.SettingsError, match=r"--metrics-port=65535 with --processes=2"):
        settings.activator_settings(parse(["activator", "--processes", "2", "--metrics-port", "65535"]))
