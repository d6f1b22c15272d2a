"""Faust application settings shared by every driftwarden worker, and the only place that touches
Faust's internals (pinned to faust-streaming 0.15.3; ``tests/unit/test_state_protocol.py`` fails
loudly when the pinned version changes): the committing of exact offsets, and the fetch in Faust's
consumer thread, which goes through :class:`~driftwarden.kafka.undecodable.GuardedFetch` so that an
undecodable record batch reaches the services as placeholder records instead of crashing the worker,
and which stops fetching while the fetched messages no stream has taken yet exceed a byte budget
(:class:`FetchBudget`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiokafka
import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, StreamT

from driftwarden.allocator import map_large_blocks
from driftwarden.kafka.clients import bootstrap_of, client_options
from driftwarden.kafka.undecodable import GuardedFetch, in_line
from driftwarden.settings import Settings


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the configured security protocol (None for PLAINTEXT)."""
    options = client_options(settings)
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        return faust.OAuthCredentials(
            oauth_cb=options["sasl_oauth_token_provider"], ssl_context=options.get("ssl_context")
        )
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
            mechanism=settings.kafka_sasl_mechanism,
        )
    return options.get("ssl_context")


def on_rebalance(signal: Any, handler: Callable[[set[TP]], Awaitable[None]]) -> None:
    """Call ``handler(partitions)`` on Faust's ``on_partitions_assigned``/``_revoked`` signal (held strongly).

    Faust sends these signals as ``receiver(app, partitions, signal=...)``.
    """

    async def receiver(sender: Any, partitions: set[TP], **_: Any) -> None:
        await handler(partitions)

    signal.connect(receiver)


def on_stop(app: faust.App, handler: Callable[[], Awaitable[None]]) -> None:
    """Call ``handler()`` when the app stops (e.g. on SIGTERM) while its producer and consumer still run.

    Faust stops without revoking the partitions it holds (``on_partitions_revoked`` is not sent), so
    whatever a revoke would save must be saved here. ``on_before_shutdown`` comes after the fetcher has
    stopped and before the producer is flushed and stopped.
    """

    async def receiver(sender: Any, **_: Any) -> None:
        await handler()

    signal: Any = app.on_before_shutdown  # (mode types its receivers more narrowly than it calls them)
    signal.connect(receiver)


#: An agent's batch: at most this many messages (the monitor's, and the empty agent's that benchmarks it).
BATCH_MAX = 500
#: An agent's batch: what arrived within this many seconds, unless :data:`BATCH_MAX` came sooner.
BATCH_WITHIN_S = 0.05


def take_events(stream: faust.StreamT[Any]) -> AsyncGenerator[Sequence[EventT[Any]], None]:
    """Batches of up to :data:`BATCH_MAX` events (each with its message) from an agent's stream.

    ``Stream.take_events`` is public Faust API, but ``StreamT``, the type an agent is given, does not
    declare it; this checks the stream really is a ``faust.Stream`` once, so callers stay type-checked.
    """
    if not isinstance(stream, faust.Stream):
        raise TypeError(f"expected a faust.Stream, got {type(stream).__name__}")
    return stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S)


#: How long the consumer thread waits before it looks again at a spent :class:`FetchBudget`.
SPENT_WAIT_S = 0.01
#: The longest one ``getmany`` of the consumer thread waits (Faust asks for 1 s). In this thread aiokafka 0.14's
#: ``getmany`` over several partitions was not woken when records of one of them arrived while it waited: it
#: returned nothing after its whole timeout, with those records buffered and its fetch waiter still registered (seen
#: in the fetcher's state at the end of each empty wait), and the next call had them at once (not reproduced with
#: aiokafka alone). A worker reading predictions, labels and window summaries stalled so ~0.75 s each ~2 s on
#: single-event messages (docs/benchmarks.md, "Single events: a fetch that slept through its records"); a short wait
#: bounds what a missed wake-up costs.
FETCH_POLL_S = 0.1


