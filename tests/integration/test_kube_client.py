"""connect() on the devstack: the kubeconfig it was given reaches the API server."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import VersionApi

from autoscaler.kube import calls, client
from tests.stack import Devstack

pytestmark = pytest.mark.devstack


async def test_a_client_from_the_devstack_kubeconfig_reads_the_server_version(devstack: Devstack) -> None:
    api = await client.connect(kubeconfig=str(devstack.kubeconfig))
    async with api:
        version = await calls.call_json(VersionApi(api).get_code, what="read version")
    assert version["major"] == "1"
    assert version["gitVersion"].startswith("v1.36")
