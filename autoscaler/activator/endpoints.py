"""Ready endpoint addresses per target, least-outstanding balancing, and waiting for the first one."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from autoscaler.model import TargetKey


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One ready endpoint: a pod IP (never a host name) and the port its container listens on."""

    ip: str
    port: int

    def __post_init__(self) -> None:
        canonical = _canonical_ip(self.ip)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"endpoint port {self.port!r} is not in 1-65535")
        object.__setattr__(self, "ip", canonical)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@functools.lru_cache(maxsize=8192)
def _canonical_ip(ip: str) -> str:
    """The address as ipaddress writes it; every EndpointSlice update names the same pods again."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise ValueError(f"endpoint ip {ip!r} is not an IP address") from None


class EndpointSink(Protocol):
    """What an EndpointSlice watcher feeds: the complete ready set of a target, after every change."""

    def update(self, target: TargetKey, addresses: Iterable[Address]) -> None: ...


class _Slot:
    """One address of a ready set and the requests currently sent to it."""

    __slots__ = ("address", "freed", "outstanding")

    def __init__(self, address: Address, freed: _Signal) -> None:
        self.address = address
        self.outstanding = 0
        self.freed = freed  # the target's signal: a request waiting for a free slot checks again


class Lease:
    """An endpoint picked for one request; ``release()`` it once the response is done (idempotent)."""

    __slots__ = ("_released", "_slot")

    def __init__(self, slot: _Slot) -> None:
        self._slot = slot
        self._released = False
        slot.outstanding += 1

    @property
    def address(self) -> Address:
        return self._slot.address

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slot.outstanding -= 1
            if self._slot.freed:
                self._slot.freed.notify_all()


class _Signal:
    """Wakes every current waiter at once; a waiter that registers later waits for the next call."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def __bool__(self) -> bool:
        return bool(self._waiters)

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    def notify_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Target:
    __slots__ = ("changed", "next_tie", "slots")

    def __init__(self) -> None:
        self.slots: dict[Address, _Slot] = {}
        self.next_tie = 0
        self.changed = _Signal()


class Endpoints:
    """The ready endpoint set of every target, as last reported by the EndpointSlice watcher.

    An address missing from an update is removed at once (requests already sent to it finish);
    the first address to appear wakes every request waiting for the target.
    """

    def __init__(self) -> None:
        self._targets: dict[TargetKey, _Target] = {}

    def update(self, target: TargetKey, addresses: Iterable[Address]) -> None:
        """Replaces the ready set of ``target``."""
        state = self._targets.get(target)
        wanted = frozenset(addresses)
        if state is None:
            if not wanted:
                return
            state = self._targets[target] = _Target()
        for gone in state.slots.keys() - wanted:
            del state.slots[gone]
        for address in sorted(address for address in wanted if address not in state.slots):
            state.slots[address] = _Slot(address, state.changed)
        if state.slots:
            state.changed.notify_all()
        elif not state.changed:
            del self._targets[target]

    def forget(self, target: TargetKey) -> None:
        """Drops the target's endpoints; requests waiting for it are woken and find none."""
        state = self._targets.pop(target, None)
        if state is not None:
            state.slots.clear()
            state.changed.notify_all()

    def ready(self, target: TargetKey) -> frozenset[Address]:
        state = self._targets.get(target)
        return frozenset(state.slots) if state is not None else frozenset()

    def outstanding(self, target: TargetKey) -> dict[Address, int]:
        """Requests sent to each ready address and not finished yet."""
        state = self._targets.get(target)
        if state is None:
            return {}
        return {address: slot.outstanding for address, slot in state.slots.items()}

    def pick(
        self, target: TargetKey, *, cap: int | None = None, avoid: Address | None = None
    ) -> Lease | None:
        """Leases the ready address with the fewest outstanding requests (ties in turn); None if none.

        With ``cap``, only an address with fewer than ``cap`` outstanding requests is leased. ``avoid`` (an
        address that just failed) is leased only when it is the only ready one.
        """
        state = self._targets.get(target)
        if state is None or not state.slots:
            return None
        if len(state.slots) == 1 and avoid is None:
            (only,) = state.slots.values()
            return None if cap is not None and only.outstanding >= cap else Lease(only)
        slots = list(state.slots.values())
        if avoid is not None and len(slots) > 1:
            slots = [slot for slot in slots if slot.address != avoid] or slots
        fewest = min(slot.outstanding for slot in slots)
        if cap is not None and fewest >= cap:
            return None
        ties = [slot for slot in slots if slot.outstanding == fewest]
        if len(ties) > 1:
            ties.sort(key=lambda slot: slot.address)
        slot = ties[state.next_tie % len(ties)]
        state.next_tie += 1
        return Lease(slot)

    async def changed(self, target: TargetKey) -> None:
        """Returns at the next update or forget of ``target``, when one of its requests finishes, or at
        ``wake``: callers check again."""
        state = self._targets.get(target)
        if state is None:
            state = self._targets[target] = _Target()
        try:
            await state.changed.wait()
        finally:
            if not state.slots and not state.changed and self._targets.get(target) is state:
                del self._targets[target]

    def wake(self, target: TargetKey) -> None:
        """Wakes the requests waiting in ``changed(target)`` without changing anything."""
        state = self._targets.get(target)
        if state is not None:
            state.changed.notify_all()

    async def acquire(self, target: TargetKey) -> Lease:
        """Waits until the target has a ready address and leases it; bound it with a timeout."""
        while True:
            lease = self.pick(target)
            if lease is not None:
                return lease
            await self.changed(target)
