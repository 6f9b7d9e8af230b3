"""The activator's HTTP server: what the watchers feed, the request path, draining, and ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import prometheus_client
import structlog
from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry

from autoscaler import errors
from autoscaler.activator import buffer, cloudevents, endpoints, proxy, reporter, routing
from autoscaler.activator import metrics as activator_metrics
from autoscaler.model import TargetConcurrency, TargetKey

log = structlog.get_logger(__name__)

RUNNER_OPTIONS: Final[Mapping[str, Any]] = {
    # Request bodies are forwarded as received, compressed or not.
    "auto_decompress": False,
    # A client that goes away stops holding its place in the queue.
    "handler_cancellation": True,
}
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
        retry_backoff: float = 0.1,
        retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cluster_domain: str = routing.CLUSTER_DOMAIN,
        poker: reporter.Poker | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.metrics = activator_metrics.ActivatorMetrics(registry)
        self.routes = routing.RouteTable()
        self.endpoints = endpoints.Endpoints()
        self.buffer = buffer.Buffer(
            endpoints=self.endpoints, max_in_flight=max_in_flight, clock=clock, on_change=self._held_changed
        )
        self.poker = poker
        self._limits = limits = limits or proxy.Limits()
        self._forwarder = proxy.Forwarder(limits=limits, session=session)
        self._retry_backoff = retry_backoff
        self._retry_sleep = retry_sleep
        self._cluster_domain = cluster_domain
        self._clock = clock
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    # -- what the route source calls -------------------------------------------------------------

    def apply_deployment(
        self, *, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> routing.Route | None:
        """Routes a Deployment from its annotations; without ``http-service`` its route is removed.

        Raises PolicyError (every bad key at once) and leaves the current route, if any, as it was.
        """
        route = routing.parse_route(
            namespace=namespace, name=name, annotations=annotations, cluster_domain=self._cluster_domain
        )
        if route is None:
            self.remove_target(TargetKey(namespace, name))
        else:
            self.put_route(route)
        return route

    def put_route(self, route: routing.Route) -> None:
        old = self.routes.put(route)
        self.metrics.track(route.target)
        if old != route:
            _bound(route.target).info(
                "route updated",
                hosts=sorted(route.hosts),
                service=route.service,
                port=route.port,
                cloudevents=route.cloudevents.enabled,
            )

    def remove_target(self, target: TargetKey) -> None:
        """Stops routing a Deployment: its queued requests get 503 now, its metric series go away.

        Its endpoints stay as the EndpointSlice watcher last set them (``endpoints.forget`` drops them).
        """
        old = self.routes.remove(target)
        self.buffer.close(target, f"{target} is no longer routed by this activator")
        self.metrics.forget(target)
        if old is not None:
            _bound(target).info("route removed")

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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answers one request exactly once: forwarded to a ready endpoint, or refused with a reason."""
        if self._draining:
            return self._reply(None, 503, "the activator is shutting down", retry_after=True, close=True)
        host = request.headers.get(hdrs.HOST)
        route = self.routes.lookup(host)
        if route is None:
            return self._reply(
                None,
                404,
                f"no Deployment is routed for Host {host!r}: the activator routes <deployment>.<namespace> "
                "(optionally with .svc or .svc.<cluster domain>) and http-host names of Deployments "
                "annotated with queue-autoscaler.dev/http-service",
            )
        target = route.target
        length = request.content_length
        if length is not None and length > self._limits.max_request_body:
            return self._reply(target, 413, self._too_large(), close=True)
        try:
            with self.buffer.hold(target) as ticket:
                return await self._held(request, route, ticket)
        except buffer.Overloaded as exc:
            _bound(target).warning("request refused: activator at its in-flight bound", error=str(exc))
            return self._reply(target, 503, f"the activator is overloaded: {exc}", retry_after=True)

    async def _held(
        self, request: web.BaseRequest, route: routing.Route, ticket: buffer.Ticket
    ) -> web.StreamResponse:
        target = route.target
        body: bytes | None = None
        if route.cloudevents.enabled:
            if cloudevents.is_structured(request.headers):
                try:
                    async with asyncio.timeout(self._limits.read_timeout):
                        body = await proxy.read_body(request, limit=self._limits.max_request_body)
                except proxy.BodyTooLarge:
                    return self._reply(target, 413, self._too_large(), close=True)
                except TimeoutError:
                    return self._reply(target, 408, "request body not received in time", close=True)
                rejection = cloudevents.check_structured(body, request.headers, route.cloudevents)
            else:
                rejection = cloudevents.check_binary(request.headers, route.cloudevents)
            if rejection is not None:
                return self._reply(target, rejection.status, rejection.reason)
        try:
            grant = await self.buffer.lease(ticket, route, on_cold=self._cold_start, on_queued=self._queued)
        except errors.QueueFull as exc:
            _bound(target).warning("request refused: queue full", max_pending=route.max_pending)
            return self._reply(target, 503, f"queue full: {exc}", retry_after=True)
        except errors.ActivationTimeout as exc:
            _bound(target).warning(
                "request timed out waiting for an endpoint", timeout=route.activation_timeout
            )
            return self._reply(target, 504, f"activation timeout: {exc}")
        except buffer.Closed as exc:
            return self._reply(target, 503, f"request not forwarded: {exc}", retry_after=True)
        if grant.waited is not None:
            self.metrics.waited(target, grant.waited)
        return await self._forward(request, route, grant.lease, body)

    async def _forward(
        self, request: web.BaseRequest, route: routing.Route, lease: endpoints.Lease, body: bytes | None
    ) -> web.StreamResponse:
        target = route.target
        active = lease
        try:
            started = self._clock()
            try:
                upstream, active = await self._send(request, target, lease, body)
            except proxy.UpstreamTimeout as exc:
                return self._upstream_failed(target, 504, exc)
            except proxy.BodyTooLarge:
                return self._reply(target, 413, self._too_large(), close=True)
            except errors.UpstreamError as exc:
                return self._upstream_failed(target, 502, exc)
            self.metrics.latency(target, self._clock() - started)
            try:
                relayed = await self._forwarder.relay(request=request, upstream=upstream)
            except proxy.ResponseTooLarge as exc:
                return self._upstream_failed(target, 502, exc)
            finally:
                upstream.release()
            self.metrics.response(target, relayed.response.status)
            if relayed.cut is not None:
                _bound(target).warning(
                    "response cut short", status=relayed.response.status, reason=relayed.cut
                )
            return relayed.response
        finally:
            lease.release()
            active.release()

    async def _send(
        self, request: web.BaseRequest, target: TargetKey, lease: endpoints.Lease, body: bytes | None
    ) -> tuple[aiohttp.ClientResponse, endpoints.Lease]:
        """Sends to the leased endpoint; when the connection is refused (nothing was sent: a pod that
        has just started may not listen yet), once more after a short backoff to a freshly picked one."""
        try:
            return await self._forwarder.send(request=request, address=lease.address, body=body), lease
        except proxy.ConnectFailed as exc:
            lease.release()
            _bound(target).info("endpoint refused the connection; retrying once", error=str(exc))
            await self._retry_sleep(self._retry_backoff)
            retry = self.endpoints.pick(target)
            if retry is None:
                raise
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
        log.info("draining", held=self.buffer.held, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                await self.buffer.wait_idle()
        except TimeoutError:
            self.buffer.close_all("the activator is shutting down")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.buffer.wait_unqueued()
            log.warning("drain timed out", held=self.buffer.held)
            return DrainResult(left=self.buffer.held, timed_out=True)
        log.info("drained")
        return DrainResult(left=0, timed_out=False)

    async def close(self) -> None:
        """Closes the client session to the endpoints."""
        await self._forwarder.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _cold_start(self, target: TargetKey) -> None:
        # Counted and logged once per wake-up; the poke comes from ``_queued``, as for every queued request.
        self.metrics.cold_start(target)
        _bound(target).info("cold start: request waits for a first ready endpoint")

    def _queued(self, target: TargetKey) -> None:
        if self.poker is not None:
            self.poker.poke(target)

    def _held_changed(self, target: TargetKey, held: TargetConcurrency) -> None:
        self.metrics.set_held(target, in_flight=held.in_flight, queued=held.queued)

    def _too_large(self) -> str:
        return f"request body larger than {self._limits.max_request_body} bytes"

    def _upstream_failed(self, target: TargetKey, status: int, exc: Exception) -> web.Response:
        _bound(target).warning("upstream failed", status=status, error=str(exc))
        return self._reply(target, status, f"upstream failed: {exc}")

    def _reply(
        self,
        target: TargetKey | None,
        status: int,
        reason: str,
        *,
        retry_after: bool = False,
        close: bool = False,
    ) -> web.Response:
        response = web.Response(status=status, text=reason + "\n")
        if retry_after:
            response.headers[hdrs.RETRY_AFTER] = str(RETRY_AFTER_SECONDS)
        if close:
            response.force_close()
        self.metrics.response(target, status)
        return response


def build_app(activator: Activator) -> web.Application:
    """The proxy application: every Host and path goes to ``activator.handle``.

    Serve it with ``RUNNER_OPTIONS`` (``web.AppRunner(app, **RUNNER_OPTIONS)``).
    """

    @web.middleware
    async def origin_form_only(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == hdrs.METH_CONNECT or not request.raw_path.startswith("/"):
            activator.metrics.response(None, 400)
            response = web.Response(
                status=400,
                text="the activator is not a forward proxy: CONNECT and absolute-URI request targets "
                "are refused; send an origin-form target (a path) with a Host header\n",
            )
            response.force_close()
            return response
        return await handler(request)

    app = web.Application(middlewares=[origin_form_only])
    app.router.add_route("*", "/{path:.*}", activator.handle)
    return app


def build_admin_app(activator: Activator) -> web.Application:
    """Metrics and probes, on their own port: ``/metrics``, ``/healthz``, ``/readyz`` (503 when draining)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=prometheus_client.generate_latest(activator.registry),
            headers={hdrs.CONTENT_TYPE: prometheus_client.CONTENT_TYPE_LATEST},
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if activator.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def stop_on_signals(*signals: signal.Signals) -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (or the given signals), for ``serve(stop=...)``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals or (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(
    *,
    activator: Activator,
    stop: asyncio.Event,
    host: str = "0.0.0.0",
    port: int = 8080,
    admin_host: str = "0.0.0.0",
    admin_port: int | None = 9090,
    controller_url: str | Callable[[], str | None] | None = None,
    token: str | Callable[[], str] = "",
    activator_name: str = "activator",
    report_interval: float = 1.0,
    report_timeout: float = 2.0,
    drain_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    on_listening: Callable[[list[Any]], None] | None = None,
) -> DrainResult:
    """Runs the activator until ``stop`` is set, then drains for up to ``drain_timeout`` and stops.

    With ``controller_url`` a Reporter pushes concurrency there and becomes ``activator.poker`` (replacing
    any other) for the duration. The readiness probe fails from the moment the drain starts.
    ``on_listening`` receives the bound addresses (proxy first, then admin) once serving.
    """
    report_task: asyncio.Task[None] | None = None
    if controller_url is not None:
        pusher = reporter.Reporter(
            url=controller_url,
            token=token,
            activator=activator_name,
            source=activator,
            metrics=activator.metrics,
            interval=report_interval,
            timeout=report_timeout,
        )
        activator.poker = pusher
        report_task = asyncio.create_task(pusher.run(), name="activator-reporter")
    runners: list[web.AppRunner] = []
    try:
        proxy_runner = web.AppRunner(
            build_app(activator), shutdown_timeout=shutdown_timeout, **RUNNER_OPTIONS
        )
        runners.append(proxy_runner)
        await proxy_runner.setup()
        await web.TCPSite(proxy_runner, host, port).start()
        addresses = list(proxy_runner.addresses)
        if admin_port is not None:
            admin_runner = web.AppRunner(build_admin_app(activator), shutdown_timeout=shutdown_timeout)
            runners.append(admin_runner)
            await admin_runner.setup()
            await web.TCPSite(admin_runner, admin_host, admin_port).start()
            addresses.extend(admin_runner.addresses)
        log.info("activator serving", addresses=[str(a) for a in addresses])
        if on_listening is not None:
            on_listening(addresses)
        await stop.wait()
        return await activator.drain(timeout=drain_timeout)
    finally:
        if report_task is not None:
            report_task.cancel()
            await asyncio.gather(report_task, return_exceptions=True)
            activator.poker = None
        for runner in reversed(runners):
            await runner.cleanup()
        await activator.close()


def _bound(target: TargetKey) -> Any:
    return log.bind(namespace=target.namespace, deployment=target.name)
