"""Several activator processes on one listening port (SO_REUSEPORT), supervised by the parent.

The parent reserves the port (bound, never listening, so that port 0 becomes one port for all), forks one
child per process and waits. Each child is a whole activator: its own watches, buffer and reports under
its own identity; the kernel spreads new connections over the children's listening sockets. A child that
exits while the activator is not stopping is logged, the others are stopped, and the parent exits 1: the
activator never goes on serving with fewer processes than it was given. SIGTERM and SIGINT are passed on
to every child, each drains as a single activator does, and the parent exits with the worst exit code.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType

import structlog

from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def reserve(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Binds ``host``:``port`` with SO_REUSEPORT for every address ``host`` resolves to, without
    listening; returns the port (the one picked when ``port`` is 0) and the sockets, to keep open while
    the children listen on the same port."""
    held: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return port, held


def supervise(children: Sequence[Callable[[], int]]) -> int:
    """Runs each of ``children`` in a forked process until all have exited; see the module docstring.

    Returns 1 when a child exited on its own; otherwise (after a stop signal) the worst exit code of the
    children, 0 when every one drained and exited 0.
    """
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_child, args=(run,), name=f"activator-{index}", daemon=False)
        for index, run in enumerate(children)
    ]
    stopping = False
    died = False
    worst = 0

    def stop_all(signum: int) -> None:
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        for index, proc in enumerate(procs):
            proc.start()
            log.info(ActivatorLog.PROCESS_STARTED, process=index, pid=proc.pid, processes=len(procs))
        running = dict(enumerate(procs))
        while running:
            multiprocessing.connection.wait([proc.sentinel for proc in running.values()])
            for index, proc in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[index]
                code = proc.exitcode if proc.exitcode >= 0 else 128 - proc.exitcode
                if stopping:
                    log.info(ActivatorLog.PROCESS_EXITED, process=index, pid=proc.pid, exit_code=code)
                    worst = max(worst, code)
                    continue
                log.error(
                    ActivatorLog.PROCESS_DIED,
                    process=index,
                    pid=proc.pid,
                    exit_code=code,
                    left=len(running),
                    action="stopping the other processes; the activator exits 1",
                )
                stopping = died = True
                stop_all(signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if died else worst


def _child(run: Callable[[], int]) -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)  # until the child's own loop takes them over
    sys.exit(run())
