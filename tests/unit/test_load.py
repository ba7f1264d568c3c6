"""The load test's pure parts: its plan and limits, the loopback rule, the event-time pacer, the
latency maths and the report; and the command's refusals (before any service is reached)."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from ys_platform.catalog.codec import timestamp_ms, topic_of
from ys_platform.catalog.models import GasPrice
from ys_platform.cli import load as load_cli
from ys_platform.cli import main
from ys_platform.cli.core import ExitCode
from ys_platform.operations import load
from ys_platform.operations.latency import (
    Attribution,
    Cadence,
    LatencyStats,
    OutputSeen,
    WindowedOutputs,
    attributions,
    latency_by_topic,
    percentile,
)
from ys_platform.operations.load import (
    LATE_MS,
    LOAD_TOPICS,
    EventTimePacer,
    LoadPlan,
    LoadPlanError,
    LoadReport,
    check_loopback,
    traffic,
)
from ys_platform.processing.windows import DEFAULT_EMIT_INTERVAL_MS, DEFAULT_GRACE_MS
from ys_platform.processors.price_aggregation import PriceAggregation
from ys_platform.processors.risk_assessment import RiskAssessmentProcessor

# --- the plan -------------------------------------------------------------------------------------


def test_the_default_topics_are_the_processors_inputs_no_processor_writes():
    assert LOAD_TOPICS == (
        "market.prices",
        "defi.transactions",
        "users.portfolios",
        "crosschain.events",
    )
    assert LoadPlan().topics == LOAD_TOPICS


def test_the_command_line_defaults_are_the_plans():
    assert (load_cli.DEFAULT_RATE, load_cli.DEFAULT_DURATION_S) == (
        load.DEFAULT_RATE,
        load.DEFAULT_DURATION_S,
    )


@pytest.mark.parametrize(
    ("kwargs", "setting", "text"),
    [
        ({"rate": 0.0}, "rate", "positive"),
        ({"rate": -5.0}, "rate", "positive"),
        ({"rate": math.nan}, "rate", "positive"),
        ({"rate": math.inf}, "rate", "positive"),
        ({"rate": 10_001.0}, "rate", "above the limit of 10,000"),
        ({"duration_s": 0.0}, "duration", "positive"),
        ({"duration_s": 3_601.0}, "duration", "above the limit of 3,600 s"),
        ({"topics": ()}, "topics", "at least one"),
        ({"topics": ("market.prices", "market.analytics")}, "topics", "market.analytics: not"),
        ({"topics": ("nope",)}, "topics", "nope: not an input"),
        ({"drain_s": -1.0}, "drain", "negative"),
    ],
)
def test_a_plan_out_of_bounds_is_refused_naming_the_setting(kwargs, setting, text):
    with pytest.raises(LoadPlanError, match=text) as refused:
        LoadPlan(**kwargs)
    assert refused.value.setting == setting


def test_the_limits_themselves_are_accepted():
    plan = LoadPlan(rate=load.MAX_RATE, duration_s=load.MAX_DURATION_S)
    assert (plan.rate, plan.duration_s) == (10_000.0, 3_600.0)


def test_the_groups_and_outputs_follow_the_topics():
    prices = LoadPlan(topics=("market.prices",))
    assert [g.group_id for g in prices.groups] == [
        "price-aggregation-processor",
        "crosschain-arbitrage-processor",
    ]
    assert prices.outputs == ("market.analytics", "crosschain.arbitrage")
    lending = LoadPlan(topics=("users.portfolios",), namespace="ns.")
    assert [g.group_id for g in lending.groups] == ["risk-assessment-processor"]
    assert lending.outputs == ("risk.assessments", "risk.alerts")
    assert lending.physical("users.portfolios") == "ns.users.portfolios"


def test_the_mix_keeps_the_simulators_shares_of_the_topics_loaded():
    assert LoadPlan(topics=("market.prices", "crosschain.events")).mix() == {
        "market.prices": 0.85,
        "crosschain.events": 0.05,
        "defi.transactions": 0.0,
        "users.portfolios": 0.0,
    }


def test_the_traffic_is_exactly_the_rate_for_the_duration_on_the_topics_asked():
    plan = LoadPlan(rate=1_000.0, duration_s=4.0, topics=("market.prices", "crosschain.events"))
    start_ms = 1_800_000_000_000
    messages = list(traffic(plan, start_ms))
    counts = Counter(topic_of(m) for m in messages)
    assert sum(counts.values()) == 4_000
    # 0.85 : 0.05 of the simulator's mix, exact over the run.
    assert counts == {"market.prices": 3_778, "crosschain.events": 222}
    times = [timestamp_ms(m) for m in messages]
    assert times == sorted(times)
    assert start_ms <= times[0] and times[-1] < start_ms + 4_000


def test_loading_portfolios_starts_with_every_users_snapshot():
    plan = LoadPlan(rate=100.0, duration_s=1.0, topics=("users.portfolios",), users=30)
    counts = Counter(topic_of(m) for m in traffic(plan, 1_800_000_000_000))
    # The initial snapshot of each of the 30 users, then 100 msg/s of snapshots.
    assert counts == {"users.portfolios": 130}


# --- the loopback rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "servers", ["127.0.0.1:9092", "localhost:9092", "[::1]:9092", "127.0.0.2:1,127.0.0.1:9093"]
)
def test_loopback_servers_are_accepted(servers):
    check_loopback(servers)


@pytest.mark.parametrize(
    ("servers", "named"),
    [
        ("10.0.0.5:9092", "10.0.0.5:9092"),
        ("kafka:9092", "kafka:9092"),
        ("127.0.0.1:9092,broker-2.example.com:9092", "broker-2.example.com:9092"),
        ("[2001:db8::1]:9092", "[2001:db8::1]:9092"),
    ],
)
def test_any_other_server_is_refused_by_name(servers, named):
    with pytest.raises(LoadPlanError, match="only runs against a loopback cluster") as refused:
        check_loopback(servers)
    assert refused.value.setting == "bootstrap"
    assert named in str(refused.value)


# --- the pacer ------------------------------------------------------------------------------------


class _Clock:
    """A monotonic clock that moves only when waited on (or pushed)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _gas(at_ms: int) -> GasPrice:
    ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at_ms)
    return GasPrice(chain="ethereum", gas_usd=0.5, ts=ts)


