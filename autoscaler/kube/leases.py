"""Leader election on a coordination.k8s.io/v1 Lease, and reading who leads.

Every write carries the resourceVersion last read, so of two candidates racing for a free or expired Lease
exactly one succeeds (the other gets 409). A candidate considers the holder's Lease expired when its
resourceVersion has not changed for ``leaseDurationSeconds`` of the candidate's own monotonic clock, so clock
skew between machines does not matter. The leader renews every ``retry_period`` and stops leading as soon as
it has not renewed for ``renew_deadline`` (< lease duration: it stops before anyone else may start).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

import structlog
from kubernetes_asyncio import client

from autoscaler.errors import Conflict, KubeError, TargetGone
from autoscaler.kube import calls
from autoscaler.model import REPORT_URL_ANNOTATION
from autoscaler.observability.log_events import KubeLog

REPORT_URL = REPORT_URL_ANNOTATION

# The one set of lease timings (seconds): the flags' defaults, the settings' and the elector's.
LEASE_DURATION: Final = 10.0
"""A standby takes over this long after the Lease last changed."""
RENEW_DEADLINE: Final = 7.0
"""A leader stops leading this long after its last successful renewal (before a standby may start)."""
RETRY_PERIOD: Final = 1.5
"""Between the leader's renewals, and between a standby's attempts."""

log = structlog.get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Campaigns for the Lease ``namespace/name`` as ``identity`` until cancelled.

    ``leading`` is set while this process leads and ``not_leading`` while it does not; ``on_started_leading``
    and ``on_stopped_leading`` are called at each transition, ``on_new_leader(identity or None)`` whenever
    the observed holder changes. After losing the Lease it campaigns again. The leader writes ``annotations``
    onto the Lease. When cancelled while leading it stops leading, then releases the Lease (holder cleared,
    its annotations removed) so a standby takes over at its next retry, unless ``release_on_cancel`` is False.
    Durations are seconds.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        annotations: Mapping[str, str] | None = None,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str | None], None] | None = None,
        release_on_cancel: bool = True,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not identity:
            raise ValueError("identity must not be empty")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError(
                f"need lease_duration > renew_deadline > retry_period > 0, got {lease_duration}, "
                f"{renew_deadline}, {retry_period}"
            )
        self._coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.annotations: Mapping[str, str] = MappingProxyType(dict(annotations or {}))
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._release_on_cancel = release_on_cancel
        self._clock = clock
        self._lease: calls.JSON | None = None  # as last written by us, while leading
        self._observed_version: str | None = None
        self._observed_at = 0.0
        self._taken = False  # the last attempt found another holder with a valid Lease
        self.leader: str | None = None
        self.leading = asyncio.Event()
        self.not_leading = asyncio.Event()
        self.not_leading.set()
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        """Campaigns, leads and campaigns again, until cancelled."""
        try:
            while True:
                await self._acquire()
                self._set_leading(True)
                await self._renew_until_lost()
                self._set_leading(False)
        finally:
            if self.is_leader:
                self._set_leading(False)
                if self._release_on_cancel:
                    await self._release()

    async def _acquire(self) -> None:
        while True:
            if await self._attempt():
                return
            await asyncio.sleep(self.retry_period * random.uniform(1.0, 1.2))

    async def _renew_until_lost(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self.retry_period)
            deadline = renewed + self.renew_deadline
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._log.warning("kube.leader.renew-deadline", renew_deadline=self.renew_deadline)
                    return
                try:
                    async with asyncio.timeout(remaining):
                        ok = await self._attempt()
                except TimeoutError:
                    self._log.warning("kube.leader.renew-deadline", renew_deadline=self.renew_deadline)
                    return
                if ok:
                    renewed = loop.time()
                    break
                if self._taken:
                    return
                await asyncio.sleep(min(self.retry_period, max(0.0, deadline - loop.time())))

    async def _attempt(self) -> bool:
        """One try to acquire or renew; False when someone else holds it or the API failed."""
        self._taken = False
        try:
            lease = self._lease
            if lease is None:
                lease = await self._read()
                if lease is None:
                    self._lease = await self._create()
                    self._observe(self._lease)
                    return True
                self._observe(lease)
                holder = _holder(lease)
                if holder and holder != self.identity and not self._expired(lease):
                    self._taken = True
                    return False
            self._lease = await self._replace(self._claimed(lease))
            self._observe(self._lease)
            return True
        except Conflict:
            self._lease = None
            self._log.debug("kube.leader.conflict")
            return False
        except KubeError as exc:
            self._lease = None
            self._log.warning("kube.leader.failed", error=str(exc), status=exc.status)
            return False

    def _claimed(self, lease: calls.JSON) -> calls.JSON:
        """``lease`` rewritten with us as holder, renewed now, and our annotations."""
        now = _micro_time(self._clock())
        spec = dict(lease.get("spec") or {})
        if _holder(lease) != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = calls.integer(spec.get("leaseTransitions")) + 1
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = math.ceil(self.lease_duration)
        spec["renewTime"] = now
        metadata = _writable_metadata(lease)
        metadata["annotations"] = {**calls.string_map(metadata.get("annotations")), **self.annotations}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    async def _release(self) -> None:
        lease = self._lease
        self._lease = None
        try:
            async with asyncio.timeout(self.renew_deadline):
                if lease is None:
                    lease = await self._read()
                if lease is None or _holder(lease) != self.identity:
                    return
                now = _micro_time(self._clock())
                spec = dict(lease.get("spec") or {})
                spec.pop("holderIdentity", None)
                spec.update(leaseDurationSeconds=1, acquireTime=now, renewTime=now)
                metadata = _writable_metadata(lease)
                kept = {
                    k: v
                    for k, v in calls.string_map(metadata.get("annotations")).items()
                    if k not in self.annotations
                }
                metadata["annotations"] = kept
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": metadata,
                    "spec": spec,
                }
                await self._replace(body)
        except (KubeError, TimeoutError) as exc:
            self._log.warning("kube.leader.release-failed", error=str(exc) or type(exc).__name__)
            return
        self._log.info("kube.leader.released")

    def _set_leading(self, leading: bool) -> None:
        if leading == self.is_leader:
            return
        if leading:
            self.leading.set()
            self.not_leading.clear()
            self._log.info("kube.leader.started")
            if self._on_started is not None:
                self._on_started()
        else:
            self.leading.clear()
            self.not_leading.set()
            self._lease = None
            self._log.warning("kube.leader.stopped")
            if self._on_stopped is not None:
                self._on_stopped()

    def _observe(self, lease: calls.JSON) -> None:
        version = str(calls.dig(lease, "metadata", "resourceVersion") or "")
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = asyncio.get_running_loop().time()
        holder = _holder(lease) or None
        if holder != self.leader:
            self.leader = holder
            self._log.info("kube.leader.observed", leader=holder)
            if self._on_new_leader is not None:
                self._on_new_leader(holder)

    def _expired(self, lease: calls.JSON) -> bool:
        duration = calls.integer(calls.dig(lease, "spec", "leaseDurationSeconds")) or self.lease_duration
        return asyncio.get_running_loop().time() >= self._observed_at + duration

    async def _read(self) -> calls.JSON | None:
        try:
            return await calls.call_json(
                self._coordination.read_namespaced_lease,
                self.name,
                self.namespace,
                what=f"read lease {self.namespace}/{self.name}",
            )
        except TargetGone:
            return None

    async def _create(self) -> calls.JSON:
        now = _micro_time(self._clock())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "annotations": dict(self.annotations),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(self.lease_duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        return await calls.call_json(
            self._coordination.create_namespaced_lease,
            self.namespace,
            body,
            what=f"create lease {self.namespace}/{self.name}",
        )

    async def _replace(self, body: calls.JSON) -> calls.JSON:
        return await calls.call_json(
            self._coordination.replace_namespaced_lease,
            self.name,
            self.namespace,
            body,
            what=f"update lease {self.namespace}/{self.name}",
        )


async def read_leader(
    *, api: client.ApiClient, namespace: str, name: str, now: datetime | None = None
) -> tuple[str | None, Mapping[str, str]]:
    """The Lease's holder, or None when it has none, has expired (renewTime + leaseDurationSeconds before
    ``now``, default the current time) or does not exist; and the Lease's annotations (empty when absent).
    """
    try:
        lease = await calls.call_json(
            client.CoordinationV1Api(api).read_namespaced_lease,
            name,
            namespace,
            what=f"read lease {namespace}/{name}",
        )
    except TargetGone:
        return None, MappingProxyType({})
    annotations = MappingProxyType(calls.string_map(calls.dig(lease, "metadata", "annotations")))
    holder = _holder(lease)
    renewed = _parse_time(calls.dig(lease, "spec", "renewTime"))
    duration = calls.integer(calls.dig(lease, "spec", "leaseDurationSeconds"))
    if not holder or renewed is None or renewed + timedelta(seconds=duration) < (now or _utcnow()):
        return None, annotations
    return holder, annotations


def _holder(lease: calls.JSON) -> str:
    value = calls.dig(lease, "spec", "holderIdentity")
    return value if isinstance(value, str) else ""


def _writable_metadata(lease: calls.JSON) -> calls.JSON:
    metadata = dict(lease.get("metadata") or {})
    metadata.pop("managedFields", None)
    return metadata


def _micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class LeaderURL:
    """The report URL the controller leader publishes on its Lease, refreshed every ``every`` seconds."""

    def __init__(self, api: client.ApiClient, *, namespace: str, name: str, every: float) -> None:
        self._api, self._namespace, self._name, self._every = api, namespace, name, every
        self.url: str | None = None

    def __call__(self) -> str | None:
        return self.url

    async def run(self) -> None:
        while True:
            try:
                holder, notes = await read_leader(api=self._api, namespace=self._namespace, name=self._name)
                url = notes.get(REPORT_URL_ANNOTATION) if holder else None
            except KubeError as exc:
                log.warning(KubeLog.LEADER_URL_UNREADABLE, error=str(exc))
                url = self.url
            if url != self.url:
                log.info(KubeLog.LEADER_URL_CHANGED, url=url)
                self.url = url
            await asyncio.sleep(self._every)
