"""Ready and unacknowledged counts of RabbitMQ queues from the management HTTP API, batched per vhost.

One read costs one GET per vhost named by any query (more only past 500 queues: one per page of 500),
whatever the number of targets. Counts are the live totals of the queue processes
(``disable_stats=true&enable_queue_totals=true``), never the statistics cache that lags by 5 s; only three
columns come back. A queue pattern is matched here, over every page. A queue that does not exist, a vhost
that does not exist or a queue listed without counts is an error of the queries that name it, never 0; a
management endpoint that cannot be reached (plugin stopped, server down) is an error of every query.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import structlog
from prometheus_client import CollectorRegistry

from autoscaler.errors import BacklogError, SourceError, SourceUnavailable
from autoscaler.model import QueueCounts as QueueCounts
from autoscaler.sources import reading
from autoscaler.sources.http import JsonAnswer, JsonGetter

log = structlog.get_logger(__name__)

SOURCE = "rabbitmq"
API = "queues"
_COLUMNS = "name,messages_ready,messages_unacknowledged"


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """Queues of one vhost: by ``names``, or every queue whose whole name matches ``pattern``."""

    vhost: str = "/"
    names: tuple[str, ...] = ()
    pattern: str | None = None


QueueResult = tuple[QueueCounts, ...] | SourceError
"""The matched queues, sorted by name, or why this query cannot be read."""


_Listing = dict[str, QueueCounts | None]
"""One vhost's queues by name; None: listed without counts."""


class QueueReader(reading.HttpReader[QueueQuery, QueueResult]):
    """Reads one RabbitMQ server's management API for many queries at once.

    ``password`` is called for every request, so a rotated password file takes effect at the next read;
    ``username`` None sends no credentials.
    """

    def __init__(
        self,
        management_url: str,
        *,
        username: str | None,
        password: Callable[[], str],
        getter: JsonGetter | None = None,
        settings: reading.ReaderSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.management_url = management_url.rstrip("/")
        super().__init__(
            SOURCE, self.management_url, getter=getter, settings=settings, registry=registry, log=log
        )
        self._username = username
        self._password = password

    async def _read(self, wanted: tuple[QueueQuery, ...]) -> dict[QueueQuery, QueueResult]:
        vhosts = sorted({q.vhost for q in wanted})
        by_vhost = await reading.gather_by(vhosts, self._list_vhost)
        return self._done({q: _select(q, by_vhost[q.vhost]) for q in wanted}, vhosts=len(vhosts))

    async def _list_vhost(self, vhost: str) -> _Listing:
        first = await self._page(vhost, 1)
        listing = _parse_items(first, vhost)
        page_count = first.get("page_count", 1) if isinstance(first, dict) else 1
        if not isinstance(page_count, int) or page_count < 0:  # an empty vhost has 0 pages
            raise SourceError(f"{self._where(vhost)}: page_count {page_count!r} in the answer is not a count")
        if page_count > 1:
            rest = await asyncio.gather(*(self._page(vhost, n) for n in range(2, page_count + 1)))
            for page in rest:
                listing.update(_parse_items(page, vhost))
        return listing

    async def _page(self, vhost: str, page: int) -> Mapping[str, object]:
        params = {
            "disable_stats": "true",
            "enable_queue_totals": "true",
            "columns": _COLUMNS,
            "page": str(page),
            "page_size": str(self.settings.page_size),
        }
        url = f"{self.management_url}/api/queues/{quote(vhost, safe='')}"

        where = self._where(vhost)

        async def attempt() -> JsonAnswer:
            self.metrics.count(API)
            auth = None if self._username is None else (self._username, self._password())
            answer = await self._getter.get(url, params=params, auth=auth)
            return _checked(answer, where)

        answer = await reading.with_retries(attempt, settings=self.settings, log=self._log)
        if answer.status == 404:
            if isinstance(answer.body, dict) and answer.body.get("error") == "Object Not Found":
                raise BacklogError(f"{where}: the vhost does not exist")
            raise SourceError(f"{where}: no management API answers at this URL (HTTP 404)")
        if not isinstance(answer.body, dict) or not isinstance(answer.body.get("items"), list):
            raise SourceError(f"{where}: the management answer is not a page of queues: {answer.body!r:.200}")
        return answer.body

    def _where(self, vhost: str) -> str:
        return f"rabbitmq {self.management_url} vhost {vhost!r}"


def _checked(answer: JsonAnswer, where: str) -> JsonAnswer:
    if answer.status in (401, 403):
        raise SourceError(f"{where}: the management API refused the credentials (HTTP {answer.status})")
    if answer.status >= 500 or answer.status == 429:
        raise SourceUnavailable(f"{where}: the management API answered HTTP {answer.status}")
    if answer.status not in (200, 404):
        raise SourceError(f"{where}: the management API answered HTTP {answer.status}: {answer.body!r:.200}")
    return answer


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _parse_items(page: Mapping[str, object], vhost: str) -> _Listing:
    items = page.get("items")
    listing: _Listing = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        ready, unacked = _count(item.get("messages_ready")), _count(item.get("messages_unacknowledged"))
        name = item["name"]
        listing[name] = None if ready is None or unacked is None else QueueCounts(name, vhost, ready, unacked)
    return listing


def _select(query: QueueQuery, listing: _Listing | SourceError) -> QueueResult:
    if isinstance(listing, SourceError):
        return listing
    if query.pattern is not None:
        pattern = re.compile(query.pattern)
        names = sorted(name for name in listing if pattern.fullmatch(name))
        if not names:
            return BacklogError(f"vhost {query.vhost!r}: no queue matches {query.pattern!r}")
    else:
        names = sorted(set(query.names))
        missing = [name for name in names if name not in listing]
        if missing:
            shown = ", ".join(repr(n) for n in missing)
            return BacklogError(f"vhost {query.vhost!r}: queue {shown} does not exist")
    found: list[QueueCounts] = []
    for name in names:
        counts = listing[name]
        if counts is None:
            return BacklogError(
                f"vhost {query.vhost!r}: queue {name!r} is listed without message counts "
                "(a queue that is down, or a management answer without totals)"
            )
        found.append(counts)
    return tuple(found)


async def read_queues(
    *,
    management_url: str,
    username: str,
    password: Callable[[], str],
    query: QueueQuery,
    settings: reading.ReaderSettings | None = None,
) -> tuple[QueueCounts, ...]:
    """One query's queues, for ``queue-autoscaler lag``; raises its error."""
    async with QueueReader(management_url, username=username, password=password, settings=settings) as reader:
        outcome = (await reader.read(queries=[query]))[query]
    if isinstance(outcome, SourceError):
        raise outcome
    return outcome
