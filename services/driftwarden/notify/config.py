"""Notify configuration: receivers and their routes, from a TOML file; secrets from the environment.

>>> config = NotifyConfig.from_toml('''
... [[receivers]]
... name = "pager"
... type = "alertmanager"
... url = "http://127.0.0.1:9093"
... [[receivers]]
... name = "chat"
... type = "webhook"
... url = "https://hooks.example/driftwarden"
... secret_env = "CHAT_HOOK_SECRET"
... severities = ["critical"]
... models = ["fraud*"]
... ''')
>>> [r.name for r in config.receivers], config.retry.attempts
(['pager', 'chat'], 6)

Secrets never appear in the file: ``secret_env`` and ``bearer_token_env`` name environment variables,
read by :func:`load_secrets` when the service starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, SecretStr, model_validator

from driftwarden.core.config import (
    ConfigError,
    Strict,
    parse_toml,
    read_config_file,
    source_prefix,
    validate_section,
)

Severity = Literal["info", "warning", "critical"]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class RetryPolicy(Strict):
    """Bounded exponential backoff: ``attempts`` tries, waits doubling from ``initial_s`` up to ``max_s``."""

    attempts: int = Field(default=6, ge=1, le=20)
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    timeout_s: float = Field(default=10.0, gt=0, description="One HTTP request at most.")

    @model_validator(mode="after")
    def _bounded(self) -> RetryPolicy:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be at least initial_s")
        if self.budget_s() > 240:
            raise ValueError("the retry budget must stay under 240 s (the consumer's poll interval is 300 s)")
        return self

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than ``attempts``).

        >>> RetryPolicy(attempts=5, initial_s=1, max_s=5).delays()
        [1.0, 2.0, 4.0, 5.0]
        """
        return [min(self.max_s, self.initial_s * self.multiplier**i) for i in range(self.attempts - 1)]

    def budget_s(self) -> float:
        """Longest one delivery can take: every wait plus every request timing out."""
        return sum(self.delays()) + self.attempts * self.timeout_s


class Receiver(Strict):
    """Where alerts go, and which ones (every listed condition must hold; empty lists match all)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    type: Literal["alertmanager", "webhook"]
    url: HttpUrl
    severities: list[Severity] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list, description="model_id glob patterns, e.g. 'fraud-*'.")
    kinds: list[str] = Field(default_factory=list)
    secret_env: str | None = Field(default=None, pattern=ENV_NAME, description="HMAC key (webhook; required).")
    bearer_token_env: str | None = Field(default=None, pattern=ENV_NAME)
    resend_interval_s: float = Field(
        default=60.0, gt=0, description="Alertmanager: firing alerts are re-sent this often (endsAt = 4x ahead)."
    )

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Receiver:
        if self.type == "webhook" and not self.secret_env:
            raise ValueError("a webhook receiver needs secret_env (the variable holding its HMAC key)")
        if self.url.username or self.url.password:  # the URL appears in logs and dead letters
            raise ValueError("no credentials in the URL: name a variable in bearer_token_env instead")
        return self


class NotifyConfig(Strict):
    receivers: list[Receiver] = Field(min_length=1)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    group: str = Field(default="driftwarden-notify", min_length=1, description="Kafka consumer group.")

    @model_validator(mode="after")
    def _unique_names(self) -> NotifyConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be unique")
        return self

    @classmethod
    def from_toml(cls, text: str, source: str = "") -> NotifyConfig:
        return validate_section(cls, parse_toml(text, source), "notify", source_prefix(source))

    @classmethod
    def from_file(cls, path: Path) -> NotifyConfig:
        return cls.from_toml(read_config_file(path, "notify config"), str(path))


def load_secrets(config: NotifyConfig, environ: dict[str, str] | None = None) -> dict[str, SecretStr]:
    """Every variable the receivers name, read once; a missing one is an error naming the variable."""
    environ = dict(os.environ) if environ is None else environ
    names = {n for r in config.receivers for n in (r.secret_env, r.bearer_token_env) if n}
    missing = sorted(n for n in names if not environ.get(n))
    if missing:
        raise ConfigError(f"environment variable {missing[0]} is not set (a receiver's secret)")
    return {name: SecretStr(environ[name]) for name in names}
