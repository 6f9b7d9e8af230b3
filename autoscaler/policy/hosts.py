"""Host ownership over every HTTP target: who may be reached by which Host name. Pure.

Rules, applied the same way by every activator replica and by the controller:

- A target's default hosts, ``<deployment>.<namespace>``, ``<deployment>.<namespace>.svc`` and
  ``<deployment>.<namespace>.svc.<cluster domain>``, always belong to it.
- An ``http-host`` claim is refused when it names another target's default host; when it is in another
  namespace's cluster form (``<name>.<other namespace>``, with or without ``.svc...``) unless cross-namespace
  claims are allowed; or when an earlier target claims the same host. "Earlier" is the older Deployment by
  creationTimestamp (a target without one counts as the newest), then namespace, then name.
- A refused claim is a problem for its claimant (an ``errors.AnnotationProblem`` on ``http-host`` naming the
  owner); the claimant keeps its default hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from autoscaler.errors import AnnotationProblem
from autoscaler.model import TargetKey

CLUSTER_DOMAIN: Final = "cluster.local"
KEY = "http-host"


@dataclass(frozen=True, slots=True)
class Claimant:
    """One HTTP target, when it was created, and the ``http-host`` it claims (None: none)."""

    target: TargetKey
    created: datetime | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Ownership:
    """Every routed host and its owner, and the refused claims by claimant."""

    owners: Mapping[str, TargetKey]
    refused: Mapping[TargetKey, AnnotationProblem]

    def owner(self, host: str) -> TargetKey | None:
        return self.owners.get(host)


def default_hosts(target: TargetKey, *, cluster_domain: str = CLUSTER_DOMAIN) -> frozenset[str]:
    """``<deployment>.<namespace>``, with ``.svc`` and ``.svc.<cluster domain>``, lowercase."""
    base = f"{target.name}.{target.namespace}".lower()
    return frozenset({base, f"{base}.svc", f"{base}.svc.{cluster_domain.lower().strip('.')}"})


def named_namespace(host: str, *, cluster_domain: str = CLUSTER_DOMAIN) -> str | None:
    """The namespace a host names in cluster form (``a.ns``, ``a.ns.svc``, ``a.ns.svc.<domain>``), or None."""
    labels = host.lower().split(".")
    domain = cluster_domain.lower().strip(".")
    if len(labels) == 2:
        return labels[1]
    if len(labels) == 3 and labels[2] == "svc":
        return labels[1]
    if len(labels) > 3 and labels[2] == "svc" and ".".join(labels[3:]) == domain:
        return labels[1]
    return None


def resolve(
    claimants: Iterable[Claimant],
    *,
    cluster_domain: str = CLUSTER_DOMAIN,
    cross_namespace: bool = False,
) -> Ownership:
    """Decides every host's owner over all HTTP targets; see the module docstring for the rules.

    Each target appears once (the last entry for a target wins). The result does not depend on the order of
    ``claimants``.
    """
    latest = {claimant.target: claimant for claimant in claimants}
    ordered = sorted(latest.values(), key=_sort_key)
    owners: dict[str, TargetKey] = {}
    for claimant in ordered:
        for host in default_hosts(claimant.target, cluster_domain=cluster_domain):
            owners[host] = claimant.target
    refused: dict[TargetKey, AnnotationProblem] = {}
    for claimant in ordered:
        if claimant.host is None:
            continue
        host = claimant.host.lower()
        owner = owners.get(host)
        if owner == claimant.target:
            continue
        reason: str | None = None
        if owner is not None:
            if host in default_hosts(owner, cluster_domain=cluster_domain):
                reason = f"a host no other target owns: {host} is the default host of {owner}"
            else:
                reason = f"a host no other target owns: {host} is claimed by {owner}, an older Deployment"
        elif not cross_namespace:
            namespace = named_namespace(host, cluster_domain=cluster_domain)
            if namespace is not None and namespace != claimant.target.namespace:
                reason = (
                    f"a host of namespace {claimant.target.namespace}: {host} names namespace {namespace} "
                    "(cross-namespace claims are not allowed by this installation)"
                )
        if reason is None:
            owners[host] = claimant.target
        else:
            refused[claimant.target] = AnnotationProblem(KEY, claimant.host, reason)
    return Ownership(owners=MappingProxyType(owners), refused=MappingProxyType(refused))


def _sort_key(claimant: Claimant) -> tuple[int, float, TargetKey]:
    created = claimant.created
    return (1, 0.0, claimant.target) if created is None else (0, created.timestamp(), claimant.target)
