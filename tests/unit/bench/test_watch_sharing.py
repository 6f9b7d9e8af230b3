"""bench.watch_sharing's parts that need no devstack: the shared path's pieces on made-up slices."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from bench import watch_sharing


def deployment(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "generation": 1,
            "annotations": {
                "queue-autoscaler.dev/http-service": name,
                "queue-autoscaler.dev/http-port": str(watch_sharing.PORT),
            },
        },
        "spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": "c"}]}}},
        "status": {},
    }


def made_slices(count: int) -> list[dict[str, Any]]:
    slices = []
    for i in range(count):
        one = watch_sharing.endpoint_slice(f"w{i}-1", f"w{i}", i, 3)
        one["metadata"]["namespace"] = "ns"
        slices.append(json.loads(json.dumps(one)))
    return slices


def test_every_update_flips_a_ready_condition_so_each_changes_one_service_and_all_parts_see_them() -> None:
    slices = made_slices(4)
    lines = watch_sharing.updates(slices, 8)

    own, changes = watch_sharing.own_watch_cpu(slices, lines)
    applied = watch_sharing.apply_cpu(slices, [deployment(f"w{i}") for i in range(4)], changes)
    sent, received = watch_sharing.pipe_cpu(changes)

    assert [json.loads(line)["type"] for line in lines] == ["MODIFIED"] * 8
    assert [key.name for key, _ in changes] == ["w0", "w1", "w2", "w3"] * 2
    assert min(own, applied, sent, received) >= 0


def test_the_caches_hold_bytes_for_slices_and_deployments() -> None:
    held = watch_sharing.cache_bytes(made_slices(20), [deployment(f"w{i}") for i in range(5)])
    assert held["slices"] > 0
    assert held["deployments"] > 0


def test_process_counts_are_a_comma_list_of_positive_numbers() -> None:
    assert watch_sharing._counts("1,2,4") == (1, 2, 4)
    for bad in ("", "0", "1,x"):
        with pytest.raises(argparse.ArgumentTypeError):
            watch_sharing._counts(bad)
