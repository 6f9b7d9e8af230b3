"""What the RabbitMQ, Redis and NATS readers share: settings, the retry policy, their metrics and the
skeleton of a batched read (``BatchReader``, ``HttpReader``, ``gather_by``).

Metrics live on an injected registry, one counter and one histogram per registry shared by every reader:
``queue_autoscaler_source_requests_total{source,api}`` counts each request sent (a retry is a request),
``queue_autoscaler_source_read_seconds{source}`` times one batched read of one server, retries included.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

import structlog
import tenacity
from prometheus_client import CollectorRegistry, Counter, Histogram
from tenacity.stop import stop_base

from autoscaler.errors import AutoscalerError, SourceError
from autoscaler.observability.log_events import SourceLog
from autoscaler.sources.http import AiohttpGetter, JsonGetter

T = TypeVar("T")
K = TypeVar("K")
Q = TypeVar("Q", bound=Hashable)
R = TypeVar("R")

_READ_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """Tunables of a RabbitMQ, Redis or NATS reader; times in seconds.

    ``retry_budget`` bounds the retrying of one read (about half the default 1 s tick); ``page_size`` is
    RabbitMQ's (500 is the most its management API serves in one page).
    """

    request_timeout: float = 2.0
    retry_budget: float = 0.5
    retry_attempts: int = 3
    retry_backoff: float = 0.05
    page_size: int = 500


@dataclass(frozen=True, slots=True)
class _Instruments:
    requests: Counter
    read_seconds: Histogram


_INSTRUMENTS: weakref.WeakKeyDictionary[CollectorRegistry, _Instruments] = weakref.WeakKeyDictionary()


def _instruments(registry: CollectorRegistry) -> _Instruments:
    found = _INSTRUMENTS.get(registry)
    if found is None:
        found = _Instruments(
            Counter(
                "queue_autoscaler_source_requests_total",
                "Requests sent to RabbitMQ, Redis and NATS by the backlog readers, by source and API.",
                ["source", "api"],
                registry=registry,
            ),
            Histogram(
                "queue_autoscaler_source_read_seconds",
                "Duration of one batched backlog read of one server, retries included, by source.",
                ["source"],
                registry=registry,
                buckets=_READ_BUCKETS,
            ),
        )
        _INSTRUMENTS[registry] = found
    return found


class SourceMetrics:
    """One reader's view of the shared instruments; ``requests_by_api`` counts its own requests too."""

    def __init__(self, source: str, registry: CollectorRegistry | None) -> None:
        self.source = source
        self._instruments = _instruments(registry if registry is not None else CollectorRegistry())
        self.requests_by_api: dict[str, int] = {}

    def count(self, api: str) -> None:
        self.requests_by_api[api] = self.requests_by_api.get(api, 0) + 1
        self._instruments.requests.labels(source=self.source, api=api).inc()

    def observe(self, seconds: float) -> None:
        self._instruments.read_seconds.labels(source=self.source).observe(seconds)

    @property
    def requests(self) -> int:
        return sum(self.requests_by_api.values())


class _StopAt(stop_base):
    """Stops before a retry whose backoff would end past the read's deadline."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


def retriable(exc: BaseException) -> bool:
    return isinstance(exc, AutoscalerError) and exc.retriable


async def with_retries(
    call: Callable[[], Awaitable[T]], *, settings: ReaderSettings, log: structlog.typing.FilteringBoundLogger
) -> T:
    """Runs ``call``, again on retriable errors only, within the attempts and the time budget."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.retry_budget

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        log.debug(
            SourceLog.READ_RETRYING,
            attempt=state.attempt_number,
            sleep=state.upcoming_sleep,
            error=str(None if outcome is None else outcome.exception()),
        )

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(settings.retry_attempts) | _StopAt(deadline, loop.time),
        wait=tenacity.wait_exponential(multiplier=settings.retry_backoff, max=settings.retry_budget),
        retry=tenacity.retry_if_exception(retriable),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(call)


async def timed(metrics: SourceMetrics, call: Callable[[], Awaitable[T]]) -> T:
    """Runs ``call`` and records its duration in the read histogram, whether it succeeds or not."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await call()
    finally:
        metrics.observe(loop.time() - started)


async def gather_by(keys: Sequence[K], fetch: Callable[[K], Awaitable[T]]) -> dict[K, T | SourceError]:
    """``fetch`` of every key at once: each key's answer or its SourceError; any other exception is raised."""
    answers = await asyncio.gather(*(fetch(key) for key in keys), return_exceptions=True)
    found: dict[K, T | SourceError] = {}
    for key, answer in zip(keys, answers, strict=True):
        if isinstance(answer, BaseException) and not isinstance(answer, SourceError):
            raise answer
        found[key] = answer
    return found


class BatchReader(Generic[Q, R]):
    """One server's reader for many queries at once; a subclass writes ``_read`` and, if it opens
    anything, ``close``. ``async with`` closes it."""

    def __init__(
        self,
        source: str,
        server: str,
        *,
        settings: ReaderSettings | None,
        registry: CollectorRegistry | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.settings = settings if settings is not None else ReaderSettings()
        self.metrics = SourceMetrics(source, registry)
        self._log = log.bind(source=source, server=server)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Releases what the reader opened (nothing here)."""

    async def read(self, *, queries: Sequence[Q]) -> dict[Q, R]:
        """Each query's result or its error; never raises for the server's faults (each query gets them)."""
        wanted = tuple(dict.fromkeys(queries))
        if not wanted:
            return {}
        return await timed(self.metrics, lambda: self._read(wanted))

    async def _read(self, wanted: tuple[Q, ...]) -> dict[Q, R]:
        """One result per query of ``wanted`` (distinct, never empty)."""
        raise NotImplementedError

    def _done(self, result: dict[Q, R], **counts: int) -> dict[Q, R]:
        """Logs the read of ``result`` (its queries, ``counts`` and errors) and returns it."""
        self._log.debug(
            SourceLog.READ_DONE,
            queries=len(result),
            **counts,
            errors=sum(isinstance(r, SourceError) for r in result.values()),
        )
        return result


class HttpReader(BatchReader[Q, R]):
    """A BatchReader over JSON GETs: on ``getter``, or on its own AiohttpGetter that it closes."""

    def __init__(
        self,
        source: str,
        server: str,
        *,
        getter: JsonGetter | None,
        settings: ReaderSettings | None,
        registry: CollectorRegistry | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        super().__init__(source, server, settings=settings, registry=registry, log=log)
        self._own_getter = getter is None
        self._getter: JsonGetter = (
            getter if getter is not None else AiohttpGetter(timeout=self.settings.request_timeout)
        )

    async def close(self) -> None:
        if self._own_getter and isinstance(self._getter, AiohttpGetter):
            await self._getter.close()
