"""The retry schedule and the commit bookkeeping of the dispatcher."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.eventing import delivery
from autoscaler.eventing.delivery import Delivery


def test_linear_backoff_waits_delay_times_the_retry_number() -> None:
    assert delivery.schedule(Delivery(retry=4, backoff_policy="linear", backoff_delay=0.1)) == pytest.approx(
        (0.1, 0.2, 0.3, 0.4)
    )


def test_exponential_backoff_waits_delay_times_two_to_the_retry_number() -> None:
    assert delivery.schedule(Delivery(retry=3, backoff_policy="exponential", backoff_delay=0.1)) == (
        pytest.approx((0.2, 0.4, 0.8))
    )


def test_no_retries_means_an_empty_schedule_and_retry_zero_is_refused() -> None:
    assert delivery.schedule(Delivery(retry=0)) == ()
    with pytest.raises(ValueError, match="numbered from 1"):
        delivery.backoff(Delivery(), 0)


@pytest.mark.parametrize("status", [None, 500, 502, 503, 404, 408, 409, 429])
def test_server_errors_timeouts_and_the_knative_retried_4xx_are_retried(status: int | None) -> None:
    assert delivery.retriable(status)


@pytest.mark.parametrize("status", [400, 401, 403, 410, 302])
def test_other_client_errors_and_redirects_go_to_the_dead_letter_sink_at_once(status: int) -> None:
    assert not delivery.retriable(status)
    assert not delivery.succeeded(status)


def test_a_failing_dead_letter_sink_is_retried_forever_with_a_capped_wait() -> None:
    policy = Delivery(retry=2, backoff_policy="linear", backoff_delay=1.0)
    waits = [delivery.dead_letter_wait(policy, n) for n in range(1, 30)]
    assert waits[:2] == [1.0, 2.0]
    assert all(0 < w <= delivery.DEAD_LETTER_MAX_WAIT for w in waits)
    assert waits[-1] == delivery.DEAD_LETTER_MAX_WAIT


def test_the_commit_stays_below_an_unfinished_record_and_moves_past_gaps() -> None:
    progress = delivery.Progress()
    assert progress.committable is None
    for offset in (5, 6, 9, 10):  # 7 and 8 are a transaction marker and a compacted record
        progress = progress.fetched(offset)
    assert progress.committable == 5
    progress = progress.finished(6).finished(9)
    assert progress.committable == 5
    progress = progress.finished(5)
    assert progress.committable == 10
    progress = progress.finished(10)
    assert (progress.committable, progress.in_flight) == (11, 0)


def test_records_out_of_order_or_finished_twice_are_refused() -> None:
    progress = delivery.Progress().fetched(3)
    with pytest.raises(ValueError, match="arrive in order"):
        progress.fetched(2)
    with pytest.raises(ValueError, match="not in flight"):
        progress.finished(3).finished(3)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.randoms())
def test_the_committable_offset_never_passes_an_unfinished_record(gaps: list[int], rnd: object) -> None:
    offsets, at = [], 0
    for gap in gaps:
        at += gap + 1
        offsets.append(at)
    progress = delivery.Progress()
    for offset in offsets:
        progress = progress.fetched(offset)
    order = list(offsets)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    done: set[int] = set()
    for offset in order:
        progress = progress.finished(offset)
        done.add(offset)
        committable = progress.committable
        assert committable is not None
        assert all(o in done for o in offsets if o < committable)
        assert committable == max(offsets) + 1 or committable not in done
    assert progress.committable == max(offsets) + 1


def test_a_triggers_delivery_inherits_what_it_leaves_out_from_its_brokers() -> None:
    broker = {"retry": 5, "backoffPolicy": "linear", "timeout": "PT2S"}
    assert delivery.inherited(None, broker) == broker
    assert delivery.inherited({"retry": 1}, broker) == {
        "retry": 1,
        "backoffPolicy": "linear",
        "timeout": "PT2S",
    }
    assert delivery.inherited({"retry": 1}, None) == {"retry": 1}
    assert delivery.inherited(None, {}) is None
    assert delivery.inherited("not a mapping", broker) == "not a mapping"  # left for the parser to report
