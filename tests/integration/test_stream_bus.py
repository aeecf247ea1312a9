"""The Redis Streams transport against a real, private redis-server: ordering, at-least-once delivery
across crashes, broker restarts, acks from other threads, bounded streams."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import redis
import structlog
from structlog.testing import LogCapture

from msightd.bus import BusUnavailable, Delivery, ack_all
from msightd.bus.connection import RedisSettings
from msightd.bus.pubsub import RedisPubSubBus
from msightd.bus.router import TopicSettings, open_bus
from msightd.bus.streams import RedisStreamBus, StreamSubscription
from tests.support.redis import RedisEndpoint

pytestmark = pytest.mark.timeout(90)

GROUP = "dumper-1"
TOPIC = "frames"

BusFactory = Callable[..., RedisStreamBus]


@pytest.fixture
def capture() -> LogCapture:
    return LogCapture()


@pytest.fixture
def log(capture: LogCapture) -> Any:
    """A logger of our own (no global structlog configuration) whose events land in ``capture``."""
    return structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)
    )


@pytest.fixture
def settings(redis_server: RedisEndpoint) -> RedisSettings:
    return RedisSettings(url=redis_server.url)


@pytest.fixture
def raw(settings: RedisSettings) -> Iterator[redis.Redis]:
    """A plain client to look inside the broker."""
    client = settings.client()
    yield client
    client.close()


@pytest.fixture
def make_bus(settings: RedisSettings, log: Any) -> Iterator[BusFactory]:
    """Open stream buses (one per simulated process); all are closed at the end."""
    opened: list[RedisStreamBus] = []

    def make(consumer: str = GROUP, group: str = GROUP, maxlen: int = 10_000, **options: Any) -> RedisStreamBus:
        bus = RedisStreamBus(settings, log, consumer_group=group, consumer_name=consumer, maxlen=maxlen, **options)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        bus.close()


def receive_n(subscription: StreamSubscription, count: int, limit_s: float = 10.0) -> list[Delivery]:
    received: list[Delivery] = []
    deadline = time.monotonic() + limit_s
    while len(received) < count and time.monotonic() < deadline:
        delivery = subscription.receive(timeout_s=0.2)
        if delivery is not None:
            received.append(delivery)
    assert len(received) == count, f"received {len(received)} of {count} within {limit_s} s"
    return received


def payloads(deliveries: list[Delivery]) -> list[bytes]:
    return [d.payload for d in deliveries]


def pending_count(raw: redis.Redis, topic: str = TOPIC) -> int:
    return int(raw.xpending(topic, GROUP)["pending"])


def events(capture: LogCapture, name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in capture.entries if entry["event"] == name]


def test_publishes_then_receives_everything_in_order(make_bus: BusFactory) -> None:
    bus = make_bus()
    expected = {topic: [f"{topic}-{i}".encode() + bytes(range(256)) for i in range(25)] for topic in ("a", "b")}
    for first, second in zip(expected["a"], expected["b"], strict=True):
        bus.publish("a", first)
        bus.publish("b", second)
    subscription = bus.subscribe(["a", "b"])
    received = receive_n(subscription, 50)
    for topic, sent in expected.items():
        assert [d.payload for d in received if d.topic == topic] == sent
    assert subscription.receive(timeout_s=0.3) is None
    subscription.close()


def trickle(bus: RedisStreamBus, topic: str, count: int, interval_s: float) -> None:
    for i in range(count):
        bus.publish(topic, b"%d" % i)
        time.sleep(interval_s)


def xreadgroup_calls(raw: redis.Redis) -> int:
    stats = raw.info("commandstats").get("cmdstat_xreadgroup", {})
    return int(stats.get("calls", 0))


def test_a_batch_wait_reads_a_trickle_in_fewer_round_trips_and_loses_nothing(
    make_bus: BusFactory, raw: redis.Redis
) -> None:
    """A camera's 10-20 frames a second arrive one per XREADGROUP unless the reader lets them gather."""
    calls: dict[float, int] = {}
    for wait_s in (0.0, 0.3):
        topic = f"trickle-{wait_s}"
        bus = make_bus(consumer=f"reader-{wait_s}")
        subscription = bus.subscribe([topic], batch_wait_s=wait_s)
        assert subscription.receive(timeout_s=0.2) is None  # creates the group
        before = xreadgroup_calls(raw)
        publisher = threading.Thread(target=trickle, args=(bus, topic, 24, 0.05))
        publisher.start()
        received = receive_n(subscription, 24)
        publisher.join()
        calls[wait_s] = xreadgroup_calls(raw) - before
        assert [d.payload for d in received] == [b"%d" % i for i in range(24)]
        for delivery in received:
            delivery.ack()
        assert raw.xpending(topic, GROUP)["pending"] == 0
        subscription.close()
    assert calls[0.3] * 2 < calls[0.0], calls


