"""The activator's event loop: uvloop unless told otherwise, and never replaced silently."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
import uvloop

from autoscaler import cli, errors, settings
from autoscaler.activator import guard, loops
from autoscaler.observability import logging as obs_logging
from tests.unit.activator.conftest import make_stack


async def _kind() -> tuple[str, type[asyncio.AbstractEventLoop]]:
    return loops.running(), type(asyncio.get_running_loop())


def test_the_activator_runs_on_uvloop_unless_told_to_run_on_asyncio() -> None:
    parse = cli.build_parser().parse_args
    assert settings.activator_settings(parse(["activator"])).event_loop == "uvloop"
    chosen = settings.activator_settings(parse(["activator", "--event-loop", "asyncio"])).event_loop
    assert chosen == "asyncio"


def test_an_unknown_event_loop_stops_the_activator_at_start_with_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(obs_logging, "configure", lambda **_: None)
    for argv in (
        ["activator", "--event-loop", "trio"],
        ["activator", "--event-loop", "trio", "--processes", "2"],
    ):
        assert cli.main(argv) == 2
        assert (
            capsys.readouterr().err
            == "queue-autoscaler activator: --event-loop='trio': one of uvloop, asyncio\n"
        )


def test_each_choice_runs_the_coroutine_on_its_own_loop() -> None:
    name, kind = loops.run(_kind(), event_loop="uvloop")
    assert (name, kind) == ("uvloop", uvloop.Loop)
    name, kind = loops.run(_kind(), event_loop="asyncio")
    assert name == "asyncio"
    assert issubclass(kind, asyncio.BaseEventLoop)


def test_uvloop_that_cannot_be_imported_stops_the_start_naming_the_flag_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    main = _kind()
    with pytest.raises(loops.EventLoopUnavailable, match=r"--event-loop=uvloop: uvloop cannot be imported"):
        loops.run(main, event_loop="uvloop")
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED  # not left to warn "never awaited"
    assert isinstance(loops.EventLoopUnavailable("x"), errors.AutoscalerError)


async def _headers_never_end() -> tuple[bytes, bytes]:
    """(the answer to a second connection past the per-client bound, the answer to headers that never end)"""
    limits = guard.ConnectionLimits(header_timeout=0.2, max_connections_per_client=1)
    async with make_stack(connection_limits=limits) as stack:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: orders.shop\r\nX-Never-Ends: ")
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", stack.port)
        refused = await extra_reader.read(-1)
        stalled = await reader.read(-1)
        for opened in (writer, extra_writer):
            opened.close()
            await opened.wait_closed()
        return refused, stalled


def test_the_connection_bounds_are_answered_on_uvloop_as_on_asyncio() -> None:
    for event_loop in loops.EVENT_LOOPS:
        refused, stalled = loops.run(_headers_never_end(), event_loop=event_loop)
        assert refused.startswith(b"HTTP/1.1 503 "), (event_loop, refused)
        assert stalled.startswith(b"HTTP/1.1 408 "), (event_loop, stalled)
