"""Pushes this activator's per-target concurrency to the controller: periodically, and at once when poked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import aiohttp
import structlog

from autoscaler.activator import metrics as activator_metrics
from autoscaler.model import ConcurrencyReport, TargetConcurrency, TargetKey

log = structlog.get_logger(__name__)


class Poker(Protocol):
    """Told when a request arrives for a target with no ready endpoint."""

    def poke(self, target: TargetKey) -> None: ...


class ConcurrencySource(Protocol):
    """Where the reporter reads the numbers it sends."""

    def concurrency(self) -> dict[TargetKey, TargetConcurrency]: ...

    def cold(self) -> frozenset[TargetKey]: ...


class Reporter:
    """POSTs ``ConcurrencyReport.to_json()`` to ``url`` every ``interval`` seconds and right after a poke.

    ``url`` may be a callable, asked before every report: the controller leader can change; None means no
    leader is known right now, and the report is skipped (counted as ``no-leader``).

    Every POST is bounded by ``timeout``; a failure is logged and counted and the next report follows on
    schedule. ``token`` may be a callable, read before every report (projected tokens rotate).
    """

    def __init__(
        self,
        *,
        url: str | Callable[[], str | None],
        token: str | Callable[[], str],
        activator: str,
        source: ConcurrencySource,
        metrics: activator_metrics.ActivatorMetrics,
        interval: float = 1.0,
        timeout: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be > 0")
        self._url = url
        self._token = token
        self._activator = activator
        self._source = source
        self._metrics = metrics
        self._interval = interval
        self._timeout = timeout
        self._session = session
        self._wake = asyncio.Event()
        self._poked: set[TargetKey] = set()

    def poke(self, target: TargetKey) -> None:
        """Sends a report as soon as possible, naming ``target`` as cold."""
        self._poked.add(target)
        self._wake.set()

    def snapshot(self) -> ConcurrencyReport:
        return ConcurrencyReport(
            activator=self._activator,
            targets=self._source.concurrency(),
            cold=self._source.cold() | self._poked,
        )

    async def run(self) -> None:
        """Reports until cancelled."""
        if self._session is not None:
            await self._loop(self._session)
            return
        async with aiohttp.ClientSession(trust_env=False) as session:
            await self._loop(session)

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while True:
            if not self._wake.is_set():
                try:
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            await self.report(session=session)

    async def report(self, *, session: aiohttp.ClientSession) -> bool:
        """Sends one report now; True when the controller accepted it. Never raises but on cancellation."""
        poked = frozenset(self._poked)
        report = self.snapshot()
        url = self._url() if callable(self._url) else self._url
        if url is None:
            self._metrics.report("no-leader")
            log.debug("no controller leader known; report skipped")
            return False
        try:
            token = self._token() if callable(self._token) else self._token
            async with session.post(
                url,
                json=report.to_json(),
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            self._metrics.report("failed")
            log.warning("concurrency report failed", url=url, error=repr(exc))
            return False
        if not 200 <= status < 300:
            self._metrics.report("rejected")
            log.warning("concurrency report rejected", url=url, status=status)
            return False
        self._metrics.report("ok")
        self._poked -= poked
        return True
