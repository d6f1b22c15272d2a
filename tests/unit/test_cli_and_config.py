"""The command line's error handling and the settings -> client options mapping."""

from __future__ import annotations

import sys

import pytest

from driftwarden.cli import main
from driftwarden.config import Settings
from driftwarden.kafka.clients import KafkaNotConfiguredError, client_options
from driftwarden.kafka.faust_app import faust_credentials


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["driftwarden", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bogus"], 2, "No such command 'bogus'"),
        (["produce", "--events", "-5"], 2, "Invalid value for '--events'"),
        (["produce", "--scenario", "nope"], 1, "unknown scenario 'nope'"),
        (["produce", "--drift-features", "cat_00"], 1, "drift features must be numeric"),
        (["produce"], 1, "no Kafka bootstrap address"),
        (["alerts", "--no-follow"], 1, "no Kafka bootstrap address"),
    ],
)
def test_bad_input_gets_one_line_and_no_traceback(monkeypatch, capsys, args, code, message):
    monkeypatch.delenv("DRIFTWARDEN_KAFKA_BOOTSTRAP", raising=False)
    exit_code, _, err = run_cli(monkeypatch, capsys, *args)
    assert exit_code == code
    assert err.startswith("driftwarden: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_invalid_environment_setting_names_the_setting(monkeypatch, capsys):
    monkeypatch.setenv("DRIFTWARDEN_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("DRIFTWARDEN_PARTITIONS", "many")
    exit_code, _, err = run_cli(monkeypatch, capsys, "produce")
    assert exit_code == 1
    assert err.startswith("driftwarden: error: partitions: Input should be a valid integer")


def test_help_works(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["driftwarden", "--help"])
    main()  # standalone_mode=False: help returns instead of exiting
    assert "monitor" in capsys.readouterr().out


def test_client_options_without_bootstrap_is_a_clear_error():
    with pytest.raises(KafkaNotConfiguredError, match="DRIFTWARDEN_KAFKA_BOOTSTRAP"):
        client_options(Settings(kafka_bootstrap=None))


def test_sasl_ssl_settings_reach_aiokafka_and_faust():
    settings = Settings(
        kafka_bootstrap="kafka-1:9093,kafka-2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",
    )
    options = client_options(settings)
    assert options["bootstrap_servers"] == "kafka-1:9093,kafka-2:9093"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", "s3cret")
    assert options["ssl_context"] is not None
    credentials = faust_credentials(settings)
    assert credentials.username == "svc" and credentials.ssl_context is not None
    assert str(credentials.mechanism.value) == "SCRAM-SHA-512"


def test_plaintext_needs_no_credentials():
    assert faust_credentials(Settings(kafka_bootstrap="k:9092")) is None


def test_settings_round_trip_through_the_environment(monkeypatch):
    original = Settings(kafka_bootstrap="k:9092", topic_prefix="x.", partitions=8, kafka_sasl_password="pw")
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
