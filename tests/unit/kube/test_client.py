"""connect(): a clear KubeError when no configuration can be found or read; no request is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.errors import KubeError
from autoscaler.kube import client


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


async def test_without_kubeconfig_or_service_account_connect_names_what_it_tried(no_config: Path) -> None:
    with pytest.raises(KubeError, match=r"no Kubernetes configuration: pass --kubeconfig or set KUBECONFIG"):
        await client.connect(kubeconfig=None)


async def test_a_missing_kubeconfig_file_is_named(no_config: Path) -> None:
    missing = no_config / "nope.yaml"
    with pytest.raises(KubeError, match=f"no such file: {missing}"):
        await client.connect(kubeconfig=str(missing))


async def test_a_malformed_kubeconfig_file_is_a_kube_error(no_config: Path) -> None:
    broken = no_config / "broken.yaml"
    broken.write_text("clusters: [\n")
    with pytest.raises(KubeError, match=f"kubeconfig {broken}"):
        await client.connect(kubeconfig=str(broken))


async def test_kubeconfig_from_the_environment_is_used_when_none_is_given(
    no_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = no_config / "config.yaml"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: secret}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))

    api = await client.connect(kubeconfig=None)
    async with api:
        assert api.configuration.host == "https://127.0.0.1:1"
