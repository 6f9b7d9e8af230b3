"""Any Kubernetes object through a kubernetes-asyncio ``ApiClient`` by its apiVersion and kind (``Rest``), and
``kustomize build`` of the project's manifests; shared by the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from devstack.config import REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests"
FIELD_MANAGER = "queue-autoscaler-manifest-tests"

Obj = dict[str, Any]


def ident(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


async def kustomize_build(kustomize: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(kustomize), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Resource:
    path: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool


class Rest:
    """Create, apply, read and delete any object by its apiVersion and kind, finding the resource by
    discovery, as ``kubectl apply --server-side`` does."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._discovered: dict[str, dict[str, Resource]] = {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Obj]:
        response = await self.api.call_api(
            path,
            method,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        raw = await response.read()
        return int(response.status), json.loads(raw) if raw else {}

    async def resource(self, api_version: str, kind: str) -> Resource:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if base not in self._discovered:
            status, doc = await self.request("GET", base)
            assert status == 200, f"discovery of {base}: HTTP {status}: {doc}"
            self._discovered[base] = {
                r["kind"]: Resource(base, r["name"], bool(r["namespaced"]))
                for r in doc["resources"]
                if "/" not in r["name"]
            }
        found = self._discovered[base].get(kind)
        assert found is not None, f"the API server serves no {kind} in {api_version}"
        return found

    def forget(self, api_version: str) -> None:
        """Drops what discovery said of ``api_version`` (a group/version; not ``v1``), so that the next use
        asks again: installing a CRD adds resources to it."""
        self._discovered.pop(f"/apis/{api_version}", None)

    async def path(self, obj: Obj) -> str:
        resource = await self.resource(obj["apiVersion"], obj["kind"])
        namespace = obj["metadata"].get("namespace")
        if resource.namespaced:
            assert namespace, f"{ident(obj)} is namespaced but has no namespace"
            return f"{resource.path}/namespaces/{namespace}/{resource.plural}/{obj['metadata']['name']}"
        assert not namespace, f"{ident(obj)} is cluster-scoped but names a namespace"
        return f"{resource.path}/{resource.plural}/{obj['metadata']['name']}"

    async def apply(self, obj: Obj, *, dry_run: bool) -> tuple[int, Obj]:
        """Server-side apply; unknown or duplicate fields are errors (fieldValidation=Strict)."""
        query = [("fieldManager", FIELD_MANAGER), ("force", "true"), ("fieldValidation", "Strict")]
        if dry_run:
            query.append(("dryRun", "All"))
        return await self.request(
            "PATCH", await self.path(obj), query=query, body=obj, content_type="application/apply-patch+yaml"
        )

    async def get(self, obj: Obj) -> Obj | None:
        status, doc = await self.request("GET", await self.path(obj))
        if status == 404:
            return None
        assert status == 200, f"get {ident(obj)}: HTTP {status}: {doc}"
        return doc

    async def delete(self, obj: Obj) -> None:
        status, doc = await self.request("DELETE", await self.path(obj))
        assert status in (200, 202, 404), f"delete {ident(obj)}: HTTP {status}: {doc}"
