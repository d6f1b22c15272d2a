"""The notify service: the alerts topic in, Alertmanager and signed webhooks out, at least once.

A plain aiokafka consumer, not Faust: the rule is "commit an alert's offset only after every receiver
took it (or it was dead-lettered)", and with aiokafka that is one explicit ``commit()`` after the
delivery, in the same coroutine. Faust acks a message when the agent moves on and commits acked
offsets on a timer; ``stream.take()`` even acks a batch whose body raised. Alerts are few, so
delivering one record at a time and committing after each costs nothing.

Per record: decode (a malformed record is dead-lettered with the reason, never fatal), route, POST to
each receiver with bounded exponential backoff; a receiver that rejects the alert (4xx) or still fails
when the retry budget is spent gets a dead letter naming it and the last error; then commit. If even
the dead-letter topic cannot be written the service exits without committing, so the alert is
delivered again on restart. Firing alerts are re-sent to Alertmanager receivers every
``resend_interval_s``; on start the service rebuilds the open alerts from the whole topic so that
refreshes and resolves survive a restart. Secrets are read from the environment once and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import Counter, Gauge
from pydantic import SecretStr, ValidationError

from driftwarden.core.decoding import describe
from driftwarden.core.events import Alert
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.notify.config import NotifyConfig, Receiver, RetryPolicy
from driftwarden.notify.delivery import OpenAlerts, Request, outcome, requests_for, signed_headers, wait_before_retry
from driftwarden.notify.reading import open_alerts_on_topic
from driftwarden.settings import Settings

log = logging.getLogger(__name__)

DELIVERIES = Counter("driftwarden_notify_deliveries", "Alert deliveries by receiver and outcome.",
                     ["receiver", "outcome"])  # fmt: skip
DEAD_LETTERED = Counter("driftwarden_notify_dead_lettered", "Alerts dead-lettered by notify.", ["receiver"])
OPEN_ALERTS = Gauge("driftwarden_notify_open_alerts", "Firing alerts notify keeps re-sending to Alertmanager.")
#: How often the resend loop looks for receivers that are due.
RESEND_TICK_S = 1.0


class NotifyService:
    """Consumes the alerts topic and delivers every alert to its receivers."""

    def __init__(self, settings: Settings, config: NotifyConfig, secrets: dict[str, SecretStr]) -> None:
        self.settings = settings
        self.config = config
        self.secrets = secrets
        self.open_alerts = OpenAlerts()
        self.receivers = {r.name: r for r in config.receivers}
        self.last_resend: dict[str, float] = {}
        for receiver in config.receivers:  # series exist from the start, so increase() sees the first one
            DEAD_LETTERED.labels(receiver.name)
            for result in ("delivered", "retry", "reject"):
                DELIVERIES.labels(receiver.name, result)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set."""
        await self._rebuild_open_alerts()
        producer = AIOKafkaProducer(**client_options(self.settings), acks="all")
        consumer = self._consumer()
        timeout = aiohttp.ClientTimeout(total=self.config.retry.timeout_s)
        try:
            await producer.start()
            await consumer.start()
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await _first_to_finish(self._consume(consumer, producer, session), self._resend_loop(session),
                                       stop.wait())  # fmt: skip
        finally:
            await consumer.stop()
            await producer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            self.settings.topics.alerts,
            **client_options(self.settings),
            group_id=self.config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )

    async def _rebuild_open_alerts(self) -> None:
        self.open_alerts = await open_alerts_on_topic(self.settings)
        OPEN_ALERTS.set(len(self.open_alerts.firing))
        log.info("notify: %d open alerts on the topic", len(self.open_alerts.firing))

    async def _consume(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, session: aiohttp.ClientSession
    ) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in fetched.items():
                for record in records:
                    await self._handle(record, producer, session)
                    await _commit(consumer, tp, record.offset + 1)

    async def _handle(
        self, record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer, session: aiohttp.ClientSession
    ) -> None:
        try:
            alert = Alert.model_validate_json(record.value or b"")
        except ValidationError as exc:
            await self._dead_letter(producer, record, f"invalid alert: {describe(exc.errors())}", "-")
            return
        requests = requests_for(self.config, self.open_alerts, alert, time.time())
        OPEN_ALERTS.set(len(self.open_alerts.firing))
        for request in requests:
            failure = await self._deliver(session, request, self.config.retry)
            if failure is not None:
                reason = f"receiver {request.receiver}: {failure} (alert {alert.alert_id})"
                await self._dead_letter(producer, record, reason, request.receiver)

    async def _dead_letter(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], reason: str, receiver: str
    ) -> None:
        log.warning("notify: dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason)
        letter = dead_letter(record, reason)
        await producer.send_and_wait(self.settings.topics.dead_letters, letter.to_json(), key=record.key)
        DEAD_LETTERED.labels(receiver).inc()

    async def _deliver(self, session: aiohttp.ClientSession, request: Request, policy: RetryPolicy) -> str | None:
        """POST with retries; ``None`` when delivered, else why it was not."""
        receiver = self.receivers[request.receiver]
        attempts = 0
        while True:
            attempts += 1
            result, detail = await self._post(session, request, receiver)
            DELIVERIES.labels(receiver.name, result).inc()
            if result == "delivered":
                return None
            if result == "reject":
                return f"rejected: {detail}"
            wait = wait_before_retry(policy, attempts)
            if wait is None:
                return f"gave up after {attempts} attempts: {detail}"
            log.warning("notify: receiver %s: %s; attempt %d, retrying in %.1f s", receiver.name, detail,
                        attempts, wait)  # fmt: skip
            await asyncio.sleep(wait)

    async def _post(self, session: aiohttp.ClientSession, request: Request, receiver: Receiver) -> tuple[str, str]:
        headers = dict(request.headers)
        if receiver.bearer_token_env:
            headers["Authorization"] = f"Bearer {self.secrets[receiver.bearer_token_env].get_secret_value()}"
        if receiver.secret_env:
            secret = self.secrets[receiver.secret_env].get_secret_value().encode()
            headers |= signed_headers(secret, request.body, time.time())
        try:
            async with session.post(request.url, data=request.body, headers=headers) as response:
                text = (await response.text(errors="replace"))[:200].strip()
                return outcome(response.status), f"HTTP {response.status} {text}".strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "retry", f"{type(exc).__name__}: {exc}"

    async def _resend_loop(self, session: aiohttp.ClientSession) -> None:
        """Refresh open alerts in Alertmanager before their endsAt; a failed refresh waits for the next tick."""
        once = self.config.retry.model_copy(update={"attempts": 1})
        while True:
            await asyncio.sleep(RESEND_TICK_S)
            now = time.time()
            for receiver in self.config.receivers:
                last = self.last_resend.setdefault(receiver.name, now)
                if receiver.type != "alertmanager" or now - last < receiver.resend_interval_s:
                    continue
                request = self.open_alerts.resend(self.config, receiver, now)
                if request is None or await self._deliver(session, request, once) is None:
                    self.last_resend[receiver.name] = now


async def _first_to_finish(*work: Coroutine[Any, Any, object]) -> None:
    """Run ``work`` until one finishes, then cancel the rest; re-raise what the finished one raised.

    A delivery cut short this way is not committed, so it is delivered again after a restart.
    """
    tasks = [asyncio.create_task(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        await consumer.commit({tp: offset})
    except (CommitFailedError, IllegalStateError) as exc:  # partition moved: its new owner delivers again
        log.warning("notify: commit of %s@%d failed (%s); it will be delivered again", tp, offset, exc)


def run_notify(settings: Settings, config: NotifyConfig, secrets: dict[str, SecretStr]) -> None:
    """Run the service until SIGINT or SIGTERM."""
    logging.basicConfig(level=settings.log_level.upper(), format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        log.info("notify: delivering %s to %s", settings.topics.alerts, ", ".join(r.name for r in config.receivers))
        await NotifyService(settings, config, secrets).run(stop)

    asyncio.run(main())
