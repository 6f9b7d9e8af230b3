"""The activator's event loop: uvloop unless told otherwise, and never replaced silently."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest
import uvloop

from autoscaler import cli, errors, settings
from autoscaler.activator import loops
from autoscaler.observability import logging as obs_logging


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
