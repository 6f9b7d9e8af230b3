"""The pod network: a host bridge and one network namespace per pod, attached by a veth pair.

Pods get addresses from the bridge's private /16, which exists only on this machine. Every namespace and
link the stack creates carries the ``qa-`` prefix so ``down`` can find and remove all of them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

NETNS_PREFIX = "qa-pod-"
VETH_PREFIX = "qa-v"


def _ip(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def bridge_exists(bridge: str) -> bool:
    return _ip(["link", "show", bridge], check=False).returncode == 0


def ensure_bridge(bridge: str, address: str, prefix_len: int) -> None:
    if not bridge_exists(bridge):
        _ip(["link", "add", bridge, "type", "bridge"])
    addrs = _ip(["-o", "addr", "show", "dev", bridge]).stdout
    if f"{address}/{prefix_len}" not in addrs:
        _ip(["addr", "add", f"{address}/{prefix_len}", "dev", bridge])
    _ip(["link", "set", bridge, "up"])


def remove_bridge(bridge: str) -> None:
    if bridge_exists(bridge):
        _ip(["link", "del", bridge])


def pod_namespaces() -> list[str]:
    out = _ip(["netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def create_pod_namespace(
    *, netns: str, veth: str, bridge: str, address: str, prefix_len: int, gateway: str
) -> None:
    """Creates ``netns`` with loopback up and eth0 = ``address`` on ``bridge``; idempotent on retry."""
    delete_pod_namespace(netns=netns, veth=veth)
    _ip(["netns", "add", netns])
    _ip(["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _ip(["link", "set", veth, "master", bridge, "up"])
    _ip(["-n", netns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0"])
    _ip(["-n", netns, "link", "set", "eth0", "up"])
    _ip(["-n", netns, "link", "set", "lo", "up"])
    _ip(["-n", netns, "route", "add", "default", "via", gateway])


def delete_pod_namespace(*, netns: str, veth: str) -> None:
    _ip(["link", "del", veth], check=False)
    _ip(["netns", "del", netns], check=False)


def remove_all_pod_namespaces() -> None:
    for netns in pod_namespaces():
        _ip(["netns", "del", netns], check=False)
    out = _ip(["-o", "link", "show"], check=False).stdout
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX):
            _ip(["link", "del", name], check=False)
