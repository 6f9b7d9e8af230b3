"""A resumable list+watch of one resource, yielding typed events.

It lists once (paginated), then watches from the list's resourceVersion with bookmarks on. A watch that ends
(server timeout) or breaks (connection lost, 5xx, 429) is reopened from the last resourceVersion seen, after a
capped, jittered backoff when it failed; only 410 Gone (the resourceVersion is too old) causes a new list,
delivered as one ``Listed`` event that replaces everything the consumer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from autoscaler.errors import KubeError, KubeUnavailable
from autoscaler.kube import calls

T = TypeVar("T")

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Listed(Generic[T]):
    """Every object that exists, from a (re-)list: it replaces whatever the consumer held before."""

    objects: tuple[T, ...]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Added(Generic[T]):
    object: T


@dataclass(frozen=True, slots=True)
class Modified(Generic[T]):
    object: T


@dataclass(frozen=True, slots=True)
class Deleted(Generic[T]):
    """The object's last state before it was deleted."""

    object: T


WatchEvent: TypeAlias = Listed[T] | Added[T] | Modified[T] | Deleted[T]


class _Expired(Exception):
    """410 Gone: the resourceVersion we resume from is no longer available; list again."""


class ResourceWatch(Generic[T]):
    """List+watch of what ``list_method`` lists, with objects turned into ``T`` by ``parse``.

    ``list_method`` is a kubernetes-asyncio list method, bound to its namespace when namespaced, e.g.
    ``functools.partial(AppsV1Api(api).list_namespaced_deployment, "ns")``. ``parse`` receives the raw JSON
    object; an object it rejects with ValueError is logged and skipped. ``timeout_seconds`` is the server-side
    length of one watch request (random in 5-10 minutes by default), after which the watch is reopened, not
    re-listed.
    The counters ``lists``, ``connections`` and ``expired`` say how often it listed, opened a watch request,
    and met 410 Gone.
    """

    def __init__(
        self,
        list_method: calls.ApiMethod,
        *,
        parse: Callable[[calls.JSON], T],
        what: str,
        label_selector: str | None = None,
        page_size: int = 500,
        timeout_seconds: int | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._list_method = list_method
        self._parse = parse
        self.what = what
        self._label_selector = label_selector
        self._page_size = page_size
        self._timeout_seconds = timeout_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._log = log.bind(watch=what)
        self._healthy = False
        self.resource_version: str | None = None
        self.lists = 0
        self.connections = 0
        self.expired = 0

    async def events(self) -> AsyncGenerator[WatchEvent[T], None]:
        """Yields a ``Listed`` first, then changes, forever; consume it inside ``contextlib.aclosing``.

        API errors never end it: they are logged and the request is retried with backoff.
        """
        must_list = True
        delay = self._backoff_initial
        while True:
            self._healthy = False
            try:
                if must_list:
                    listed = await self._list()
                    must_list = False
                    delay = self._backoff_initial
                    yield listed
                async with contextlib.aclosing(self._watch()) as stream:
                    async for event in stream:
                        yield event
                delay = self._backoff_initial
            except _Expired:
                self.expired += 1
                must_list = True
                self._log.info("kube.watch.expired", resource_version=self.resource_version)
            except KubeError as exc:
                if self._healthy:
                    delay = self._backoff_initial
                pause = delay * random.uniform(0.5, 1.0)
                self._log.warning(
                    "kube.watch.failed",
                    error=str(exc),
                    status=exc.status,
                    retry_in=round(pause, 3),
                    listing=must_list,
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._backoff_max)

    async def _list(self) -> Listed[T]:
        while True:
            objects: list[T] = []
            page: str | None = None
            try:
                while True:
                    doc = await calls.call_json(
                        self._list_method,
                        what=f"list {self.what}",
                        label_selector=self._label_selector,
                        limit=self._page_size,
                        _continue=page,
                    )
                    items = doc.get("items") or []
                    objects.extend(
                        parsed for item in items if (parsed := self._parse_or_skip(item)) is not None
                    )
                    page = _string(calls.dig(doc, "metadata", "continue")) or None
                    if page is None:
                        break
            except KubeError as exc:
                if exc.status == 410:  # the continue token expired: start the list again
                    self._log.info("kube.watch.list-expired")
                    continue
                raise
            resource_version = _string(calls.dig(doc, "metadata", "resourceVersion"))
            self.resource_version = resource_version
            self.lists += 1
            self._log.info("kube.watch.listed", count=len(objects), resource_version=resource_version)
            return Listed(tuple(objects), resource_version)

    async def _watch(self) -> AsyncGenerator[WatchEvent[T], None]:
        """One watch request from ``resource_version``; ends when the server ends it."""
        timeout = self._timeout_seconds or random.randint(300, 600)
        what = f"watch {self.what}"
        try:
            response = await self._list_method(
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.resource_version,
                label_selector=self._label_selector,
                timeout_seconds=timeout,
                _preload_content=False,
                # The server sends a bookmark at least every minute: a longer silence is a dead connection.
                _request_timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=min(timeout + 30, 150)),
            )
        except (ApiException, aiohttp.ClientError, OSError) as exc:
            raise calls.translate(exc, what=what) from exc
        self.connections += 1
        try:
            if response.status == 410:
                raise _Expired
            if not 200 <= response.status < 300:
                body = await response.read()
                raise calls.error_for_status(response.status, calls.status_message(body), what=what)
            self._log.debug("kube.watch.opened", resource_version=self.resource_version, timeout=timeout)
            while True:
                line = await response.content.readline()
                if not line:
                    break
                event = self._event(line, what=what)
                if event is not None:
                    yield event
        except (aiohttp.ClientError, OSError) as exc:
            raise calls.translate(exc, what=what) from exc
        except ValueError as exc:  # a line longer than the read buffer
            raise KubeUnavailable(f"{what}: {exc}") from exc
        finally:
            response.close()

    def _event(self, line: bytes, *, what: str) -> WatchEvent[T] | None:
        """One line of the watch stream: an event for the consumer, or None (bookmark, skipped object)."""
        self._healthy = True
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise KubeError(f"{what}: malformed event line {line[:200]!r}") from exc
        kind = calls.dig(doc, "type")
        obj = calls.dig(doc, "object")
        if not isinstance(obj, dict):
            raise KubeError(f"{what}: event without an object: {line[:200]!r}")
        if kind == "ERROR":
            code = calls.integer(obj.get("code"))
            if code == 410:
                raise _Expired
            raise calls.error_for_status(code or 500, calls.status_message(json.dumps(obj)), what=what)
        resource_version = _string(calls.dig(obj, "metadata", "resourceVersion"))
        if resource_version:
            self.resource_version = resource_version
        if kind == "BOOKMARK":
            return None
        parsed = self._parse_or_skip(obj)
        if parsed is None:
            return None
        if kind == "ADDED":
            return Added(parsed)
        if kind == "MODIFIED":
            return Modified(parsed)
        if kind == "DELETED":
            return Deleted(parsed)
        self._log.warning("kube.watch.unknown-event", type=kind)
        return None

    def _parse_or_skip(self, obj: object) -> T | None:
        if not isinstance(obj, dict):
            return None
        try:
            return self._parse(obj)
        except ValueError as exc:
            self._log.warning(
                "kube.watch.skipped",
                error=str(exc),
                namespace=calls.dig(obj, "metadata", "namespace"),
                name=calls.dig(obj, "metadata", "name"),
            )
            return None


