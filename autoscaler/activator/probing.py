"""Probe-driven wake-up: while a target has queued requests, probe its starting pods with their own readiness
probe, so a request is forwarded as soon as a pod can take it, not a kubelet period later.

Bounded: only targets with queued requests are probed, only addresses their EndpointSlices list as not yet
ready, at most ``max_addresses`` per round, one round every ``interval`` seconds. ``httpGet`` and
``tcpSocket`` probes are run as the kubelet runs them (HTTP 200-399 passes; a TCP connection passes);
``exec`` and ``grpc`` probes, and ports that cannot be resolved, fall back to waiting for the EndpointSlice.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp
import structlog
from yarl import URL

from autoscaler.activator import endpoints
from autoscaler.model import TargetKey
from autoscaler.observability.log_events import ActivatorLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """A readiness probe the activator can run itself."""

    kind: Literal["http", "tcp"]
    port: int
    path: str = "/"
    scheme: str = "http"
    host_header: str | None = None
    timeout: float = 1.0


def probe_from(raw: Mapping[str, object] | None, container_ports: Mapping[str, int]) -> Probe | None:
    """The Probe of a pod template's raw ``readinessProbe``; None for exec/grpc or an unresolvable port."""
    if raw is None:
        return None
    timeout = raw.get("timeoutSeconds")
    seconds = float(timeout) if isinstance(timeout, int) and timeout > 0 else 1.0
    http = raw.get("httpGet")
    if isinstance(http, Mapping):
        port = _port(http.get("port"), container_ports)
        scheme = str(http.get("scheme") or "HTTP").lower()
        if port is None or scheme not in ("http", "https"):
            return None
        path = http.get("path")
        host = http.get("host")
        return Probe(
            "http",
            port,
            path=path if isinstance(path, str) and path.startswith("/") else "/",
            scheme=scheme,
            host_header=_host_header(http.get("httpHeaders")) or (host if isinstance(host, str) else None),
            timeout=seconds,
        )
    tcp = raw.get("tcpSocket")
    if isinstance(tcp, Mapping):
        port = _port(tcp.get("port"), container_ports)
        return None if port is None else Probe("tcp", port, timeout=seconds)
    return None


def _port(value: object, container_ports: Mapping[str, int]) -> int | None:
    if isinstance(value, int):
        return value if 1 <= value <= 65535 else None
    if isinstance(value, str):
        return int(value) if value.isdigit() and 1 <= int(value) <= 65535 else container_ports.get(value)
    return None


def _host_header(headers: object) -> str | None:
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, Mapping) and str(header.get("name", "")).lower() == "host":
            value = header.get("value")
            return value if isinstance(value, str) else None
    return None


Candidates = Callable[[TargetKey], tuple[Probe, Collection[str]] | None]
"""target -> its probe and the not-ready addresses its EndpointSlices list now, or None: nothing to probe."""


class Prober:
    """Probes the starting pods of targets that have queued requests; ``passed(target, ip)`` on success."""

    def __init__(
        self,
        *,
        candidates: Candidates,
        passed: Callable[[TargetKey, str], None],
        queued: Callable[[TargetKey], int],
        interval: float = 0.03,
        max_addresses: int = 16,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._candidates = candidates
        self._passed = passed
        self._queued = queued
        self._interval = interval
        self._max_addresses = max_addresses
        self._sleep = sleep
        self._tasks: dict[TargetKey, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.probes_sent = 0

    def wake(self, target: TargetKey) -> None:
        """A request queued for ``target``: probe its starting pods until none is queued (idempotent)."""
        if target in self._tasks or self._candidates(target) is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(target), name=f"probe {target}")
        self._tasks[target] = task
        task.add_done_callback(lambda _: self._tasks.pop(target, None))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, target: TargetKey) -> None:
        """Every ``interval``: a probe to each listed not-ready address that has none in flight (a probe that
        hangs until its timeout never delays the others), at most ``max_addresses`` in flight. A probe that
        passes is acted on the moment it answers, not at the next round."""
        in_flight: dict[str, asyncio.Task[bool]] = {}
        try:
            while self._queued(target) > 0:
                found = self._candidates(target)
                if found is None:
                    return
                probe, addresses = found
                for ip, task in list(in_flight.items()):
                    if task.done():
                        del in_flight[ip]
                for ip in sorted(set(addresses) - in_flight.keys()):
                    if len(in_flight) >= self._max_addresses:
                        break
                    task = in_flight[ip] = asyncio.create_task(self._probe(probe, ip))
                    task.add_done_callback(functools.partial(self._settled, target, ip))
                await self._sleep(self._interval)
        finally:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    def _settled(self, target: TargetKey, ip: str, task: asyncio.Task[bool]) -> None:
        """A probe of ``ip`` ended: when it passed and the slices still list ``ip`` as not ready, the address
        takes requests now."""
        if task.cancelled() or not task.result():
            return
        found = self._candidates(target)
        if found is None or ip not in found[1]:
            return
        log.info(ActivatorLog.PROBE_PASSED, namespace=target.namespace, deployment=target.name, ip=ip)
        self._passed(target, ip)

    async def _probe(self, probe: Probe, ip: str) -> bool:
        self.probes_sent += 1
        try:
            address = endpoints.Address(ip, probe.port)
        except ValueError:
            return False
        try:
            async with asyncio.timeout(probe.timeout):
                if probe.kind == "tcp":
                    _, writer = await asyncio.open_connection(address.ip, address.port)
                    writer.close()
                    return True
                url = URL.build(scheme=probe.scheme, host=address.ip, port=address.port).join(URL(probe.path))
                headers = {"Host": probe.host_header} if probe.host_header else {}
                async with self._client().get(url, headers=headers, allow_redirects=False) as response:
                    return 200 <= response.status < 400
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
            return False

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=False, use_dns_cache=False),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session
