"""A deadline that moves often and fires rarely: one timer, never cancelled or created on the hot path.

Moving the deadline later only records it; the timer, when it fires early, re-arms itself for the rest. So a
kept-alive connection that sets its deadline on every request creates a timer only when the deadline moves
earlier than the pending one, or when the timer has fired.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    """Calls ``on_due`` once the loop's time reaches the deadline last ``set``, unless ``clear``-ed first."""

    __slots__ = ("_due", "_loop", "_on_due", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_due: Callable[[], None]) -> None:
        self._loop = loop
        self._on_due = on_due
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None

    def set(self, due: float) -> None:
        """The deadline is ``due`` (the loop's time) from now on."""
        self._due = due
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(due, self._fire)

    def clear(self) -> None:
        """No deadline (the pending timer, if any, fires and finds none)."""
        self._due = None

    def cancel(self) -> None:
        """No deadline, and no timer left pending (when the owner goes away)."""
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._fire)
            return
        self._due = None
        self._on_due()
