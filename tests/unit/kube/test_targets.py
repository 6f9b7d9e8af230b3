"""Deployments -> DeploymentInfo, and the cache of annotated Deployments kept from watch events."""

from __future__ import annotations

from datetime import UTC, datetime

from autoscaler.kube import targets, watch
from autoscaler.model import TargetKey
from tests.unit.kube.fakes import deployment

P = targets.PREFIX


def info(name: str, version: str, **annotations: str) -> targets.DeploymentInfo:
    return targets.parse_deployment(deployment(name, version, annotations=annotations))


def test_a_deployment_parses_into_its_key_counts_and_only_the_prefixed_annotations() -> None:
    obj = deployment("web", "42", annotations={P + "kafka-group": "orders", "kubectl.io/last-applied": "{}"})
    obj["spec"]["replicas"] = 3
    obj["status"] = {"readyReplicas": 2, "replicas": 3}
    obj["metadata"]["generation"] = 7

    parsed = targets.parse_deployment(obj)

    assert parsed == targets.DeploymentInfo(
        key=TargetKey("ns", "web"),
        uid="uid-web",
        annotations={P + "kafka-group": "orders"},
        replicas=3,
        ready_replicas=2,
        generation=7,
        resource_version="42",
    )
    assert parsed.is_target
    assert hash(parsed) == hash(targets.parse_deployment(obj))


def test_a_deployments_creation_timestamp_is_kept_and_a_malformed_one_is_none() -> None:
    obj = deployment("web", "1")
    obj["metadata"]["creationTimestamp"] = "2026-11-26T12:00:00Z"
    assert targets.parse_deployment(obj).created == datetime(2026, 11, 26, 12, tzinfo=UTC)
    obj["metadata"]["creationTimestamp"] = "yesterday"
    assert targets.parse_deployment(obj).created is None


def test_a_deployment_without_ready_replicas_has_zero_and_one_without_annotations_is_no_target() -> None:
    parsed = info("web", "1")
    assert parsed.ready_replicas == 0
    assert not parsed.is_target


def test_added_and_modified_annotated_deployments_are_cached_and_reported() -> None:
    cache = targets.TargetCache()
    first = info("a", "1", **{P + "kafka-group": "g"})
    second = info("a", "2", **{P + "kafka-group": "g"})

    assert cache.apply(watch.Added(first)) == [(first.key, None, first)]
    assert cache.apply(watch.Modified(second)) == [(first.key, first, second)]
    assert cache.apply(watch.Modified(second)) == []
    assert cache.items == {first.key: second}


def test_unannotated_deployments_are_ignored_and_losing_the_annotations_removes_one() -> None:
    cache = targets.TargetCache()
    annotated = info("a", "1", **{P + "http-service": "a"})

    assert cache.apply(watch.Added(info("plain", "1"))) == []
    cache.apply(watch.Added(annotated))
    assert cache.apply(watch.Modified(info("a", "2"))) == [(annotated.key, annotated, None)]
    assert cache.items == {}


def test_a_deleted_deployment_leaves_the_cache() -> None:
    cache = targets.TargetCache()
    annotated = info("a", "1", **{P + "kafka-group": "g"})
    cache.apply(watch.Added(annotated))

    assert cache.apply(watch.Deleted(annotated)) == [(annotated.key, annotated, None)]
    assert cache.apply(watch.Deleted(info("plain", "2"))) == []
    assert cache.items == {}


def test_a_relist_replaces_the_cache_reporting_only_what_changed() -> None:
    cache = targets.TargetCache()
    kept = info("kept", "1", **{P + "kafka-group": "g"})
    gone = info("gone", "1", **{P + "kafka-group": "g"})
    changed = info("changed", "1", **{P + "kafka-group": "g"})
    cache.apply(watch.Listed((kept, gone, changed), "1"))
    changed_now = info("changed", "9", **{P + "kafka-group": "h"})
    new = info("new", "9", **{P + "kafka-group": "g"})

    changes = cache.apply(watch.Listed((kept, changed_now, new, info("plain", "9")), "9"))

    assert sorted(changes, key=lambda c: c[0]) == [
        (changed.key, changed, changed_now),
        (gone.key, gone, None),
        (new.key, None, new),
    ]
    assert set(cache.items) == {kept.key, changed.key, new.key}
