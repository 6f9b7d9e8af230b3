"""The bounded gate: requests held per target while no endpoint is ready, within max-pending and a timeout.

Every request the activator accepts is held here from admission to its response, so the per-target
counts (in flight + queued) are exactly what the controller needs, and the total is bounded.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import NamedTuple

from autoscaler import errors
from autoscaler.activator import endpoints, routing
from autoscaler.model import TargetConcurrency, TargetKey

# While a target wakes, a request that finds every ready endpoint at concurrency-per-replica waits this long
# for the next endpoint or a free slot, then goes to the least-loaded endpoint anyway: capacity that is
# not coming (max-replicas, a paused target) never turns into a timeout.
WAKE_SPILL_AFTER = 2.0


class Overloaded(errors.ActivatorError):
    """The activator already holds its maximum number of requests."""


class Closed(errors.ActivatorError):
    """The request was waiting when its target was removed or the activator stopped waiting."""


class Grant(NamedTuple):
    """An endpoint leased for one request; ``waited`` is the seconds it queued, None if it did not."""

    lease: endpoints.Lease
    waited: float | None


class Ticket:
    """One request held for a target, from admission (entering it) to its response (leaving it)."""

    __slots__ = ("_buffer", "_gate", "target")

    def __init__(self, buffer: Buffer, target: TargetKey) -> None:
        self._buffer = buffer
        self.target = target
        self._gate: _Gate

    def __enter__(self) -> Ticket:
        self._buffer._admit(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._buffer._leave(self)


class _Gate:
    __slots__ = ("closed", "in_flight", "queued", "waits")

    def __init__(self) -> None:
        self.in_flight = 0
        self.queued = 0
        self.closed: str | None = None
        self.waits: set[asyncio.Timeout] = set()


class Buffer:
    """Per-target counts and queues of the requests this activator holds, bounded by ``max_in_flight``."""

    def __init__(
        self,
        *,
        endpoints: endpoints.Endpoints,
        max_in_flight: int,
        clock: Callable[[], float],
        on_change: Callable[[TargetKey, TargetConcurrency], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._endpoints = endpoints
        self._on_change = on_change
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._gates: dict[TargetKey, _Gate] = {}
        self._window: dict[TargetKey, tuple[int, int]] = {}  # requests started, peak held since take_window
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued = 0
        self._unqueued = asyncio.Event()
        self._unqueued.set()
        self._closed: str | None = None

    @property
    def held(self) -> int:
        """Requests accepted and not answered yet, over all targets."""
        return self._held

    def concurrency(self) -> dict[TargetKey, TargetConcurrency]:
        """In-flight and queued requests of every target that has any."""
        return {
            target: TargetConcurrency(in_flight=gate.in_flight, queued=gate.queued)
            for target, gate in self._gates.items()
        }

    def held_of(self, target: TargetKey) -> tuple[int, int]:
        """(in flight, queued) requests of ``target`` now."""
        gate = self._gates.get(target)
        return (gate.in_flight, gate.queued) if gate is not None else (0, 0)

    def take_window(self) -> dict[TargetKey, tuple[int, int]]:
        """(requests started, peak in-flight + queued) per target since the previous call, which it ends."""
        window, self._window = self._window, {}
        return window

    def withdraw(self, target: TargetKey) -> None:
        """A held request of ``target`` that stalled (answered 408) is no activity: its start leaves the
        window, and the window's peak is capped at what the target holds without it."""
        entry = self._window.get(target)
        if entry is None:
            return
        gate = self._gates.get(target)
        others = gate.in_flight + gate.queued - 1 if gate is not None else 0
        started, peak = max(entry[0] - 1, 0), min(entry[1], max(others, 0))
        if started or peak:
            self._window[target] = (started, peak)
        else:
            del self._window[target]

    def queued(self, target: TargetKey) -> int:
        gate = self._gates.get(target)
        return gate.queued if gate is not None else 0

    def cold(self) -> frozenset[TargetKey]:
        """Targets with requests waiting for a first ready endpoint."""
        return frozenset(target for target, gate in self._gates.items() if gate.queued)

    def hold(self, target: TargetKey) -> Ticket:
        """Counts one request of ``target`` as in flight while the Ticket is entered (``with``); entering
        raises Overloaded when at the bound."""
        return Ticket(self, target)

    def _admit(self, ticket: Ticket) -> None:
        if self._held >= self._max_in_flight:
            raise Overloaded(f"the activator holds {self._held} requests, its maximum")
        target = ticket.target
        gate = self._gates.get(target)
        if gate is None:
            gate = self._gates[target] = _Gate()
        ticket._gate = gate
        gate.in_flight += 1
        self._held += 1
        started, peak = self._window.get(target, (0, 0))
        self._window[target] = (started + 1, max(peak, gate.in_flight + gate.queued))
        self._idle.clear()
        self._changed(target, gate)

    def _leave(self, ticket: Ticket) -> None:
        target, gate = ticket.target, ticket._gate
        gate.in_flight -= 1
        self._held -= 1
        self._changed(target, gate)
        if not gate.in_flight and not gate.queued and self._gates.get(target) is gate:
            del self._gates[target]
        if not self._held:
            self._idle.set()

    def _wake_cap(self, route: routing.Route, gate: _Gate) -> int | None:
        """concurrency-per-replica while the target has fewer ready endpoints than its held requests need
        (a wake-up or a scale-up in progress): the waiting requests spread over the endpoints that turn
        ready instead of all going to the first. None (no cap) once there are enough endpoints."""
        ready = len(self._endpoints.ready(route.target))
        demand = gate.in_flight + gate.queued
        needed = min(route.max_replicas, math.ceil(demand / route.concurrency_per_replica))
        return route.concurrency_per_replica if 0 < ready < needed else None

    def lease_now(self, ticket: Ticket, route: routing.Route) -> Grant | None:
        """An endpoint for a held request of ``route.target`` when one can be leased without waiting (and
        nothing makes the request wait: see ``lease``), else None."""
        gate = ticket._gate
        if gate.closed or self._closed:
            return None
        lease = self._endpoints.pick(route.target, cap=self._wake_cap(route, gate))
        return None if lease is None else Grant(lease=lease, waited=None)

    async def lease(
        self,
        ticket: Ticket,
        route: routing.Route,
        *,
        on_cold: Callable[[TargetKey], None],
        on_queued: Callable[[TargetKey], None] | None = None,
    ) -> Grant:
        """An endpoint for a held request of ``route.target``: at once, or after queueing for one.

        ``on_cold`` runs when a request finds no ready endpoint and nobody waiting before it; ``on_queued``
        for every request that queues (the reporter coalesces them into reports of the growing demand).
        Raises QueueFull, ActivationTimeout, or Closed.
        """
        target = route.target
        gate = ticket._gate
        reason = gate.closed or self._closed
        if reason is not None:
            raise Closed(reason)
        lease = self._endpoints.pick(target, cap=self._wake_cap(route, gate))
        if lease is not None:
            return Grant(lease=lease, waited=None)
        cold = not self._endpoints.ready(target)
        if not gate.queued and cold:
            on_cold(target)
        if gate.queued >= route.max_pending:
            if cold and on_queued is not None:
                on_queued(target)  # nothing may wait, but the target still wakes
            raise errors.QueueFull(f"{target} already has {gate.queued} requests waiting (max-pending)")
        start = self._clock()
        gate.queued += 1
        gate.in_flight -= 1
        self._queued += 1
        self._unqueued.clear()
        self._changed(target, gate)
        if on_queued is not None:
            on_queued(target)
        try:
            async with asyncio.timeout(route.activation_timeout) as wait:
                gate.waits.add(wait)
                try:
                    lease = await self._acquire(route, gate)
                finally:
                    gate.waits.discard(wait)
        except TimeoutError:
            reason = gate.closed or self._closed
            if reason is not None:
                raise Closed(reason) from None
            raise errors.ActivationTimeout(
                f"no endpoint of {target} turned ready within {route.activation_timeout:g}s"
            ) from None
        finally:
            gate.queued -= 1
            gate.in_flight += 1
            self._queued -= 1
            if not self._queued:
                self._unqueued.set()
            self._changed(target, gate)
        return Grant(lease=lease, waited=self._clock() - start)

    async def _acquire(self, route: routing.Route, gate: _Gate) -> endpoints.Lease:
        """Waits for an endpoint under the wake-up cap, or for any endpoint once the spill grace is over."""
        loop = asyncio.get_running_loop()
        spill_at: float | None = None
        while True:
            cap = self._wake_cap(route, gate)
            if cap is not None:
                spill_at = spill_at if spill_at is not None else loop.time() + WAKE_SPILL_AFTER
                if loop.time() >= spill_at:
                    cap = None
            lease = self._endpoints.pick(route.target, cap=cap)
            if lease is not None:
                return lease
            if cap is None:
                await self._endpoints.changed(route.target)
                continue
            try:
                async with asyncio.timeout_at(spill_at):
                    await self._endpoints.changed(route.target)
            except TimeoutError:
                continue

    def _changed(self, target: TargetKey, gate: _Gate) -> None:
        if self._on_change is not None and self._gates.get(target) is gate:
            self._on_change(target, TargetConcurrency(in_flight=gate.in_flight, queued=gate.queued))

    def close(self, target: TargetKey, reason: str) -> None:
        """Ends the wait of every request queued for ``target`` now, with Closed(reason)."""
        gate = self._gates.get(target)
        if gate is not None:
            gate.closed = reason
            _expire(gate.waits)
            del self._gates[target]

    def close_all(self, reason: str) -> None:
        """Ends every wait now and refuses any further wait, with Closed(reason)."""
        self._closed = reason
        for gate in self._gates.values():
            _expire(gate.waits)

    async def wait_unqueued(self) -> None:
        """Returns once no request is queued."""
        while self._queued:
            await self._unqueued.wait()

    async def wait_idle(self) -> None:
        """Returns once no request is held."""
        while self._held:
            await self._idle.wait()


def _expire(waits: set[asyncio.Timeout]) -> None:
    now = asyncio.get_running_loop().time()
    for wait in tuple(waits):
        if not wait.expired():
            wait.reschedule(now)
