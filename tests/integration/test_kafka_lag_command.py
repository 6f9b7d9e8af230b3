"""``queue-autoscaler lag`` on the devstack: Kafka's figures beside the lag the controller scales on."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.controller import queue_autoscaler
from tests.stack import Devstack, commit, create_topic, delete_records, produce, unique

pytestmark = pytest.mark.devstack


async def lag_command(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        queue_autoscaler("lag", *args),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_after_delete_records_passed_the_commit_lag_shows_kafkas_figure_and_the_controllers(
    devstack: Devstack,
) -> None:
    topic, group = unique("deleted"), unique("group")
    await create_topic(devstack.kafka_bootstrap, topic, 3)
    await produce(devstack.kafka_bootstrap, topic, 240, partitions=3)  # 80 per partition
    await commit(devstack.kafka_bootstrap, group, topic, {0: 10, 1: 60})
    assert await delete_records(devstack.kafka_bootstrap, topic, {0: 40}) == {0: 40}

    done = await lag_command(
        "--bootstrap", devstack.kafka_bootstrap, "--group", group, "--topic", topic, "--json"
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    rows = {p["partition"]: (p["lag"], p["controller_lag"]) for p in document["partitions"]}
    # Partition 0: Kafka counts 80 - 10 = 70, the controller 80 - 40 = 40 (records below the log start are
    # gone); partition 2 has no commit: '-' for Kafka, 1 for the controller (offset-reset-policy latest).
    assert rows == {0: (70, 40), 1: (20, 20), 2: (None, 1)}
    assert (document["total_lag"], document["controller_total_lag"]) == (90, 61)

    table = await lag_command(
        "--bootstrap",
        devstack.kafka_bootstrap,
        "--group",
        group,
        "--topic",
        topic,
        "--offset-reset-policy",
        "earliest",
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "LOG-START-OFFSET",
        "CONTROLLER-LAG",
    ]
    assert lines[5].split() == ["TOTAL", "90", "140"]  # earliest: partition 2 counts its 80 records
    assert lines[6].startswith("LAG: Kafka's figure")


async def test_a_group_without_commits_and_without_topic_says_so(devstack: Devstack) -> None:
    group = unique("never-committed")
    done = await lag_command("--bootstrap", devstack.kafka_bootstrap, "--group", group)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (
        f"group {group!r} has no committed offsets: name its topics with --topic to see their lag"
    )
