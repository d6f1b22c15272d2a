"""The command line's error handling and the settings -> client options mapping."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from driftwarden.cli import main
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.clients import KafkaNotConfiguredError, TokenProvider, client_options
from driftwarden.kafka.faust_app import create_faust_app, faust_credentials
from driftwarden.settings import Settings


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
        # (a new user's session: tracebacks, a bad value taken, a config read only after connecting)
        (["alerts", "--no-follow", "--since", "99999999999"], 1, "--since '99999999999': a time between 1970 and now"),
        (["alerts", "--no-follow", "--since", "nan"], 1, "--since 'nan': a time between 1970 and now"),
        (["trainer", "--metrics-port", "0", "--promotion-margin", "-1"], 1, "--promotion-margin -1.0: an accuracy"),
        (["trainer", "--metrics-port", "0", "--promotion-margin", "nan"], 1, "--promotion-margin nan: an accuracy"),
        (["trainer", "--metrics-port", "0", "--config", "/nonexistent.toml"], 1, "cannot read monitoring config"),
        (["produce", "--model-id", ""], 1, "--model-id '': letters, digits"),
        (["produce", "--magnitude", "nan"], 1, "--magnitude nan: a finite shift"),
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


def test_the_cli_starts_without_the_statistics_stack():
    """On-call commands (status, alerts, --help) import neither scipy nor the detectors: ~1.3 s less a command."""
    heavy = ("scipy", "driftwarden.core.detectors")
    code = f"import sys, driftwarden.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


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


@pytest.fixture(scope="module")
def client_certificate(tmp_path_factory) -> dict[str, str]:
    """A CA, and a client certificate signed by it whose key is encrypted with a password (openssl)."""
    d = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-passout", "pass:k3y-pw", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=monitor")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "1")  # fmt: skip
    return {"cafile": str(d / "ca.pem"), "certfile": str(d / "client.pem"), "keyfile": str(d / "client.key")}


def env_settings(monkeypatch, **env: object) -> Settings:
    """Settings read from DRIFTWARDEN_* variables only, as a service reads them."""
    for name in [n for n in os.environ if n.startswith("DRIFTWARDEN_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(f"DRIFTWARDEN_{key.upper()}", str(value))
    return Settings()


def faust_auth(settings: Settings) -> dict:
    """The security options a driftwarden Faust app hands aiokafka (its conf, through Faust's own mapping)."""

    async def build() -> dict:
        app = create_faust_app("auth-test", settings)
        return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))

    return asyncio.run(build())


