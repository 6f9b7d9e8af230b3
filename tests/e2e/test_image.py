"""The container image, built from the Dockerfile with buildah (devstack/build-image, on a base made from
Debian packages) and run as its non-root user: the CLI, and the controller scaling a Deployment on the
devstack from 0 to N and back to 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from autoscaler.observability.log_events import ControlLog
from devstack import image
from devstack.config import Layout
from tests.stack import (
    Devstack,
    commit,
    create_topic,
    deployment,
    eventually,
    produce,
    spec_replicas,
    target_annotations,
    unique,
)

pytestmark = pytest.mark.devstack
KUBECONFIG_INSIDE = "/etc/queue-autoscaler/kubeconfig"


@pytest.fixture(scope="module")
def built(devstack: Devstack) -> str:
    """The image, built once per module (cached across runs in the build cache)."""
    try:
        return image.build(devstack.layout)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"the image could not be built: {exc}", pytrace=False)


@pytest.fixture
def box(devstack: Devstack, built: str) -> Iterator[image.Container]:
    with image.container(devstack.layout, built) as working:
        yield working


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


async def test_the_image_runs_the_cli_as_its_non_root_user_with_the_compiled_activator_and_no_build_tools(
    box: image.Container,
) -> None:
    helped = await asyncio.to_thread(run, box.argv(["queue-autoscaler", "--help"]))
    # No build tool, and the activator's request path in its compiled form (setup.py).
    probe = (
        "import os, importlib.util as u, autoscaler.activator.http1 as h; "
        "print(os.getuid(), [m for m in ('pip', 'build', 'setuptools', 'mypy') if u.find_spec(m)], "
        "h.__file__.endswith('.so'))"
    )
    who = await asyncio.to_thread(run, box.argv(["python", "-c", probe]))

    assert helped.returncode == 0, helped.stderr
    assert all(command in helped.stdout for command in ("run", "activator", "decide", "lag"))
    assert who.returncode == 0, who.stderr
    assert who.stdout == "10001 [] True\n"


@pytest.fixture
async def controller_in_image(
    devstack: Devstack, box: image.Container, namespace: str, tmp_path: Path
) -> AsyncIterator[Path]:
    """``queue-autoscaler run`` inside the image, on the host network, for the test's namespace."""
    log_path = tmp_path / "controller.log"
    argv = box.argv(
        [
            "queue-autoscaler", "run",
            "--kubeconfig", KUBECONFIG_INSIDE,
            "--kafka-bootstrap", devstack.kafka_bootstrap,
            "--namespace", namespace,
            "--interval", "1",
            "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--report-port", "0",
            "--leader-election", "false",
            "--log-format", "json",
        ],
        env={"QUEUE_AUTOSCALER_REPORT_TOKEN": "image-test"},
        volumes={devstack.kubeconfig: KUBECONFIG_INSIDE},
    )  # fmt: skip
    proc = start(argv, log_path)
    try:
        yield log_path
    finally:
        with_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)


def start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """In a session of its own, so that buildah and the command it runs are stopped together."""
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def with_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def logged(log_path: Path, event: str) -> list[dict[str, object]]:
    lines = log_path.read_text(errors="replace").splitlines()
    return [
        e for e in (json.loads(line) for line in lines if line.startswith("{")) if e.get("event") == event
    ]


async def test_the_controller_in_the_image_scales_a_deployment_from_zero_to_three_and_back_to_zero(
    devstack: Devstack, kube: client.ApiClient, namespace: str, controller_in_image: Path
) -> None:
    topic, group, name = unique("image"), unique("image-group"), "worker"
    await create_topic(devstack.kafka_bootstrap, topic, 3)
    idle = {"name": "worker", "image": "devstack/shell", "command": ["sh", "-c", "exec sleep 600"]}
    notes = target_annotations(
        kafka_group=group,
        kafka_topics=topic,
        lag_per_replica="10",
        offset_reset_policy="earliest",
        scale_down_window="1s",
        scale_to_zero_after="2s",
    )
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment(name, idle, replicas=0, annotations=notes)
    )
    await produce(devstack.kafka_bootstrap, topic, 30, partitions=3)

    up = await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n == 3, timeout=60, what="3 replicas"
    )
    await commit(devstack.kafka_bootstrap, group, topic, {0: 10, 1: 10, 2: 10})
    down = await eventually(
        lambda: spec_replicas(kube, namespace, name), lambda n: n == 0, timeout=60, what="back to 0"
    )

    scaled = [
        (e["replicas_from"], e["replicas_to"]) for e in logged(controller_in_image, ControlLog.TARGET_SCALED)
    ]
    assert (up, down) == (3, 0)
    assert scaled[0] == (0, 3), scaled
    assert scaled[-1][1] == 0, scaled


def test_image_storage_lives_in_the_build_cache_outside_the_repository(devstack: Devstack) -> None:
    layout: Layout = devstack.layout
    root = image.buildah(layout, "images")[2]

    assert Path(root).is_relative_to(layout.cache)
    assert not Path(root).is_relative_to(Path(__file__).resolve().parents[2])
