"""Runtime settings, read from ``DRIFTWARDEN_*`` environment variables.

Services need ``DRIFTWARDEN_KAFKA_BOOTSTRAP`` (and the SASL/TLS settings below for a secured Apache
Kafka cluster); without it they stop with a one-line error. Only ``driftwarden demo``, the benchmarks
and the tests start the embedded broker by themselves (``driftwarden broker`` runs one by hand).

>>> Settings(kafka_bootstrap="127.0.0.1:9092").topics.predictions
'driftwarden.predictions'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Largest checkpoint message (the monitor's state of one partition, compressed).
CHECKPOINT_MAX_BYTES = 64 * 1024 * 1024
#: How long predictions and labels are kept: the trainer joins a retrain's examples from them, so this
#: bounds the window a retrain can use (``retrain.training_window_s``, 7 days by default, plus label delay).
INPUT_RETENTION_MS = 14 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic the project needs, created up front (auto-created topics get the wrong partitions)."""

    name: str
    partitions: int
    compacted: bool = False
    max_message_bytes: int | None = None
    retention_ms: int | None = None

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": "compact"} if self.compacted else {}
        if self.max_message_bytes:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        if self.retention_ms:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


@dataclass(frozen=True)
class Topics:
    """Names of every topic, all sharing one prefix so several deployments can share a cluster."""

    prefix: str = "driftwarden."

    @property
    def predictions(self) -> str:
        return f"{self.prefix}predictions"

    @property
    def labels(self) -> str:
        return f"{self.prefix}labels"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def retrain_commands(self) -> str:
        return f"{self.prefix}retrain-commands"

    @property
    def models(self) -> str:
        return f"{self.prefix}models"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}dead-letters"

    @property
    def monitor_status(self) -> str:
        return f"{self.prefix}monitor-status"

    @property
    def monitor_state(self) -> str:
        return f"{self.prefix}monitor-state"

    @property
    def window_summaries(self) -> str:
        return f"{self.prefix}window-summaries"

    @property
    def inference_requests(self) -> str:
        return f"{self.prefix}inference-requests"

    @property
    def inference_responses(self) -> str:
        return f"{self.prefix}inference-responses"

    def specs(self, partitions: int) -> list[TopicSpec]:
        """Every topic with its partition count.

        Predictions and labels share the partition count, so with ``model_id`` as the key a model's
        predictions and labels land on the same partition number and join without repartitioning.
        """
        return [
            TopicSpec(self.predictions, partitions, retention_ms=INPUT_RETENTION_MS),
            TopicSpec(self.labels, partitions, retention_ms=INPUT_RETENTION_MS),
            TopicSpec(self.alerts, partitions),
            TopicSpec(self.dead_letters, partitions),
            TopicSpec(self.retrain_commands, 1),
            TopicSpec(self.models, 1, compacted=False),
            TopicSpec(self.monitor_status, 1, compacted=True),
            TopicSpec(self.monitor_state, 1, compacted=True, max_message_bytes=CHECKPOINT_MAX_BYTES),
            TopicSpec(self.window_summaries, partitions),
            TopicSpec(self.inference_requests, partitions),
            TopicSpec(self.inference_responses, partitions),
        ]