START_MS = 1_800_000_000_000


def test_the_pacer_waits_until_each_message_is_due_on_the_monotonic_clock():
    clock = _Clock()
    pacer = EventTimePacer(START_MS, clock=clock, wait=clock.wait)
    for i, offset_ms in enumerate([0, 250, 250, 1_000]):
        pacer(i, _gas(START_MS + offset_ms))
    assert clock.waits == pytest.approx([0.25, 0.75])
    assert clock.now == pytest.approx(101.0)
    assert (pacer.first_ms, pacer.last_ms) == (START_MS, START_MS + 1_000)
    assert (pacer.late, pacer.max_late_ms) == (0, 0.0)


def test_a_message_already_due_goes_at_once_and_lateness_is_counted():
    clock = _Clock()
    pacer = EventTimePacer(START_MS, clock=clock, wait=clock.wait)
    clock.now += 0.5  # the generator stalled half a second
    pacer(0, _gas(START_MS + 495))  # 5 ms late: within LATE_MS
    pacer(1, _gas(START_MS + 100))  # 400 ms late
    pacer(2, _gas(START_MS + 600))  # 100 ms ahead: waited for
    assert clock.waits == pytest.approx([0.1])
    assert pacer.late == 1 and LATE_MS > 5.0
    assert pacer.max_late_ms == pytest.approx(400.0)


def test_the_schedule_holds_the_rate_whatever_the_cost_of_a_message():
    """Each message costs 0.4 ms (below its 0.5 ms share at 2,000 msg/s): the schedule ends
    when the last one is due, so the rate is the target's."""
    plan = LoadPlan(rate=2_000.0, duration_s=5.0, topics=("market.prices",))
    clock = _Clock()
    pacer = EventTimePacer(START_MS, clock=clock, wait=clock.wait)
    count = 0
    for i, message in enumerate(traffic(plan, START_MS)):
        pacer(i, message)
        clock.now += 0.0004
        count += 1
    elapsed = clock.now - pacer.due(pacer.first_ms)
    assert count == 10_000
    assert abs(count / elapsed - 2_000.0) / 2_000.0 < 0.005


# --- latency ---------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted
    assert [percentile(values, q) for q in (0.5, 0.95, 0.99, 1.0)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0], 0.5) == 1.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 0.0)


def test_stats_of_no_samples_are_none():
    assert LatencyStats.of([]) is None
    assert LatencyStats.of([30.0, 10.0, 20.0]) == LatencyStats(3, 20.0, 30.0, 30.0, 30.0)


def test_price_aggregation_declares_its_cadence_and_risk_none():
    assert isinstance(PriceAggregation(), WindowedOutputs)
    assert PriceAggregation().emit_interval_ms == DEFAULT_EMIT_INTERVAL_MS == 5_000
    assert PriceAggregation().emit_delay_ms == DEFAULT_GRACE_MS == 5_000
    assert not isinstance(RiskAssessmentProcessor(), WindowedOutputs)


WINDOW = Cadence(interval_ms=5_000, delay_ms=5_000)


def test_attributions_follow_the_catalog_from_windows_to_their_readers():
    found = load._attributions(load._processors())
    assert found == {
        "market.analytics": Attribution(own=WINDOW),
        "risk.assessments": Attribution(upstream=(WINDOW,)),
        "risk.alerts": Attribution(upstream=(WINDOW,)),
        "crosschain.arbitrage": Attribution(),
    }
    # The same from plain tables.
    assert attributions(
        {"w": ["in"], "r": ["out", "tx"]}, {"w": ["out"], "r": ["risk"]}, {"w": WINDOW}
    ) == {"out": Attribution(own=WINDOW), "risk": Attribution(upstream=(WINDOW,))}