class FetchBudget:
    """The bytes of fetched messages that no stream has finished yet, against a limit.

    Faust bounds a stream's buffer in messages (``stream_buffer_maxsize``, 4,096), not bytes, and an
    agent's batch too (``take_events(500)``): with prediction envelopes of 1,000 events (~500 KB each) a
    worker behind its producers held 2 GB (docs/benchmarks.md). The consumer thread holds what it
    fetches (:meth:`hold`) and fetches nothing while the budget is spent; a stream gives a message's
    bytes back when it is done with it, i.e. acknowledges it (:class:`BudgetSensor`: after the agent
    processed it, or the batch ``take_events`` gave it in), so buffered messages and the batch being
    processed count alike; a new consumer generation starts afresh (Faust drops the messages fetched
    in the one before without handing them to a stream). One fetch may overshoot the limit by what it
    returns: on Kafka at most ``consumer_max_fetch_size`` per assigned partition; Tansu 0.6.0 ignores that
    limit and returns 4-8 MB of a partition with a backlog (docs/embedded-broker.md).

    >>> budget = FetchBudget(1_000)
    >>> budget.hold(600); budget.spent
    False
    >>> budget.hold(600); budget.spent, budget.held
    (True, 1200)
    >>> budget.release(900); budget.spent, budget.held
    (False, 300)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the fetch budget must be at least one byte")
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # the consumer thread holds, the event loop's streams release

    def hold(self, n: int) -> None:
        with self._lock:
            self.held += n

    def release(self, n: int) -> None:
        with self._lock:
            self.held = max(0, self.held - n)

    def reset(self) -> None:
        with self._lock:
            self.held = 0

    @property
    def spent(self) -> bool:
        return self.held >= self.limit


def message_bytes(key: bytes | None, value: bytes | None) -> int:
    """What a message counts against a :class:`FetchBudget`: its key and value."""
    return len(key or b"") + len(value or b"")


class BudgetSensor(faust.Sensor):
    """Gives a message's bytes back to the app's :class:`FetchBudget` when a stream is done with it (Faust
    calls ``on_stream_event_out`` as it acknowledges the event, acks on or off: ``take_events`` acknowledges
    a batch's events after the agent's body, even when the body raised)."""

    def __init__(self, budget: FetchBudget) -> None:
        super().__init__()
        self.budget = budget

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: StreamT, event: EventT, state: dict[str, Any] | None = None
    ) -> None:
        message = event.message
        self.budget.release(message_bytes(message.key, message.value))


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    _guard: GuardedFetch | None = None
    _guard_generation = -1

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        assert isinstance(app, DriftwardenApp)  # only a DriftwardenApp builds this transport
        # Faust hard-codes a 1.5 s fetch wait; aiokafka reads this when start() builds the fetcher.
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Mapping[TP, list[ConsumerRecord[bytes, bytes]]]:
        """Faust's fetch (``AIOKafkaConsumerThread._fetch_records``: fetch unless the flow is suspended)
        through :class:`GuardedFetch`: an undecodable record batch no longer raises out of the consumer
        thread (Faust would crash the worker, and again on every restart); each of its offsets comes in
        line as a :func:`~driftwarden.kafka.undecodable.placeholder` record for the service to dead-letter.
        """
        if not self.consumer.flow_active:
            return {}
        app = self.app
        assert isinstance(app, DriftwardenApp)  # only a DriftwardenApp builds this transport
        generation = app.consumer_generation_id
        if self._guard is None or self._guard.consumer is not consumer or generation != self._guard_generation:
            self._guard = GuardedFetch(consumer, grouped=True)  # positions were set anew: nothing handed out yet
            self._guard_generation = generation
            app.fetch_budget.reset()  # what the last generation fetched is dropped, not finished
        if app.fetch_budget.spent:
            await asyncio.sleep(SPENT_WAIT_S)
            return {}
        try:
            partitions = (aiokafka.TopicPartition(tp.topic, tp.partition) for tp in active_partitions)
            fetched, letters = await self._guard.fetch(
                *partitions, timeout_ms=int(min(timeout or 0.0, FETCH_POLL_S) * 1000), max_records=max_records
            )
        except IllegalStateError:  # the assignment changed under the fetch: the next generation re-seeks
            self._guard = None
            return {}
        records = in_line(fetched, letters)
        app.fetch_budget.hold(sum(message_bytes(r.key, r.value) for rs in records.values() for r in rs))
        return records


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class DriftwardenApp(faust.App):
    """A Faust app whose consumers wait at most ``fetch_max_wait_ms`` per fetch and hold at most
    ``fetch_budget`` of fetched messages its streams have not finished."""

    fetch_max_wait_ms = 1_500
    fetch_budget: FetchBudget  # (set by create_faust_app)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


def create_faust_app(
    app_id: str, settings: Settings, offset_reset: str = "earliest", **overrides: Any
) -> DriftwardenApp:
    """A Faust app tuned for driftwarden (and for the embedded broker's quirks).

    * ``topic_disable_leader``: without it, fetches stall 1.5 s on the idle leader-election topic;
    * short session timeout and heartbeat: each group join waits about half the session timeout;
    * a short fetch wait (``fetch_max_wait_ms``): the embedded broker holds every fetch that long;
    * ``offset_reset`` where a group without committed offsets starts (``earliest`` unless asked):
      "latest" is computed from wrong end offsets on the embedded broker, so a caller asking for it
      commits the right start first (:func:`driftwarden.kafka.reader.start_new_group_at_end`);
    * at-least-once delivery (``acks=all``, no transactions: the embedded broker cannot do them);
    * at most ``fetch_buffer_mb`` of fetched messages not yet processed (:class:`FetchBudget`);
    * the process's large blocks (fetched messages) back to the system when freed
      (:func:`~driftwarden.allocator.map_large_blocks`: without it RSS crept up with the events read).
    """
    map_large_blocks()
    app = DriftwardenApp(
        app_id,
        broker=[f"kafka://{host}" for host in bootstrap_of(settings).split(",")],
        broker_credentials=faust_credentials(settings),
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        consumer_auto_offset_reset=offset_reset,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        datadir=str(settings.state_dir / app_id),
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        **overrides,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.fetch_budget = FetchBudget(settings.fetch_buffer_mb * 1024 * 1024)
    app.sensors.add(BudgetSensor(app.fetch_budget))
    return app


async def commit_offsets(app: faust.App, offsets: Mapping[tuple[str, int], int]) -> bool:
    """Commit exactly these offsets ({(topic, partition): next offset}) for the app's consumer group.

    Faust's public ``commit()`` only commits what its streams acknowledged; the monitor acknowledges
    nothing and commits the offsets of durable checkpoints instead. ``Consumer._commit`` is the
    driver-level commit under ``commit()``: it drops partitions no longer assigned and returns False
    when the group rebalanced meanwhile (then nothing is committed, which is safe).
    """
    consumer = app.consumer
    if not isinstance(consumer, ThreadDelegateConsumer):
        raise TypeError(f"expected Faust's threaded consumer, got {type(consumer).__name__}")
    return await consumer._commit({TP(topic, partition): o for (topic, partition), o in offsets.items()})
