"""An ApiClient from a kubeconfig file ($KUBECONFIG) or, inside a pod, the service account."""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from autoscaler.errors import KubeError

log = structlog.get_logger(__name__)


async def connect(*, kubeconfig: str | None) -> client.ApiClient:
    """An ApiClient for ``kubeconfig``, else $KUBECONFIG, else the in-cluster service account, else
    ~/.kube/config. The caller closes it (``async with`` or ``await api.close()``).

    Raises KubeError naming what was tried when no configuration loads. No request is made.
    """
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    if path is not None:
        await _load_file(path, configuration)
        log.info("kube.connect", source="kubeconfig", path=path, host=configuration.host)
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as in_cluster_error:
        fallback = _default_kubeconfig()
        if _missing_files(fallback):
            raise KubeError(
                "no Kubernetes configuration: pass --kubeconfig or set KUBECONFIG, or run in a pod with a "
                f"service account (in-cluster config: {in_cluster_error}; {fallback} does not exist)"
            ) from in_cluster_error
        await _load_file(fallback, configuration)
        log.info("kube.connect", source="kubeconfig", path=fallback, host=configuration.host)
        return client.ApiClient(configuration)
    log.info("kube.connect", source="in-cluster", host=configuration.host)
    return client.ApiClient(configuration)


async def _load_file(path: str, configuration: client.Configuration) -> None:
    if missing := _missing_files(path):
        raise KubeError(f"kubeconfig {path}: no such file: {', '.join(missing)}")
    try:
        await config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except Exception as exc:  # a malformed file fails with YAML, key or config errors alike
        raise KubeError(f"kubeconfig {path}: {type(exc).__name__}: {exc}") from exc


def _missing_files(path: str) -> list[str]:
    """The files of a KUBECONFIG-style path list that do not exist."""
    return [part for part in path.split(os.pathsep) if part and not Path(part).expanduser().is_file()]


def _default_kubeconfig() -> str:
    return str(Path("~/.kube/config").expanduser())