def test_unacked_deliveries_come_back_first_after_a_crash(make_bus: BusFactory, raw: redis.Redis) -> None:
    sent = [b"m%d" % i for i in range(12)]
    for payload in sent:
        make_bus().publish(TOPIC, payload)

    crashed = make_bus().subscribe([TOPIC])
    assert payloads(receive_n(crashed, 5)) == sent[:5]
    crashed.close()  # never acked: the process "died"

    restarted = make_bus().subscribe([TOPIC])
    deliveries = receive_n(restarted, 12)
    assert payloads(deliveries) == sent
    for delivery in deliveries:
        delivery.ack()
    assert restarted.receive(timeout_s=0.3) is None
    restarted.close()
    assert pending_count(raw) == 0

    third = make_bus().subscribe([TOPIC])
    assert third.receive(timeout_s=0.5) is None
    third.close()


def test_entries_published_while_no_consumer_runs_are_delivered_on_start(make_bus: BusFactory) -> None:
    bus = make_bus()
    first = bus.subscribe([TOPIC])
    assert first.receive(timeout_s=0.2) is None  # creates the group
    first.close()
    for i in range(5):
        bus.publish(TOPIC, b"offline-%d" % i)
    second = bus.subscribe([TOPIC])
    assert payloads(receive_n(second, 5)) == [b"offline-%d" % i for i in range(5)]
    second.close()


def test_survives_a_broker_restart(
    make_bus: BusFactory, redis_server: RedisEndpoint, raw: redis.Redis, capture: LogCapture
) -> None:
    bus = make_bus()
    subscription = bus.subscribe([TOPIC])
    bus.publish(TOPIC, b"before")
    [before] = receive_n(subscription, 1)
    raw.set("sentinel", b"1")

    redis_server.stop()
    before.ack()  # broker away: must not raise into the node
    started = time.monotonic()
    for _ in range(5):
        assert subscription.receive(timeout_s=0.2) is None
    assert time.monotonic() - started < 10.0
    with pytest.raises(BusUnavailable):
        bus.publish(TOPIC, b"lost")

    redis_server.start()
    assert raw.get("sentinel") is None, "a real restart: the broker comes back empty"
    bus.publish(TOPIC, b"after")  # before the subscription is back: must not be skipped
    [after] = receive_n(subscription, 1, limit_s=20.0)
    assert after.payload == b"after"
    after.ack()  # may be parked for a moment after the failed ack; the receiving loop flushes it
    deadline = time.monotonic() + 5.0
    while pending_count(raw) and time.monotonic() < deadline:
        assert subscription.receive(timeout_s=0.2) is None
    assert pending_count(raw) == 0
    subscription.close()

    assert len(events(capture, "bus_disconnected")) == 1
    assert len(events(capture, "bus_reconnected")) == 1
    assert len(events(capture, "bus_ack_failed")) == 1
    assert [e["topic"] for e in events(capture, "bus_group_recreated")] == [TOPIC]


def test_publishing_after_a_broker_restart_reconnects_without_an_error(
    make_bus: BusFactory, redis_server: RedisEndpoint, raw: redis.Redis
) -> None:
    """Frames are published over a connection of their own: one the broker closed while it restarted
    between two frames must be replaced silently, not fail the next frame."""
    bus = make_bus()
    bus.publish(TOPIC, b"before")
    redis_server.stop()
    redis_server.start()
    for attempt in range(3):
        bus.publish(TOPIC, b"after-%d" % attempt)
    payloads = [fields[b"d"] for _, fields in raw.xrange(TOPIC)]
    assert payloads[-3:] == [b"after-0", b"after-1", b"after-2"]