async def consume(watch: ResourceWatch[T], handle: Callable[[WatchEvent[T]], object]) -> None:
    """Feeds every event of ``watch`` to ``handle``, forever (until cancelled)."""
    async with contextlib.aclosing(watch.events()) as events:
        async for event in events:
            handle(event)


async def run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Runs coroutines concurrently until one fails (its error is raised, the others cancelled) or the caller
    is cancelled (all are cancelled and awaited)."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def namespace_scopes(
    *,
    all_namespaces: calls.ApiMethod,
    namespaced: calls.ApiMethod,
    namespaces: Sequence[str] | None,
    kind: str,
) -> list[tuple[calls.ApiMethod, str]]:
    """One list method for all namespaces (``namespaces=None``), or one bound to each given namespace."""
    if namespaces is None:
        return [(all_namespaces, f"{kind} in all namespaces")]
    return [
        (functools.partial(namespaced, namespace), f"{kind} in {namespace}")
        for namespace in dict.fromkeys(namespaces)
    ]


class ScopedWatches(Generic[T]):
    """Several ResourceWatches of one kind (one per namespace scope) seen as one.

    ``synced`` is set once every scope was listed; ``changed`` is set after any event that ``handle`` reports
    as a change (the consumer clears it). Subclasses keep one cache per scope and implement ``handle``.
    """

    def __init__(
        self,
        scopes: Sequence[tuple[calls.ApiMethod, str]],
        *,
        parse: Callable[[calls.JSON], T],
        label_selector: str | None = None,
        timeout_seconds: int | None = None,
    ) -> None:
        self.watches = [
            ResourceWatch(
                method, parse=parse, what=what, label_selector=label_selector, timeout_seconds=timeout_seconds
            )
            for method, what in scopes
        ]
        self._listed = [False] * len(self.watches)
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()
        if not self.watches:
            self.synced.set()

    async def run(self) -> None:
        """Watches every scope until cancelled."""
        await run_all(
            consume(one, functools.partial(self._received, index)) for index, one in enumerate(self.watches)
        )

    def handle(self, index: int, event: WatchEvent[T]) -> bool:
        """Applies ``event`` of scope ``index``; True when it changed what the consumers see."""
        raise NotImplementedError

    def _received(self, index: int, event: WatchEvent[T]) -> None:
        if self.handle(index, event):
            self.changed.set()
        if isinstance(event, Listed) and not self._listed[index]:
            self._listed[index] = True
            if all(self._listed):
                self.synced.set()