def test_a_window_counts_from_its_end_plus_grace():
    assert Attribution(own=WINDOW).cause_ms(10_000, 15_120.0) == 15_000


def test_a_readers_output_on_a_window_end_counts_from_the_windows_close():
    reader = Attribution(upstream=(WINDOW,))
    # A risk assessment stamped with the moved window's end, seen after the window closed.
    assert reader.cause_ms(10_000, 15_400.0) == 15_000
    # On its own trigger (not a window end): its event time.
    assert reader.cause_ms(10_001, 10_090.0) == 10_001
    # A trigger that happens to fall on a whole interval, seen before a window could close.
    assert reader.cause_ms(20_000, 20_080.0) == 20_000


def test_latency_counts_from_the_cause_and_only_causes_within_the_load():
    first, last = 10_000, 20_000
    seen = [
        # A window ending at 10,000 closes at 15,000 (grace 5,000): 120 ms.
        OutputSeen("market.analytics", 10_000, 15_120.0),
        # A window whose close precedes the load: another traffic's.
        OutputSeen("market.analytics", 4_000, 9_100.0),
        # An arbitrage detected on the tick at 19,990: 40 ms.
        OutputSeen("crosschain.arbitrage", 19_990, 20_030.0),
        # ... and one whose trigger came after the load's last input.
        OutputSeen("crosschain.arbitrage", 20_001, 20_050.0),
        OutputSeen("crosschain.arbitrage", first, first + 15.5),
        # A risk assessment on the window ending at 10,000: 200 ms after it closed.
        OutputSeen("risk.assessments", 10_000, 15_200.0),
    ]
    samples = latency_by_topic(seen, load._attributions(load._processors()), first, last)
    assert samples == {
        "market.analytics": [120.0],
        "crosschain.arbitrage": [40.0, 15.5],
        "risk.assessments": [200.0],
    }


# --- the report ------------------------------------------------------------------------------


def _report(latency: LatencyStats | None) -> LoadReport:
    return LoadReport(
        target_rate=2_000.0,
        duration_s=10.0,
        produced={"market.prices": 17_000, "crosschain.events": 3_000},
        seconds=10.0,
        latency=latency,
        latency_by_topic={} if latency is None else {"market.analytics": latency},
        outputs={"market.analytics": 0 if latency is None else latency.samples},
        lag_at_end={"price-aggregation-processor": 120, "crosschain-arbitrage-processor": 900},
        caught_up_s={"price-aggregation-processor": 0.5},
        lag_after_drain={"price-aggregation-processor": 0, "crosschain-arbitrage-processor": 900},
        running=("price-aggregation-processor",),
    )


def test_the_summary_is_one_line_with_rate_percentiles_and_lag():
    line = _report(LatencyStats(80, 110.4, 190.0, 240.6, 300.0)).summary()
    assert "\n" not in line
    assert line == (
        "load: 20,000 records in 10.0 s (market.prices 17,000, crosschain.events 3,000): "
        "2,000 msg/s for a target of 2,000; latency p50 110 ms, p95 190 ms, p99 241 ms over 80 "
        "outputs; lag at the end: price-aggregation-processor 120 (0 after 0.5 s), "
        "crosschain-arbitrage-processor 900 (not running)"
    )


def test_without_outputs_the_summary_says_so_in_a_sentence():
    report = _report(None)
    assert "; no latency: the running processors made no output" in report.summary()
    assert "p50" not in report.summary()
    document = report.to_json()
    assert document["latency"] is None and document["note"] == report.no_latency_reason()
    assert document["total"] == 20_000 and document["achieved_rate"] == 2_000.0
    report.running = ()
    assert report.no_latency_reason().startswith("no latency: no processor is running")


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A stack that is not running: nothing is reached before the refusals under test."""
    monkeypatch.delenv("YS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("YS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29392")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "50000"], "ys-platform: --rate: rate 50,000 msg/s is above the limit"),
        (["--duration", "7200"], "ys-platform: --duration: duration 7,200 s is above the limit"),
        (["--topics", "risk.alerts"], "ys-platform: --topics: risk.alerts: not an input"),
    ],
)
def test_the_command_refuses_a_load_out_of_bounds_naming_the_flag(isolated, capsys, argv, message):
    assert main(["load", *argv]) == ExitCode.CONFIG
    assert capsys.readouterr().err.startswith(message)


def test_the_command_refuses_a_remote_cluster_unless_allowed(isolated, monkeypatch, capsys):
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", "kafka.example.com:9092")
    assert main(["load"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "kafka.example.com:9092 is not one" in err and "--allow-remote" in err
    assert err.count("\n") == 1


def test_the_command_says_when_the_cluster_is_unreachable(isolated, capsys):
    assert main(["load", "--duration", "1"]) == ExitCode.FAILED
    err = capsys.readouterr().err
    assert err.startswith("ys-platform: Cannot reach Kafka at 127.0.0.1:29392")