def test_ack_from_another_thread(make_bus: BusFactory, raw: redis.Redis) -> None:
    bus = make_bus()
    for i in range(20):
        bus.publish(TOPIC, b"%d" % i)
    subscription = bus.subscribe([TOPIC])
    deliveries = receive_n(subscription, 20)
    assert pending_count(raw) == 20

    def ack_all() -> None:
        for delivery in deliveries:
            delivery.ack()

    acker = threading.Thread(target=ack_all)
    acker.start()
    assert subscription.receive(timeout_s=0.5) is None  # reading concurrently with the acks
    acker.join(10)
    assert not acker.is_alive()
    assert pending_count(raw) == 0
    subscription.close()


def xack_calls(raw: redis.Redis) -> int:
    return int(raw.info("commandstats").get("cmdstat_xack", {}).get("calls", 0))


def test_a_segments_worth_of_acks_is_one_round_trip_and_survives_an_outage(
    make_bus: BusFactory, raw: redis.Redis, redis_server: RedisEndpoint, capture: LogCapture
) -> None:
    bus = make_bus()
    for i in range(30):
        bus.publish(TOPIC, b"%d" % i)
    subscription = bus.subscribe([TOPIC])
    deliveries = receive_n(subscription, 30)
    before = xack_calls(raw)
    ack_all(delivery.ack for delivery in deliveries[:20])
    assert xack_calls(raw) == before + 1 and pending_count(raw) == 10
    redis_server.stop()  # the rest are parked while the broker is away, and sent once it is back
    ack_all(delivery.ack for delivery in deliveries[20:])
    assert [e["entries"] for e in events(capture, "bus_ack_failed")] == [10]
    redis_server.start()
    deadline = time.monotonic() + 15
    while not events(capture, "bus_acks_flushed") and time.monotonic() < deadline:
        assert subscription.receive(timeout_s=0.2) is None
    assert [e["entries"] for e in events(capture, "bus_acks_flushed")] == [10]
    subscription.close()


def test_maxlen_keeps_the_stream_bounded(make_bus: BusFactory, raw: redis.Redis) -> None:
    maxlen = 100
    bus = make_bus(maxlen=maxlen)
    for i in range(3 * maxlen):
        bus.publish(TOPIC, b"%d" % i)
    # "MAXLEN ~" trims whole radix-tree nodes, so up to one node's worth of entries may remain
    node_entries = int(str(raw.config_get("stream-node-max-entries")["stream-node-max-entries"]))
    assert maxlen <= raw.xlen(TOPIC) <= maxlen + node_entries


def drive(*subscriptions: StreamSubscription) -> None:
    """Let each subscription's receiving thread run (it flushes acks and trims)."""
    for subscription in subscriptions:
        assert subscription.receive(timeout_s=0.2) is None


def test_entries_every_group_acknowledged_are_trimmed_and_no_other(make_bus: BusFactory, raw: redis.Redis) -> None:
    """Two groups, one with two consumers: the broker keeps exactly the entries from the oldest one some
    group has not acknowledged (pending in one consumer, or not yet delivered to a group) onwards."""
    sent = [b"%d" % i for i in range(20)]
    for payload in sent:
        make_bus().publish(TOPIC, payload)
    ids = [entry_id for entry_id, _ in raw.xrange(TOPIC)]
    first = make_bus(consumer="c1", trim_interval_s=0).subscribe([TOPIC])
    second = make_bus(consumer="c2", trim_interval_s=0).subscribe([TOPIC])
    other = make_bus(consumer="u1", group="uploader", trim_interval_s=0).subscribe([TOPIC])
    from_first = receive_n(first, 10)  # c1 takes 0..9 (one read), c2 takes 10..19
    from_second = receive_n(second, 10)
    from_other = receive_n(other, 10)  # the uploader group is delivered 0..9 only

    for delivery in from_first + from_second[:2] + from_second[3:] + from_other:
        delivery.ack()  # all but entry 12, which c2 still holds
    drive(first, second)  # the dumper group's subscribers trim (the uploader's would read on)
    assert raw.xrange(TOPIC)[0][0] == ids[10] and raw.xlen(TOPIC) == 10, "undelivered to the uploader group: kept"
    for delivery in receive_n(other, 10):
        delivery.ack()
    drive(other)
    assert raw.xrange(TOPIC)[0][0] == ids[12] and raw.xlen(TOPIC) == 8, "pending in one consumer: kept"
    from_second[2].ack()
    drive(second)
    assert raw.xlen(TOPIC) == 0, "everything acknowledged by every group is gone from the broker"
    for subscription in (first, second, other):
        subscription.close()