class Settings(BaseSettings):
    """Everything configurable about a driftwarden deployment."""

    model_config = SettingsConfigDict(env_prefix="DRIFTWARDEN_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port] of the cluster; services refuse to start without it."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle (PEM) to verify the brokers with.")
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; may also hold the private key."
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="The client certificate's private key (PEM).")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Password of an encrypted key.")
    kafka_oauth_token_command: str | None = Field(
        default=None, description="OAUTHBEARER: a shell command that prints an access token on stdout."
    )
    kafka_oauth_token_file: Path | None = Field(
        default=None, description="OAUTHBEARER: a file holding an access token (e.g. one a sidecar rotates)."
    )
    kafka_oauth_token_refresh_s: float = Field(
        default=300.0, gt=0, description="How long a token is reused before the command or file is read again."
    )
    topic_prefix: str = "driftwarden."
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of predictions/labels.")
    topic_replication_factor: int = Field(
        default=3, ge=1, description="Replicas of each topic `topics create` makes (1 on the embedded broker)."
    )
    topic_min_insync_replicas: int = Field(
        default=2, ge=1, description="min.insync.replicas of each topic made (1 on the embedded broker)."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a consumer group without committed offsets starts: the oldest retained message "
        "(replays history) or the end of each partition (only what arrives after the first join).",
    )
    monitor_group: str = "driftwarden-monitor"
    session_timeout_s: float = Field(
        default=6.0, gt=0, description="Consumer group session timeout; Tansu waits ~half of it per join."
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=60_000,
        description="Longest a consumer fetch waits for data. The embedded broker answers only when it expires, "
        "even if data is there, so it adds to every hop's latency; Kafka answers as soon as data arrives.",
    )
    fetch_buffer_mb: int = Field(
        default=16,
        ge=1,
        description="Fetched messages a worker holds until its agent has processed them, in MiB: it stops "
        "fetching beyond (Faust alone bounds them in messages: 4,096 buffered, 500 a batch; GBs of 500 KB envelopes).",
    )
    state_dir: Path = Path(".driftwarden")
    monitor_config: Path | None = Field(default=None, description="TOML monitoring config (defaults if unset).")
    profiles_dir: Path | None = Field(
        default=None, description="Reference profiles as PROFILES_DIR/<model_id>/<model_version>.json."
    )
    serving_token: SecretStr | None = Field(default=None, description="Bearer token the serving API requires.")
    registry_dir: Path = Field(default=Path(".driftwarden/registry"), description="Model registry root.")
    checkpoint_interval_s: float = Field(default=5.0, gt=0, description="How often detector state is saved.")
    commit_interval_s: float = Field(default=2.8, gt=0, description="How often consumed offsets are committed.")
    status_interval_s: float = Field(
        default=1.0, gt=0, description="How often the monitor publishes each model's status."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Interface for /metrics; 0.0.0.0 inside a container.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        """Settings that only make sense together, named by their variables."""
        for server in (self.kafka_bootstrap or "").split(","):
            host, colon, port = server.strip().rpartition(":")
            if server.strip() and colon and not (host and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(
                    f"DRIFTWARDEN_KAFKA_BOOTSTRAP: {server.strip()!r} is not host:port with a port 1-65535"
                )
        mechanism = self.kafka_sasl_mechanism
        oauth = mechanism == "OAUTHBEARER"
        sources = [s for s in (self.kafka_oauth_token_command, self.kafka_oauth_token_file) if s is not None]
        if oauth and len(sources) != 1:
            raise ValueError(
                "SASL mechanism OAUTHBEARER needs exactly one of DRIFTWARDEN_KAFKA_OAUTH_TOKEN_COMMAND and "
                "DRIFTWARDEN_KAFKA_OAUTH_TOKEN_FILE"
            )
        if sources and not oauth:
            raise ValueError("an OAuth token command or file needs DRIFTWARDEN_KAFKA_SASL_MECHANISM=OAUTHBEARER")
        if mechanism is not None and not self.kafka_security_protocol.startswith("SASL"):
            raise ValueError(
                "DRIFTWARDEN_KAFKA_SASL_MECHANISM needs DRIFTWARDEN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL"
            )
        if mechanism not in (None, "OAUTHBEARER") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"SASL mechanism {mechanism} needs DRIFTWARDEN_KAFKA_SASL_USERNAME and DRIFTWARDEN_KAFKA_SASL_PASSWORD"
            )
        tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        if (self.kafka_ssl_certfile or self.kafka_ssl_keyfile or self.kafka_ssl_cafile) and not tls:
            raise ValueError("TLS files need DRIFTWARDEN_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL")
        if (self.kafka_ssl_keyfile or self.kafka_ssl_key_password) and not self.kafka_ssl_certfile:
            raise ValueError("a TLS key (or its password) needs DRIFTWARDEN_KAFKA_SSL_CERTFILE")
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"DRIFTWARDEN_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) exceeds "
                f"DRIFTWARDEN_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor})"
            )
        for name in ("cafile", "certfile", "keyfile"):
            path = getattr(self, f"kafka_ssl_{name}")
            if path is not None and not path.is_file():
                raise ValueError(f"DRIFTWARDEN_KAFKA_SSL_{name.upper()}: {path} is not a file")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def to_env(self) -> dict[str, str]:
        """These settings as ``DRIFTWARDEN_*`` variables, to hand to a child process.

        >>> Settings(kafka_bootstrap="127.0.0.1:9092").to_env()["DRIFTWARDEN_KAFKA_BOOTSTRAP"]
        '127.0.0.1:9092'
        """
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                env[f"DRIFTWARDEN_{name.upper()}"] = text
        return env