async def construct_aiokafka_clients(options: dict) -> None:
    """aiokafka checks its security options when a client is constructed (no connection is made)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    AIOKafkaProducer(**options)
    AIOKafkaConsumer(**options)


def test_mutual_tls_settings_from_the_environment_reach_aiokafka_and_faust(monkeypatch, client_certificate):
    tls = {f"kafka_ssl_{key}": value for key, value in client_certificate.items()}
    settings = env_settings(monkeypatch, kafka_bootstrap="kafka-1:9093", kafka_security_protocol="SSL",
                            kafka_ssl_key_password="k3y-pw", **tls)  # fmt: skip
    options = client_options(settings)
    assert options["security_protocol"] == "SSL"
    ca = options["ssl_context"].get_ca_certs()
    assert [c["subject"] for c in ca] == [((("commonName", "test-ca"),),)]
    auth = faust_auth(settings)
    assert auth["security_protocol"] == "SSL" and auth["ssl_context"].get_ca_certs() == ca
    asyncio.run(construct_aiokafka_clients(options))
    wrong = env_settings(monkeypatch, kafka_bootstrap="k:9093", kafka_security_protocol="SSL",
                         kafka_ssl_key_password="wrong", **tls)  # fmt: skip
    with pytest.raises(ssl.SSLError):  # the password really decrypts the key
        client_options(wrong)


def test_oauthbearer_token_command_and_file_reach_aiokafka_and_faust(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-1\n")
    for source, expected in (
        ({"kafka_oauth_token_command": "printf 'cmd-token-%s' 7"}, "cmd-token-7"),
        ({"kafka_oauth_token_file": token_file}, "file-token-1"),
    ):
        settings = env_settings(monkeypatch, kafka_bootstrap="k:9093", kafka_security_protocol="SASL_PLAINTEXT",
                                kafka_sasl_mechanism="OAUTHBEARER", **source)  # fmt: skip
        options = client_options(settings)
        assert options["sasl_mechanism"] == "OAUTHBEARER"
        assert asyncio.run(options["sasl_oauth_token_provider"].token()) == expected
        auth = faust_auth(settings)
        assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_PLAINTEXT", "OAUTHBEARER")
        assert asyncio.run(auth["sasl_oauth_token_provider"].token()) == expected
        asyncio.run(construct_aiokafka_clients(options))


def test_oauth_tokens_are_reused_then_read_again_and_failures_are_clear(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("one")
    provider = TokenProvider(command=None, file=token_file, refresh_s=3600)
    reread = TokenProvider(command=None, file=token_file, refresh_s=1e-9)

    async def tokens() -> list[str]:
        first = [await provider.token(), await reread.token()]
        token_file.write_text("two")
        return [*first, await provider.token(), await reread.token()]

    assert asyncio.run(tokens()) == ["one", "one", "one", "two"]
    for command, message in (("echo nope >&2; exit 3", "the OAuth token command exited with 3: nope"),
                             ("true", "the OAuth token command's output is empty")):  # fmt: skip
        with pytest.raises(DriftwardenError, match=message):
            asyncio.run(TokenProvider(command=command, file=None, refresh_s=1).token())
    with pytest.raises(DriftwardenError, match="cannot read the OAuth token file"):
        asyncio.run(TokenProvider(command=None, file=tmp_path / "missing", refresh_s=1).token())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"kafka_sasl_mechanism": "OAUTHBEARER"}, "OAUTHBEARER needs exactly one of"),
        ({"kafka_oauth_token_command": "x"}, "needs DRIFTWARDEN_KAFKA_SASL_MECHANISM=OAUTHBEARER"),
        ({"kafka_ssl_certfile": "c.pem"}, "TLS files need DRIFTWARDEN_KAFKA_SECURITY_PROTOCOL=SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "k.pem"}, "needs DRIFTWARDEN_KAFKA_SSL_CERTFILE"),
        ({"topic_replication_factor": 1}, "MIN_INSYNC_REPLICAS (2) exceeds DRIFTWARDEN_TOPIC_REPLICATION_FACTOR (1)"),
        # (a new user's session: a traceback from the socket, aiokafka's parameter names, or silently ignored)
        ({"kafka_bootstrap": "127.0.0.1:99999"}, "DRIFTWARDEN_KAFKA_BOOTSTRAP: '127.0.0.1:99999' is not host:port"),
        ({"kafka_bootstrap": "a:1,b:-1"}, "DRIFTWARDEN_KAFKA_BOOTSTRAP: 'b:-1' is not host:port with a port 1-65535"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "needs DRIFTWARDEN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "SASL mechanism PLAIN needs DRIFTWARDEN_KAFKA_SASL_USERNAME and DRIFTWARDEN_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "DRIFTWARDEN_KAFKA_SSL_CAFILE: /nonexistent/ca.pem is not a file",
        ),
    ],
)
def test_settings_that_only_make_sense_together_are_one_line(monkeypatch, capsys, env, message):
    with pytest.raises(ValidationError):
        env_settings(monkeypatch, **({"kafka_bootstrap": "127.0.0.1:1"} | env))
    exit_code, _, err = run_cli(monkeypatch, capsys, "topics", "create")
    assert exit_code == 1 and err.startswith("driftwarden: error: ") and message in err, err
    assert "Value error" not in err and ": :" not in err
    assert err.count("\n") == 1


def test_settings_round_trip_through_the_environment(monkeypatch, tmp_path):
    every_security_setting = {
        "kafka_bootstrap": "k:9092",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "OAUTHBEARER",
        "kafka_oauth_token_file": tmp_path / "token",
        "kafka_oauth_token_refresh_s": 60.0,
        "kafka_ssl_cafile": tmp_path / "ca.pem",
        "kafka_ssl_certfile": tmp_path / "client.pem",
        "kafka_ssl_keyfile": tmp_path / "client.key",
        "kafka_ssl_key_password": "kpw",
        "topic_replication_factor": 5,
        "topic_min_insync_replicas": 3,
        "auto_offset_reset": "latest",
    }
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("(read when a client connects)")
    # each of those differs from its default, so each one really goes through the environment
    assert all(every_security_setting[k] != Settings.model_fields[k].default for k in every_security_setting)
    for original in (
        Settings(kafka_bootstrap="k:9092", topic_prefix="x.", partitions=8, kafka_sasl_password="pw"),
        Settings(**every_security_setting),
        Settings(
            kafka_bootstrap="k:9092",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_oauth_token_command="get-token",
        ),
    ):
        env = {name.removeprefix("DRIFTWARDEN_").lower(): value for name, value in original.to_env().items()}
        assert env_settings(monkeypatch, **env) == original


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[defaults]\nwindow_sise = 500", "defaults.window_sise: unknown key"),
        ("[defaults]\nwindow_size = 10", "defaults.window_size: Input should be greater than or equal to 100"),
        ("[models.fraud]\nfdr_q = 2", "models.fraud.fdr_q: Input should be less than 1"),
        (
            "[models.fraud]\nfalse_alarms_per_million = 1000",
            "models.fraud.false_alarms_per_million: 1000 false alarms per million leave the window tests a level of "
            "0.5 per window of 2000 events (at most 0.5)",
        ),
        ("[models.fraud.retrain]\ncooldown_s = -5", "models.fraud.retrain.cooldown_s: Input should be greater"),
        ('[models.fraud]\nfeatures = { amount = "text" }', "models.fraud.features.amount: Input should be 'numeric'"),
        ("[models.fraud]\nerror_detector = 'kswin'", "models.fraud.error_detector: Input should be 'bernoulli_cusum'"),
        ("[alerting]\nx = 1", "alerting: unknown section"),
        ("[defaults\n", "not valid TOML: Expected ']'"),
    ],
)
def test_config_errors_name_the_file_and_the_key(monkeypatch, capsys, tmp_path, toml, message):
    path = tmp_path / "monitoring.toml"
    path.write_text(toml)
    exit_code, _, err = run_cli(monkeypatch, capsys, "config", "check", str(path))
    assert exit_code == 1
    assert err.startswith(f"driftwarden: error: {path}: {message}"), err
    assert err.count("\n") == 1


def test_config_check_prints_the_effective_settings_of_a_model(monkeypatch, capsys, tmp_path):
    path = tmp_path / "monitoring.toml"
    path.write_text("[defaults]\nwindow_size = 3000\n[models.fraud]\nlabel_window = 400\n")
    monkeypatch.setattr(sys, "argv", ["driftwarden", "config", "check", str(path), "--model-id", "fraud"])
    main()
    out = capsys.readouterr().out
    assert "valid (1 model sections)" in out
    assert '"window_size": 3000' in out and '"label_window": 400' in out
    assert (
        "false-alarm budget 1 per million events: window tests 25% (level 0.00075 per window of 3000 events), "
        "streaming detectors 75%; a classifier's error-stream CUSUMs: one false alarm per 1,333,333 labels" in out
    )


def test_config_check_of_a_model_without_a_section_is_an_error(monkeypatch, capsys, tmp_path):
    path = tmp_path / "monitoring.toml"
    path.write_text("[defaults]\nwindow_size = 3000\n[models.fraud]\nlabel_window = 400\n")
    exit_code, out, err = run_cli(monkeypatch, capsys, "config", "check", str(path), "--model-id", "frau")
    assert exit_code == 1 and out == ""
    assert err == f"driftwarden: error: {path}: no [models.frau] section (sections: fraud)\n"


def test_missing_config_file_is_one_line(monkeypatch, capsys, tmp_path):
    exit_code, _, err = run_cli(monkeypatch, capsys, "config", "check", str(tmp_path / "nope.toml"))
    assert exit_code == 1 and "cannot read monitoring config" in err and err.count("\n") == 1


def test_profile_build_writes_a_profile_the_monitor_can_load(monkeypatch, capsys, tmp_path):
    import orjson

    from driftwarden.core.profile import ReferenceProfile
    from driftwarden.monitor.service import profile_loader
    from driftwarden_load.scenarios import Scenario, generate

    events = next(generate(Scenario(n_events=600), chunk_size=600)).prediction_events()
    dataset = tmp_path / "reference.jsonl"
    dataset.write_bytes(b"\n".join([*(orjson.dumps(e) for e in events[:500]), b"{broken", orjson.dumps(events[500])]))
    args = ["profile", "build", "--input", str(dataset), "--model-id", "demo-model", "--model-version", "1"]
    monkeypatch.setattr(sys, "argv", ["driftwarden", *args, "--output", str(tmp_path / "profiles")])
    main()
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "501 events" in captured.out and "1 lines skipped" in captured.out
    assert "reference.jsonl:501: skipped: not valid JSON" in captured.err
    profile = profile_loader(tmp_path / "profiles")("demo-model", "1")
    assert isinstance(profile, ReferenceProfile) and profile.n_events == 501 and len(profile.numeric) == 16
    assert profile_loader(tmp_path / "profiles")("demo-model", "2") is None


def test_profile_build_with_too_few_events_is_one_line(monkeypatch, capsys, tmp_path):
    dataset = tmp_path / "tiny.jsonl"
    dataset.write_text("")
    exit_code, _, err = run_cli(monkeypatch, capsys, "profile", "build", "--input", str(dataset), "--model-id", "m",
                                "--model-version", "1", "--output", str(tmp_path))  # fmt: skip
    assert exit_code == 1 and "0 events of m v1; need at least 100" in err


def test_faust_workers_use_the_configured_fetch_wait():
    import asyncio

    from driftwarden.kafka.faust_app import create_faust_app
    from driftwarden.settings import Settings

    async def fetch_wait_of_a_worker_consumer() -> int:
        app = create_faust_app("fetch-wait-test", Settings(kafka_bootstrap="127.0.0.1:1", fetch_max_wait_ms=25))
        ignore = lambda *_: None  # noqa: E731
        consumer = app.transport.create_consumer(callback=ignore, on_partitions_revoked=ignore,
                                                 on_partitions_assigned=ignore)  # fmt: skip
        thread = consumer._new_consumer_thread()
        return thread._create_worker_consumer(app.transport)._fetch_max_wait_ms

    assert asyncio.run(fetch_wait_of_a_worker_consumer()) == 25  # Faust alone would use 1,500 ms


@pytest.mark.parametrize("command", [["status"], ["alerts", "--no-follow"], ["topics", "list"]])
def test_an_unreachable_broker_is_one_line_and_no_client_is_left_open(command):
    """Found in a new user's session: aiokafka's own log lines, then "Unclosed AIOKafkaConsumer" warnings after the
    error (a client whose start failed was never stopped; ``driftwarden ui`` left one per retry)."""
    env = {**os.environ, "DRIFTWARDEN_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "driftwarden", *command], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("driftwarden: error: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