def test_trimming_is_periodic_and_maxlen_stays_the_cap(make_bus: BusFactory, raw: redis.Redis) -> None:
    bus = make_bus(maxlen=100, trim_interval_s=30)
    subscription = bus.subscribe([TOPIC])
    drive(subscription)  # creates the group
    for i in range(3):
        bus.publish(TOPIC, b"%d" % i)
    for delivery in receive_n(subscription, 3):
        delivery.ack()
    drive(subscription)
    assert raw.xlen(TOPIC) == 0, "the first acknowledgement trims at once"
    for i in range(300):
        bus.publish(TOPIC, b"%d" % i)
    for delivery in receive_n(subscription, 100):
        delivery.ack()
    drive(subscription)
    node_entries = int(str(raw.config_get("stream-node-max-entries")["stream-node-max-entries"]))
    assert 100 <= raw.xlen(TOPIC) <= 100 + node_entries, "within the interval only MAXLEN trims"
    subscription.close()


def test_a_broker_that_refuses_trimming_is_said_once_and_reading_goes_on(
    raw: redis.Redis, redis_server: RedisEndpoint, log: Any, capture: LogCapture
) -> None:
    """An ACL without XTRIM (a managed Redis, say): acknowledged entries stay, MAXLEN bounds them."""
    raw.acl_setuser("no-trim", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xtrim"])
    settings = RedisSettings(url=redis_server.url.replace("redis://", "redis://no-trim:pw@"))
    bus = RedisStreamBus(settings, log, consumer_group=GROUP, consumer_name=GROUP, maxlen=100, trim_interval_s=0)
    try:
        subscription = bus.subscribe([TOPIC])
        for round_ in range(2):
            bus.publish(TOPIC, b"%d" % round_)
            [delivery] = receive_n(subscription, 1)
            delivery.ack()
            drive(subscription)
        assert raw.xlen(TOPIC) == 2
        assert [e["topic"] for e in events(capture, "bus_trim_refused")] == [TOPIC]
        subscription.close()
    finally:
        bus.close()


def test_takes_over_entries_left_pending_by_another_consumer(make_bus: BusFactory) -> None:
    old_bus = make_bus(consumer="old-name")
    for i in range(3):
        old_bus.publish(TOPIC, b"%d" % i)
    old = old_bus.subscribe([TOPIC])
    receive_n(old, 3)
    old.close()

    new = make_bus(consumer="new-name", claim_idle_ms=0).subscribe([TOPIC])
    assert payloads(receive_n(new, 3)) == [b"0", b"1", b"2"]
    new.close()


def test_reconnect_redelivers_a_lost_read_but_not_what_the_node_holds(make_bus: BusFactory, raw: redis.Redis) -> None:
    bus = make_bus()
    for i in range(2):
        bus.publish(TOPIC, b"%d" % i)
    subscription = bus.subscribe([TOPIC])
    held = receive_n(subscription, 2)
    for i in range(2, 5):
        bus.publish(TOPIC, b"%d" % i)
    # A reply lost on the wire: Redis marks entries delivered to this consumer, the node never sees them.
    lost: Any = raw.xreadgroup(GROUP, GROUP, {TOPIC: ">"}, count=10)
    assert len(lost[TOPIC.encode()] if isinstance(lost, dict) else lost[0][1]) == 3
    # ... and the connection drops while the subscription waits for more (a blocked XREADGROUP)
    killer = threading.Timer(0.3, lambda: raw.client_kill_filter(_type="normal", skipme=True))
    killer.start()
    assert subscription.receive(timeout_s=1.0) is None
    killer.join()

    assert payloads(receive_n(subscription, 3)) == [b"2", b"3", b"4"]
    assert subscription.receive(timeout_s=0.5) is None
    for delivery in held:
        delivery.ack()
    assert pending_count(raw) == 3
    subscription.close()


def test_a_stream_topic_opens_a_stream_bus_named_after_the_node(settings: RedisSettings, log: Any) -> None:
    bus = open_bus(settings, TopicSettings("stream", 50), log, node_name="aggregator-1")
    assert isinstance(bus, RedisStreamBus)
    bus.close()
    assert isinstance(open_bus(settings, TopicSettings("pubsub"), log, node_name="aggregator-1"), RedisPubSubBus)
