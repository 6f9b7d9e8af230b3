"""Host ownership over all HTTP targets: defaults always kept, takeovers refused naming the owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.errors import AnnotationProblem
from autoscaler.model import TargetKey
from autoscaler.policy import hosts

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEB = TargetKey("qa1", "web")


def claim(namespace: str, name: str, host: str | None = None, *, age: int = 0) -> hosts.Claimant:
    """A claimant created ``age`` seconds before T0 (older = larger age)."""
    return hosts.Claimant(TargetKey(namespace, name), T0 - timedelta(seconds=age), host)


def test_every_target_owns_its_default_hosts_in_every_spelling() -> None:
    owned = hosts.resolve([claim("qa1", "web")])
    assert {host for host, owner in owned.owners.items() if owner == WEB} == {
        "web.qa1",
        "web.qa1.svc",
        "web.qa1.svc.cluster.local",
    }
    assert not owned.refused


def test_a_claim_of_another_targets_default_host_is_refused_naming_the_owner_even_from_an_older_target() -> (
    None
):
    thief = claim("qa1", "thief", "web.qa1.svc", age=100)
    owned = hosts.resolve([thief, claim("qa1", "web")])
    assert owned.owner("web.qa1.svc") == WEB
    assert owned.refused == {
        thief.target: AnnotationProblem(
            "http-host",
            "web.qa1.svc",
            "a host no other target owns: web.qa1.svc is the default host of qa1/web",
        )
    }


def test_a_host_of_another_namespace_is_refused_unless_cross_namespace_claims_are_allowed() -> None:
    thief = claim("qa0", "thief", "api.qa1")
    refused = hosts.resolve([thief])
    assert refused.owner("api.qa1") is None
    assert "names namespace qa1" in refused.refused[thief.target].allowed
    allowed = hosts.resolve([thief], cross_namespace=True)
    assert allowed.owner("api.qa1") == thief.target
    assert not allowed.refused


def test_a_host_of_ones_own_namespace_and_an_external_name_are_granted() -> None:
    owned = hosts.resolve([claim("qa1", "web", "api.qa1.svc"), claim("qa1", "other", "api.example.com")])
    assert owned.owner("api.qa1.svc") == WEB
    assert owned.owner("api.example.com") == TargetKey("qa1", "other")
    assert not owned.refused


def test_a_custom_cluster_domain_marks_the_namespace_of_a_full_service_name() -> None:
    thief = claim("qa0", "thief", "api.qa1.svc.corp.internal")
    assert thief.target in hosts.resolve([thief], cluster_domain="corp.internal").refused
    assert thief.target not in hosts.resolve([thief]).refused


def test_of_two_claims_of_one_host_the_older_deployment_keeps_it_then_the_first_by_namespace_and_name() -> (
    None
):
    older = claim("shop", "zeta", "api.example.com", age=10)
    newer = claim("shop", "alpha", "api.example.com", age=1)
    owned = hosts.resolve([newer, older])
    assert owned.owner("api.example.com") == older.target
    assert "claimed by shop/zeta, an older Deployment" in owned.refused[newer.target].allowed
    tie_a = claim("shop", "a", "api.example.com")
    tie_b = claim("shop", "b", "api.example.com")
    assert hosts.resolve([tie_b, tie_a]).owner("api.example.com") == tie_a.target
    unknown_age = hosts.Claimant(TargetKey("shop", "aaa"), None, "api.example.com")
    assert hosts.resolve([unknown_age, tie_b]).owner("api.example.com") == tie_b.target


NAMES = st.sampled_from(["web", "api", "thief", "a", "b"])
NAMESPACES = st.sampled_from(["qa0", "qa1", "shop"])
HOSTS = st.one_of(
    st.none(),
    st.sampled_from(["web.qa1", "api.qa0.svc", "shared.example.com", "web.shop.svc.cluster.local", "x.y.z"]),
)
CLAIMANTS = st.lists(
    st.builds(
        hosts.Claimant,
        st.builds(TargetKey, NAMESPACES, NAMES),
        st.one_of(st.none(), st.integers(0, 5).map(lambda s: T0 + timedelta(seconds=s))),
        HOSTS,
    ),
    max_size=8,
    unique_by=lambda c: c.target,
)


@given(claimants=CLAIMANTS, data=st.data())
@settings(max_examples=300, deadline=None)
def test_every_replica_agrees_whatever_order_it_saw_the_targets_in_and_no_host_has_two_owners(
    claimants: list[hosts.Claimant], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(claimants))
    first, second = hosts.resolve(claimants), hosts.resolve(shuffled)
    assert first == second
    for claimant in claimants:
        for host in hosts.default_hosts(claimant.target):
            assert first.owner(host) == claimant.target
        if claimant.host is not None:
            granted = first.owner(claimant.host) == claimant.target
            assert granted != (claimant.target in first.refused)
