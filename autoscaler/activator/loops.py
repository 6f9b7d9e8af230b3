"""The event loop an activator process runs on: uvloop by default (its loop and socket transports are
written in C, which takes a large share of the per-request cost off the forwarding path), or asyncio's own.

The choice is explicit (``--event-loop``): uvloop is a dependency, so when it cannot be imported the
activator refuses to start and says so, rather than quietly running the slower loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from autoscaler import errors

EVENT_LOOPS: Final = ("uvloop", "asyncio")

T = TypeVar("T")


class EventLoopUnavailable(errors.AutoscalerError):
    """The event loop asked for cannot be used in this installation."""


def factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new event loop of the kind ``name``: SettingsError when ``name`` is not one of
    EVENT_LOOPS (the value of ``--event-loop``), EventLoopUnavailable when it is uvloop and uvloop cannot
    be imported."""
    if name not in EVENT_LOOPS:
        raise errors.SettingsError(f"--event-loop={name!r}: one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        raise EventLoopUnavailable(
            f"--event-loop=uvloop: uvloop cannot be imported ({exc}); install it, or pass "
            "--event-loop asyncio to run on asyncio's own loop"
        ) from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, event_loop: str) -> T:
    """Runs ``main`` to completion on a new loop of the kind ``event_loop``, as ``asyncio.run`` does."""
    try:
        make = factory(event_loop)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=make) as runner:
        return runner.run(main)


def running() -> str:
    """The kind of the running loop, for the logs: ``uvloop`` or ``asyncio``."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
