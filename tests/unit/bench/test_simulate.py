"""The scaling simulator on tiny traces: conservation, replica-seconds, determinism, the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import simulate
from bench.sim import engine, keda, knative, ours, report, traces
from bench.sim.engine import View, WorkerModel
from bench.sim.hpa import Hpa, HpaBehavior

FAST = WorkerModel(throughput=10.0, drawn=False, start_min=1.0, start_extra=0.0, partitions=4)


class Fixed:
    """A policy that asks for a fixed count from a given time on."""

    def __init__(self, replicas: int, *, after: float = 0.0) -> None:
        self.name = f"fixed-{replicas}"
        self.replicas = replicas
        self.after = after

    def step(self, view: View) -> int:
        return self.replicas if view.t >= self.after else view.spec


def tiny(arrivals: list[int], *, kind: traces.Kind = "kafka") -> traces.Trace:
    return traces.Trace("tiny", kind, tuple(arrivals), 0.1, ((0.0, len(arrivals) * 0.1),), (), "tiny")


def view(
    *, spec: int, backlog: int = 0, partitions: int = 4, t: float = 0.0, ready: int | None = None
) -> View:
    end = tuple([backlog // partitions + (1 if p < backlog % partitions else 0) for p in range(partitions)])
    ready = spec if ready is None else ready
    return View(t, spec, spec, ready, (0,) * partitions, end, backlog, False)


def test_every_arrival_is_processed_or_still_in_the_backlog() -> None:
    trace = tiny([7, 0, 3, 25, 0, 0, 1] * 30)
    run = engine.simulate(trace, FAST, Fixed(1), seed=3)
    assert run.arrived == trace.total == 36 * 30
    assert run.processed + run.left == run.arrived
    assert run.left > 0  # one replica at 10/s cannot keep up with 37 per 0.7 s


def test_replica_seconds_are_the_integral_of_existing_pods_over_time() -> None:
    # 3 pods asked for at the end of the first of 100 steps of 0.1 s: they exist for the other 99.
    run = engine.simulate(tiny([1] * 100), FAST, Fixed(3), seed=1)
    assert run.replica_seconds == pytest.approx(3 * 9.9)
    # 2 pods asked for at the end of the step that ends at 5 s: 2 × (10 s − 5 s).
    later = engine.simulate(tiny([0] * 100), FAST, Fixed(2, after=5.0), seed=1)
    assert later.replica_seconds == pytest.approx(2 * 5.0)


def test_a_run_is_deterministic_for_a_seed_and_the_draws_depend_on_it() -> None:
    model = WorkerModel(throughput=10.0, drawn=True, start_min=1.0, start_extra=2.0, partitions=4)
    trace = traces.bursty(rate=40, mean_on=5, mean_off=10, duration=60, seed=5)
    again = traces.bursty(rate=40, mean_on=5, mean_off=10, duration=60, seed=5)
    assert trace.arrivals == again.arrivals
    first = engine.simulate(trace, model, ours.Ours("ours", {"kafka-group": "g"}), seed=9)
    second = engine.simulate(trace, model, ours.Ours("ours", {"kafka-group": "g"}), seed=9)
    other = engine.simulate(trace, model, ours.Ours("ours", {"kafka-group": "g"}), seed=10)
    assert first.metrics() == second.metrics()
    assert first.samples == second.samples
    assert first.samples != other.samples


def test_replicas_beyond_the_partition_count_process_nothing_more() -> None:
    trace = tiny([50] * 50)
    at_cap = engine.simulate(trace, FAST, Fixed(4), seed=1)
    beyond = engine.simulate(trace, FAST, Fixed(8), seed=1)
    assert beyond.processed == at_cap.processed


def test_a_new_pod_processes_only_after_its_start_delay() -> None:
    slow = WorkerModel(throughput=100.0, drawn=False, start_min=2.0, start_extra=0.0, partitions=1)
    run = engine.simulate(tiny([5] + [0] * 14), slow, Fixed(1), seed=1)
    # The pod asked for at 0.1 s turns ready at 2.1 s; until then the backlog stays.
    assert [s.backlog for s in run.samples] == [5, 5]
    assert run.processed == 0
    done = engine.simulate(tiny([5] + [0] * 29), slow, Fixed(1), seed=1)
    assert done.processed == 5
    # Arrived mid-step at 0.05 s, processed by the end of the step in which the pod turned ready.
    assert done.backlog_age_p99_s == pytest.approx(2.05, abs=0.06)


def test_our_policy_is_the_real_decision_with_its_window_and_idle_timer() -> None:
    notes = {"kafka-group": "g", "scale-to-zero-after": "10s", "scale-down-window": "5s"}
    policy = ours.Ours("ours", notes)
    run = engine.simulate(tiny([40] + [0] * 400), FAST, policy, seed=1)
    assert run.processed == 40
    assert "activate" in policy.rules
    assert "scale-to-zero" in policy.rules
    assert run.samples[-1].spec == 0
    # Idle from the first tick that saw no lag, then scale-to-zero-after: 10 s plus at most a tick or two.
    assert run.time_to_zero_s is not None
    assert 10 <= run.time_to_zero_s <= 14


def test_an_http_request_at_zero_pokes_our_loop_at_once() -> None:
    policy = ours.Ours("ours", {"http-service": "w"})
    first = View(0.55, 0, 0, 0, (0,), (1,), 1, True)
    assert policy.step(View(0.05, 0, 0, 0, (0,), (0,), 0, False)) == 0  # the first tick
    assert policy.step(first) == 1  # not a tick: the poke decided


def test_keda_lets_a_lag_just_under_the_next_threshold_ask_for_one_replica_more_than_partitions() -> None:
    metric, active = keda.kafka_metric(view(spec=4, backlog=4 * 10 + 9), keda.DEFAULT)
    assert active
    assert metric == 49  # 49 // 10 == 4 is not > 4 partitions: uncapped
    assert Hpa(HpaBehavior()).raw(metric=metric, target=10, status_replicas=1) == 5


def test_keda_caps_a_large_lag_at_partitions_and_the_tolerance_stalls_one_below_the_cap() -> None:
    metric, _ = keda.kafka_metric(view(spec=11, backlog=5000, partitions=12), keda.DEFAULT)
    assert metric == 120
    # 120 / (10 × 11) = 1.09: within the 0.1 tolerance, so 11 replicas stay for 12 partitions.
    assert Hpa(HpaBehavior()).raw(metric=metric, target=10, status_replicas=11) == 11
    # At 11 partitions 110 / 100 is 1.1 and float arithmetic puts |1 − 1.1| just above 0.1: it moves.
    assert Hpa(HpaBehavior()).raw(metric=110, target=10, status_replicas=10) == 11


def test_the_hpa_adds_at_most_four_pods_or_doubles_per_period() -> None:
    hpa = Hpa(HpaBehavior())
    assert hpa.sync(0.0, metric=1000, target=10, current=1, status_replicas=1) == 5
    assert hpa.sync(15.0, metric=1000, target=10, current=5, status_replicas=5) == 10
    assert hpa.sync(30.0, metric=1000, target=10, current=10, status_replicas=10) == 20


def test_the_hpa_scales_down_only_to_the_highest_recommendation_of_its_stabilization_window() -> None:
    hpa = Hpa(HpaBehavior())
    assert hpa.sync(0.0, metric=100, target=10, current=10, status_replicas=10) == 10
    assert hpa.sync(15.0, metric=10, target=10, current=10, status_replicas=10) == 10
    assert hpa.sync(285.0, metric=10, target=10, current=10, status_replicas=10) == 10
    # The recommendation of t = 0 leaves the 300 s window (strictly after now − window) at t = 300.
    assert hpa.sync(300.0, metric=10, target=10, current=10, status_replicas=10) == 1


def test_keda_wakes_from_zero_only_at_its_poll_and_goes_to_zero_after_the_cooldown() -> None:
    policy = keda.Keda("keda", keda.DEFAULT)
    assert policy.step(view(spec=0, t=0.05)) == 0  # poll at 0: nothing
    assert policy.step(view(spec=0, backlog=5, t=10.0)) == 0  # lag, but no poll until 30 s
    assert policy.step(view(spec=0, backlog=5, t=30.0)) == 1
    assert policy.step(view(spec=1, t=60.0)) == 1  # inactive, cooling down since 30 s
    policy._next_poll = 330.0
    assert policy.step(view(spec=1, t=330.05)) == 0


def test_knative_panics_on_a_burst_and_never_scales_down_while_panicking() -> None:
    kpa = knative.Kpa("kpa", knative.KpaConfig(container_concurrency=10))
    counts = []
    spec = 1
    for second in range(20):
        concurrency = 140 if second < 4 else 0
        spec = kpa.step(View(float(second), spec, spec, 1, (0,), (0,), concurrency, False))
        counts.append(spec)
    assert max(counts) >= 10  # 140 / 7 = 20 desired, panic mode at >= 2× the ready pod
    assert counts[counts.index(max(counts)) :] == [max(counts)] * (20 - counts.index(max(counts)))


def test_a_csv_trace_spreads_each_bucket_exactly_and_rejects_a_bad_line() -> None:
    trace = traces.from_csv("t", "timestamp,count\n0,10\n1,0\n2,7\n")
    assert trace.total == 17
    assert sum(trace.arrivals[:10]) == 10
    assert trace.bursts == ((0.0, 1.0), (2.0, 3.0))
    with pytest.raises(ValueError, match=r"line 3: expected 'timestamp,count'"):
        traces.parse_csv("timestamp,count\n0,1\n1,x\n")
    with pytest.raises(ValueError, match="must increase"):
        traces.parse_csv("0,1\n0,2\n")


def test_a_burst_that_goes_up_and_down_once_has_one_reversal_and_flapping_has_more() -> None:
    bursts = ((0.0, 10.0), (100.0, 110.0))
    changes = [(1.0, 1), (2.0, 1), (50.0, -1), (101.0, 1), (102.0, -1), (103.0, 1)]
    assert engine.reversals_per_burst(changes, bursts) == (1, 2)
    # A count still coming down from the previous burst when the next one starts is not a reversal.
    tail = [(1.0, 1), (50.0, -1), (100.5, -1), (101.0, 1), (150.0, -1)]
    assert engine.reversals_per_burst(tail, bursts) == (1, 1)


def test_the_results_have_the_documented_shape(tmp_path: Path) -> None:
    found = {"tiny": tiny([3] * 50)}
    runs = {
        "tiny": [
            engine.simulate(found["tiny"], FAST, make(), seed=1) for make in simulate.policies(found["tiny"])
        ]
    }
    report.write(tmp_path, runs, found, command="test", png=True)
    doc = json.loads((tmp_path / "simulation.json").read_text())
    [entry] = doc["traces"]
    assert entry["name"] == "tiny"
    assert set(entry["policies"]) == {"ours-default", "ours-drain-within", "keda-default", "keda-tuned"}
    for metrics in entry["policies"].values():
        assert set(metrics) == {
            "replica_seconds",
            "backlog_age_p50_s",
            "backlog_age_p99_s",
            "max_backlog",
            "scale_changes",
            "time_to_zero_s",
        }
    assert (tmp_path / "simulation-tiny.png").stat().st_size > 0
    assert "| ours-default |" in (tmp_path / "simulation.md").read_text()


def test_our_policy_sees_the_simulated_partitions_under_its_annotated_topic() -> None:
    policy = ours.Ours("ours", {"kafka-group": "g", "kafka-topics": "billing"})
    run = engine.simulate(tiny([40] + [0] * 100), FAST, policy, seed=1)
    assert "activate" in policy.rules
    assert run.processed == 40


def test_a_membership_change_pauses_every_consumer_for_the_rebalance() -> None:
    paused = WorkerModel(
        throughput=10.0, drawn=False, start_min=1.0, start_extra=0.0, partitions=4, rebalance_pause=2.0
    )
    trace = tiny([20] + [0] * 49)
    quick = engine.simulate(trace, FAST, Fixed(1), seed=1)
    slow = engine.simulate(trace, paused, Fixed(1), seed=1)
    assert quick.processed == slow.processed == 20
    # The one consumer joins at 1.1 s and then waits out 2 s of rebalance before its first record.
    assert slow.backlog_age_p50_s == pytest.approx(quick.backlog_age_p50_s + 2.0, abs=0.15)


def test_a_replayed_run_gives_each_scale_up_its_measured_start_delay_and_stops_in_its_windows() -> None:
    trace = tiny([20] + [0] * 79)
    replayed = WorkerModel(
        throughput=10.0,
        drawn=False,
        start_min=1.0,
        start_extra=0.0,
        partitions=4,
        start_delays=(3.0,),
        stopped=((3.0, 5.0),),
    )
    run = engine.simulate(trace, replayed, Fixed(1), seed=1)
    assert run.processed == 20
    # Asked for at 0.1 s, ready at 3.1 s (the measured delay, not start_min), stopped until 5 s:
    # the first record leaves at the end of the step after 5 s, the last 2 s later at 10 records/s.
    first = engine.simulate(tiny([1] + [0] * 79), replayed, Fixed(1), seed=1)
    assert first.backlog_age_p50_s == pytest.approx(5.1 - 0.05, abs=0.06)
    assert run.backlog_age_p99_s == pytest.approx(5.1 + 1.9 - 0.05, abs=0.15)


def test_a_stopped_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="stopped window"):
        WorkerModel(stopped=((5.0, 4.0),))
