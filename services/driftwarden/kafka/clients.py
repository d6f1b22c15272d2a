"""Kafka client options and topic administration shared by every service.

Every aiokafka client gets its connection and security options from the settings:

>>> options = client_options(Settings(kafka_bootstrap="kafka-1:9092,kafka-2:9092",
...     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
...     kafka_sasl_username="monitor", kafka_sasl_password="s3cret"))
>>> options["bootstrap_servers"], options["sasl_mechanism"], options["sasl_plain_password"]
('kafka-1:9092,kafka-2:9092', 'SCRAM-SHA-512', 's3cret')
>>> bootstrap_of(Settings(kafka_bootstrap=None))
Traceback (most recent call last):
...
driftwarden.kafka.clients.KafkaNotConfiguredError: no Kafka bootstrap address: ...
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from driftwarden.errors import DriftwardenError
from driftwarden.settings import Settings, TopicSpec

log = logging.getLogger(__name__)


class KafkaNotConfiguredError(DriftwardenError):
    """Raised when a command needs a bootstrap address and none is known."""


def bootstrap_of(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise KafkaNotConfiguredError(
            "no Kafka bootstrap address: set DRIFTWARDEN_KAFKA_BOOTSTRAP or start `driftwarden broker`"
        )
    return settings.kafka_bootstrap


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin) from the settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_of(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


async def ensure_topics(settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to run concurrently."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created = []
        for spec in missing:
            topic = NewTopic(spec.name, spec.partitions, replication_factor=1, topic_configs=spec.configs())
            try:
                await admin.create_topics([topic])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                log.debug("topic %s was created concurrently", spec.name)
        return created
    finally:
        await admin.close()


async def wait_until_reachable(settings: Settings, timeout_s: float) -> None:
    """Poll the cluster's metadata until it answers or ``timeout_s`` passes."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Kafka at {settings.kafka_bootstrap} did not answer: {exc!r}") from exc
            await asyncio.sleep(0.2)
        finally:
            await admin.close()
