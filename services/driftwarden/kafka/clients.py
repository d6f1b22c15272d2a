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
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
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


class TokenProvider(AbstractTokenProvider):
    """SASL OAUTHBEARER access tokens from a command's standard output or from a file.

    A token is reused for ``refresh_s`` seconds, then the command runs (or the file is read) again:
    aiokafka asks at every connection, so a short-lived token is renewed on the next reconnect.

    >>> import asyncio
    >>> asyncio.run(TokenProvider(command="echo token-1", file=None, refresh_s=60).token())
    'token-1'
    """

    def __init__(self, command: str | None, file: Path | None, refresh_s: float) -> None:
        self.command, self.file, self.refresh_s = command, file, refresh_s
        self._token: str | None = None
        self._read_at = 0.0

    async def token(self) -> str:
        if self._token is None or time.monotonic() - self._read_at >= self.refresh_s:
            self._token = await asyncio.get_running_loop().run_in_executor(None, self._read)
            self._read_at = time.monotonic()
        return self._token

    def _read(self) -> str:
        if self.file is not None:
            try:
                text = self.file.read_text()
            except OSError as exc:
                raise DriftwardenError(f"cannot read the OAuth token file {self.file}: {exc.strerror}") from None
            where = f"the OAuth token file {self.file}"
        else:
            done = subprocess.run(self.command or "", shell=True, capture_output=True, text=True, timeout=30)
            if done.returncode:
                detail = (done.stderr.strip().splitlines() or [""])[-1]
                raise DriftwardenError(f"the OAuth token command exited with {done.returncode}: {detail}")
            text, where = done.stdout, "the OAuth token command's output"
        if not (token := text.strip()):
            raise DriftwardenError(f"{where} is empty")
        return token


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin) from the settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_of(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        key_password = settings.kafka_ssl_key_password
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password else None,
        )
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = TokenProvider(
            settings.kafka_oauth_token_command, settings.kafka_oauth_token_file, settings.kafka_oauth_token_refresh_s
        )
    elif settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def topic_configs(settings: Settings, spec: TopicSpec) -> dict[str, str]:
    """The configs a topic is created with: its own, plus the settings' ``min.insync.replicas``."""
    return spec.configs() | {"min.insync.replicas": str(settings.topic_min_insync_replicas)}


async def ensure_topics(settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to run concurrently.

    Topics get ``topic_replication_factor`` replicas and ``topic_min_insync_replicas``; a topic the
    cluster refuses (e.g. more replicas than brokers) is an error naming the topic and the reason.
    """
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        created = []
        for spec in (spec for spec in specs if spec.name not in existing):
            topic = NewTopic(
                spec.name,
                spec.partitions,
                settings.topic_replication_factor,
                topic_configs=topic_configs(settings, spec),
            )
            response = await admin.create_topics([topic])
            for name, code, message in _topic_errors(response):
                if code == TopicAlreadyExistsError.errno:
                    log.debug("topic %s was created concurrently", name)
                elif code:
                    error = for_code(code).__name__
                    raise DriftwardenError(f"cannot create topic {name}: {message or error} ({error})")
                else:
                    created.append(name)
        return created
    finally:
        await admin.close()


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    """(topic, error code, message) of a CreateTopics response of any version."""
    return [(error[0], error[1], error[2] if len(error) > 2 else None) for error in response.topic_errors]


@dataclass(frozen=True)
class TopicState:
    """A project topic as the cluster describes it (``exists`` False: not created yet)."""

    name: str
    exists: bool
    partitions: int
    replication_factor: int
    configs: dict[str, str]

    def as_row(self) -> str:
        """One line of ``topics list``/``topics create --dry-run``.

        >>> TopicState("dw.alerts", True, 4, 3, {"min.insync.replicas": "2"}).as_row()
        'dw.alerts  partitions=4  replication=3  min.insync.replicas=2'
        """
        configs = "".join(f"  {key}={value}" for key, value in sorted(self.configs.items()))
        return f"{self.name}  partitions={self.partitions}  replication={self.replication_factor}{configs}"


#: The topic configs driftwarden sets or relies on, shown by ``topics list``.
SHOWN_CONFIGS = ("cleanup.policy", "max.message.bytes", "min.insync.replicas", "retention.ms")


async def describe_topics(
    settings: Settings, specs: list[TopicSpec], timeout_s: float = 30.0
) -> tuple[list[TopicState], int]:
    """Each spec's topic as the cluster has it (or as it would be created), and the number of brokers."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster())["brokers"])
        # Only topics that exist: a metadata request naming a missing topic creates it on brokers that
        # auto-create (the embedded broker does), which a dry run must never do.
        existing = [s.name for s in specs if s.name in set(await admin.list_topics())]
        described = (
            {t["topic"]: t for t in await admin.describe_topics(existing) if t["error_code"] == 0} if existing else {}
        )
        configs: dict[str, dict[str, str]] = {}
        if described:
            resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in described]
            for response in await admin.describe_configs(resources):
                for resource in response.resources:
                    entries = {entry[0]: entry[1] for entry in resource[4] if entry[0] in SHOWN_CONFIGS}
                    configs[resource[3]] = entries
    finally:
        await admin.close()
    states = []
    for spec in specs:
        topic = described.get(spec.name)
        if topic is None:
            states.append(
                TopicState(
                    spec.name, False, spec.partitions, settings.topic_replication_factor, topic_configs(settings, spec)
                )
            )
        else:
            partitions = topic["partitions"]
            replicas = len(partitions[0]["replicas"]) if partitions else 0
            states.append(TopicState(spec.name, True, len(partitions), replicas, configs.get(spec.name, {})))
    return states, brokers


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
