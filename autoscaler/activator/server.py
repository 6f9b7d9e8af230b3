"""The activator's HTTP server: what the watchers feed, the request path, draining, and ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from aiohttp import hdrs
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.activator import (
    buffer,
    cloudevents,
    endpoints,
    guard,
    http1,
    messages,
    probing,
    proxy,
    reporter,
    routing,
)
from autoscaler.activator import metrics as activator_metrics
from autoscaler.model import TargetConcurrency, TargetKey
from autoscaler.observability.log_events import ActivatorLog
from autoscaler.policy import annotations as policy_annotations

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class DrainResult:
    """How a drain ended: ``left`` requests were still held when it stopped waiting (0: all answered)."""

    left: int
    timed_out: bool


class Activator:
    """Routes, endpoints, the bounded buffer and the forwarder of one activator process.

    The route source calls ``apply_deployment``/``remove_target``; the EndpointSlice watcher calls
    ``endpoints.update(target, addresses)``; the reporter reads ``concurrency()`` and ``cold()``.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        max_in_flight: int = 10_000,
        limits: proxy.Limits | None = None,
        connection_limits: guard.ConnectionLimits | None = None,
        retry_backoff: float = 0.1,
        retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cluster_domain: str = routing.CLUSTER_DOMAIN,
        cross_namespace_hosts: bool = False,
        poker: reporter.Poker | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.metrics = activator_metrics.ActivatorMetrics(registry)
        self.routes = routing.RouteTable(cluster_domain=cluster_domain, cross_namespace=cross_namespace_hosts)
        self._refused: Mapping[TargetKey, errors.AnnotationProblem] = {}
        self.endpoints = endpoints.Endpoints()
        self.buffer = buffer.Buffer(endpoints=self.endpoints, max_in_flight=max_in_flight, clock=clock)
        self.poker = poker
        # Set by the EndpointSlice feed when it probes starting pods; woken by every queued request.
        self.prober: probing.Prober | None = None
        # Set by the EndpointSlice feed: told of an address that refused a connection.
        self.on_refused: Callable[[TargetKey, endpoints.Address], None] | None = None
        self._limits = limits = limits or proxy.Limits()
        self.connection_limits = connection_limits or guard.ConnectionLimits()
        self._forwarder = proxy.Forwarder(limits=limits, session=session)
        self._retry_backoff = retry_backoff
        self._retry_sleep = retry_sleep
        self._clock = clock
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    # -- what the route source calls -------------------------------------------------------------

    def apply_deployment(
        self,
        *,
        namespace: str,
        name: str,
        annotations: Mapping[str, str],
        created: datetime | None = None,
    ) -> routing.Route | None:
        """Routes a Deployment from its annotations (parsed by ``policy.annotations``, the contract's only
        parser); without ``http-service`` its route is removed. ``created`` is its creationTimestamp, which
        decides between two ``http-host`` claims of one host.

        Raises PolicyError (every bad key at once) and leaves the current route, if any, as it was: the
        controller leaves the target untouched too.
        """
        target = TargetKey(namespace, name)
        policy = policy_annotations.parse(annotations)
        route = None if policy is None else routing.route_for(target, policy, created=created)
        if route is None:
            self.remove_target(target)
        else:
            self.put_route(route)
        return route

    def put_route(self, route: routing.Route) -> None:
        old = self.routes.put(route)
        target = route.target
        self.metrics.track(target, held=lambda: self.buffer.held_of(target))
        if old != route:
            _bound(route.target).info(
                ActivatorLog.ROUTE_UPDATED,
                hosts=sorted(self.routes.hosts_of(route.target)),
                service=route.service,
                port=route.port,
                cloudevents=route.cloudevents.enabled,
            )
        self._log_claims()

    def _log_claims(self) -> None:
        """Logs each ``http-host`` claim that became refused or granted since the last change."""
        refused = self.routes.refused()
        for target, problem in refused.items():
            if self._refused.get(target) != problem:
                _bound(target).warning(ActivatorLog.HOST_REFUSED, problem=str(problem))
        for target in self._refused.keys() - refused.keys():
            route = self.routes.get(target)
            if route is not None and route.host is not None:
                _bound(target).info(ActivatorLog.HOST_GRANTED, host=route.host)
        self._refused = refused

    def remove_target(self, target: TargetKey) -> None:
        """Stops routing a Deployment: its queued requests get 503 now, its metric series go away.

        Its endpoints stay as the EndpointSlice watcher last set them (``endpoints.forget`` drops them).
        """
        old = self.routes.remove(target)
        self.buffer.close(target, f"{target} is no longer routed by this activator")
        self.metrics.forget(target)
        if old is not None:
            _bound(target).info(ActivatorLog.ROUTE_REMOVED)
            self._log_claims()

    # -- what the reporter reads -----------------------------------------------------------------

    def concurrency(self) -> dict[TargetKey, TargetConcurrency]:
        """In-flight and queued requests of every routed target, zeros included."""
        held = self.buffer.concurrency()
        window = self.buffer.take_window()  # each report covers the requests since the previous one
        idle = TargetConcurrency(in_flight=0, queued=0)
        found = {}
        for route in self.routes.routes():
            now = held.get(route.target, idle)
            started, peak = window.get(route.target, (0, 0))
            found[route.target] = dataclasses.replace(now, started=started, peak=max(peak, now.total))
        return found

    def cold(self) -> frozenset[TargetKey]:
        """Routed targets with requests waiting for a first ready endpoint."""
        return frozenset(target for target in self.buffer.cold() if target in self.routes)

    # -- the request path -------------------------------------------------------------------------

    async def handle(self, request: messages.Request) -> messages.Answer:
        """Answers one request exactly once: forwarded to a ready endpoint, or refused with a reason.

        A defect raises: the server answers 500, counts it and logs the traceback (``http1``).
        """
        if request.method == hdrs.METH_CONNECT or not request.raw_path.startswith("/"):
            return self.reply(
                None,
                400,
                "the activator is not a forward proxy: CONNECT and absolute-URI request targets "
                "are refused; send an origin-form target (a path) with a Host header",
                close=True,
            )
        if self._draining:
            return self.reply(None, 503, "the activator is shutting down", retry_after=True, close=True)
        host = request.host
        route = self.routes.lookup(host)
        if route is None:
            return self.reply(
                None,
                404,
                f"no Deployment is routed for Host {host!r}: the activator routes <deployment>.<namespace> "
                "(optionally with .svc or .svc.<cluster domain>) and http-host names of Deployments "
                "annotated with queue-autoscaler.dev/http-service",
            )
        target = route.target
        length = request.content_length
        if length is not None and length > self._limits.max_request_body:
            return self.reply(target, 413, self._too_large(), close=True)
        try:
            with self.buffer.hold(target) as ticket:
                return await self._held(request, route, ticket)
        except buffer.Overloaded as exc:
            _bound(target).warning(ActivatorLog.IN_FLIGHT_EXCEEDED, error=str(exc))
            return self.reply(target, 503, f"the activator is overloaded: {exc}", retry_after=True)

    async def _held(
        self, request: messages.Request, route: routing.Route, ticket: buffer.Ticket
    ) -> messages.Answer:
        target = route.target
        body: bytes | None = None
        if route.cloudevents.enabled:
            if cloudevents.is_structured(request.headers):
                try:
                    body = await proxy.read_body(
                        request,
                        limit=self._limits.max_request_body,
                        idle_timeout=self._limits.body_idle_timeout,
                    )
                except proxy.BodyTooLarge:
                    return self.reply(target, 413, self._too_large(), close=True)
                except proxy.BodyFailed as broken:
                    return self._body_failed(target, broken)
                rejection = cloudevents.check_structured(body, request.headers, route.cloudevents)
            else:
                rejection = cloudevents.check_binary(request.headers, route.cloudevents)
            if rejection is not None:
                return self.reply(target, rejection.status, rejection.reason)
        try:
            grant = self.buffer.lease_now(ticket, route) or await self.buffer.lease(
                ticket, route, on_cold=self._cold_start, on_queued=self._queued
            )
        except errors.QueueFull as full:
            _bound(target).warning(ActivatorLog.QUEUE_OVERFLOWED, max_pending=route.max_pending)
            return self.reply(target, 503, f"queue full: {full}", retry_after=True)
        except errors.ActivationTimeout as timeout:
            _bound(target).warning(ActivatorLog.ACTIVATION_TIMED_OUT, timeout=route.activation_timeout)
            return self.reply(target, 504, f"activation timeout: {timeout}")
        except buffer.Closed as closed:
            return self.reply(target, 503, f"request not forwarded: {closed}", retry_after=True)
        if grant.waited is not None:
            self.metrics.waited(target, grant.waited)
        return await self._forward(request, route, grant.lease, body)

    async def _forward(
        self, request: messages.Request, route: routing.Route, lease: endpoints.Lease, body: bytes | None
    ) -> messages.Answer:
        target = route.target
        active = lease
        try:
            started = self._clock()
            try:
                if body is None and request.body_exists:
                    body = await self._forwarder.small_body(request, body)
                upstream, active = await self._send(request, target, lease, body)
            except proxy.UpstreamTimeout as timeout:
                return self._upstream_failed(target, 504, timeout)
            except proxy.BodyTooLarge:
                return self.reply(target, 413, self._too_large(), close=True)
            except proxy.BodyFailed as broken:
                return self._body_failed(target, broken)
            except errors.UpstreamError as failed:
                return self._upstream_failed(target, 502, failed)
            self.metrics.latency(target, self._clock() - started)
            try:
                relayed = await self._forwarder.relay(request=request, upstream=upstream)
            except proxy.ResponseTooLarge as too_large:
                return self._upstream_failed(target, 502, too_large)
            finally:
                upstream.release()
            self.metrics.response(target, relayed.status)
            if relayed.cut is not None:
                _bound(target).warning(ActivatorLog.RESPONSE_CUT, status=relayed.status, reason=relayed.cut)
            return relayed.answer
        finally:
            lease.release()
            active.release()

    async def _send(
        self, request: messages.Request, target: TargetKey, lease: endpoints.Lease, body: bytes | None
    ) -> tuple[proxy.Upstream, endpoints.Lease]:
        """Sends to the leased endpoint; when the connection is refused (nothing was sent: a pod that
        has just started may not listen yet), once more after a short backoff to a freshly picked one."""
        # Nothing is awaited inside an except block here or in drain: the compiled build (setup.py) does not
        # keep the exception being handled across a suspension there.
        try:
            return await self._forwarder.send(request=request, address=lease.address, body=body), lease
        except proxy.ConnectFailed as exc:
            refused = exc
        lease.release()
        _bound(target).info(ActivatorLog.UPSTREAM_RETRIED, error=str(refused))
        if self.on_refused is not None:
            self.on_refused(target, lease.address)
        await self._retry_sleep(self._retry_backoff)
        retry = self.endpoints.pick(target, avoid=lease.address)
        if retry is None:
            raise refused
        try:
            return await self._forwarder.send(request=request, address=retry.address, body=body), retry
        except BaseException:
            retry.release()
            raise

    # -- draining and shutdown --------------------------------------------------------------------

    async def drain(self, *, timeout: float) -> DrainResult:
        """Refuses new requests (503) and waits up to ``timeout`` for held ones to be answered.

        Requests still queued at the deadline are answered 503 at once; forwarded ones keep going.
        """
        self._draining = True
        log.info(ActivatorLog.DRAIN_STARTED, held=self.buffer.held, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                await self.buffer.wait_idle()
        except TimeoutError:
            pass
        else:
            log.info(ActivatorLog.DRAIN_FINISHED)
            return DrainResult(left=0, timed_out=False)
        self.buffer.close_all("the activator is shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.buffer.wait_unqueued()
        log.warning(ActivatorLog.DRAIN_TIMED_OUT, held=self.buffer.held)
        return DrainResult(left=self.buffer.held, timed_out=True)

    async def close(self) -> None:
        """Closes the client session to the endpoints and stops probing."""
        if self.prober is not None:
            await self.prober.close()
        await self._forwarder.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _cold_start(self, target: TargetKey) -> None:
        # Counted and logged once per wake-up; the poke comes from ``_queued``, as for every queued request.
        self.metrics.cold_start(target)
        _bound(target).info(ActivatorLog.COLD_START_BEGAN)

    def _queued(self, target: TargetKey) -> None:
        if self.poker is not None:
            self.poker.poke(target)
        if self.prober is not None:
            self.prober.wake(target)

    def _body_failed(self, target: TargetKey, exc: proxy.BodyFailed) -> messages.Reply:
        """A body that stalled (408) or broke its framing (400): no activity of the target's, answered."""
        if isinstance(exc, proxy.BodyStalled):
            _bound(target).info(ActivatorLog.REQUEST_STALLED, stage="body", error=str(exc))
            text = f"request not received in time: {exc}"
        else:
            _bound(target).info(ActivatorLog.REQUEST_MALFORMED, status=exc.status, reason=str(exc))
            text = str(exc)
        self.buffer.withdraw(target)
        return self.reply(target, exc.status, text, close=True)

    def _too_large(self) -> str:
        return f"request body larger than {self._limits.max_request_body} bytes"

    def _upstream_failed(self, target: TargetKey, status: int, exc: Exception) -> messages.Reply:
        _bound(target).warning(ActivatorLog.UPSTREAM_FAILED, status=status, error=str(exc))
        return self.reply(target, status, f"upstream failed: {exc}")

    def reply(
        self,
        target: TargetKey | None,
        status: int,
        reason: str,
        *,
        retry_after: bool = False,
        close: bool = False,
    ) -> messages.Reply:
        headers = ((hdrs.RETRY_AFTER, str(RETRY_AFTER_SECONDS)),) if retry_after else ()
        self.metrics.response(target, status)
        return messages.text_reply(status, reason, headers=headers, close=close)


def build_server(activator: Activator) -> http1.Server:
    """The proxy: every Host and origin-form path goes to ``activator.handle``, within the connection
    bounds of ``activator.connection_limits``. Serve it with ``loop.create_server``."""

    # Request bodies are forwarded as received, compressed or not; a client that goes away stops holding
    # its place in the queue (its handler is cancelled).
    watchman = guard.Guard(limits=activator.connection_limits, metrics=activator.metrics)
    return http1.Server(activator.handle, guard=watchman)


def _bound(target: TargetKey) -> Any:
    return log.bind(namespace=target.namespace, deployment=target.name)
