"""Fixtures shared by every test: fail any test that leaves asyncio tasks running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """A test must await or cancel every task it starts; a leaked task fails it."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {[t.get_name() for t in leaked]}")


# --- the devstack -------------------------------------------------------------------------------------------
import contextlib  # noqa: E402
from pathlib import Path  # noqa: E402

from kubernetes_asyncio import client as kube_client  # noqa: E402
from kubernetes_asyncio import config as kube_config  # noqa: E402
from kubernetes_asyncio.client.exceptions import ApiException  # noqa: E402

from devstack import stack as devstack_stack  # noqa: E402
from devstack.config import layout as devstack_layout  # noqa: E402
from devstack.harness import Devstack, unique  # noqa: E402
from devstack.processes import Process, controller  # noqa: E402


@pytest.fixture(scope="session")
def devstack() -> Devstack:
    """The running devstack, started once per session (or reused). Fails, never skips, if it cannot start."""
    stack_layout = devstack_layout()
    try:
        devstack_stack.up(stack_layout)
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"the devstack could not start: {exc}", pytrace=False)
    return Devstack(stack_layout)


@pytest.fixture
async def kube(devstack: Devstack) -> AsyncIterator[kube_client.ApiClient]:
    """A kubernetes-asyncio client with the devstack's admin kubeconfig."""
    configuration = kube_client.Configuration()
    await kube_config.load_kube_config(
        config_file=str(devstack.kubeconfig), client_configuration=configuration
    )
    async with kube_client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
async def namespace(kube: kube_client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    name = unique("t")
    core = kube_client.CoreV1Api(kube)
    await core.create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiException):
        await core.delete_namespace(name)


@pytest.fixture
async def running_controller(devstack: Devstack, namespace: str, tmp_path: Path) -> AsyncIterator[Process]:
    """A real controller process for the test's namespace, stopped (SIGTERM, then SIGKILL) afterwards."""
    process = controller(devstack, tmp_path / "controller.log", namespaces=[namespace]).start()
    try:
        await process.wait_port("metrics")
        yield process
    finally:
        process.stop()
