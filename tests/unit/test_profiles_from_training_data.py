"""Profiles from a training set (Parquet, CSV), `profile show` and `profile diff`, through the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest

from driftwarden.cli import main
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.profile import ReferenceProfile
from driftwarden.core.profile_report import compare
from driftwarden.errors import DriftwardenError
from driftwarden.monitor.service import profile_loader


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["driftwarden", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def training_table(rows: int, shift: float = 0.0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100 + shift * 20, 20, rows)
    return pa.table(
        {
            "amount": pa.array(np.where(rng.random(rows) < 0.1, np.nan, amount), from_pandas=True),  # NaN -> null
            "age": rng.integers(18, 90, rows),
            "zip": rng.choice([1011, 1012, 2000], rows),
            "country": rng.choice(["NL", "DE", "BE"], rows, p=[0.6, 0.3, 0.1]),
            "is_new": rng.random(rows) < 0.2,
            "label": rng.integers(0, 2, rows),
            "score": rng.random(rows),
        }
    )


def build(monkeypatch, capsys, path, out, *extra: str) -> tuple[int, str, str]:
    return run_cli(monkeypatch, capsys, "profile", "build", "--from", str(path), "--model-id", "fraud",
                   "--model-version", "1", "--output", str(out), *extra)  # fmt: skip


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_profile_build_from_a_training_set_honours_declared_types_and_the_monitor_loads_it(
    monkeypatch, capsys, tmp_path, suffix
):
    path = tmp_path / f"train{suffix}"
    table = training_table(2_000)
    pyarrow.parquet.write_table(table, path) if suffix == ".parquet" else pyarrow.csv.write_csv(table, path)
    config = tmp_path / "monitoring.toml"
    config.write_text('[models.fraud]\nfeatures = { zip = "categorical" }\nignore_features = ["age"]\n')
    code, out, err = build(monkeypatch, capsys, path, tmp_path / "profiles", "--exclude", "label",
                           "--score-column", "score", "--positive-class", "1", "--config", str(config))  # fmt: skip
    assert code == 0, err
    assert "2000 rows, 1 numeric and 3 categorical features, task classification" in out
    profile = profile_loader(tmp_path / "profiles")("fraud", "1")
    assert isinstance(profile, ReferenceProfile)
    assert list(profile.numeric) == ["amount"]  # age ignored by the config, label excluded, score is the signal
    assert list(profile.categorical) == ["country", "is_new", "zip"]  # zip declared categorical
    assert set(profile.categorical["zip"].counts) == {"1011", "1012", "2000"}
    assert set(profile.categorical["is_new"].counts) == {"false", "true"}
    assert 0.07 < profile.numeric["amount"].missing_rate < 0.13
    assert profile.numeric["amount"].mean == pytest.approx(100, abs=2)
    assert profile.signal is not None and profile.positive_class == "1" and profile.multivariate_features == []


def test_profile_build_from_rejects_what_it_cannot_read(monkeypatch, capsys, tmp_path):
    table = training_table(200)
    pyarrow.parquet.write_table(table, tmp_path / "train.parquet")
    (tmp_path / "train.json").write_text("{}")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    cases = [
        (["--from", str(tmp_path / "train.json")], "expected a Parquet (.parquet, .pq) or CSV file"),
        (["--from", str(tmp_path / "missing.csv")], "no such file"),
        (["--from", str(tmp_path / "broken.parquet")], "cannot read"),
        (["--from", str(tmp_path / "train.parquet"), "--exclude", "labels"], "no column 'labels'"),
        (["--from", str(tmp_path / "train.parquet"), "--score-column", "score"], "needs --positive-class"),
        (["--from", str(tmp_path / "train.parquet"), "--score-column", "country", "--task", "regression"],
         "score column 'country' holds string, not numbers"),
        (["--from", str(tmp_path / "train.parquet"), "--task", "ranking"], "unknown task 'ranking'"),
        (["--from", str(tmp_path / "train.parquet"), "--input", str(tmp_path / "x.jsonl")], "exactly one of"),
        ([], "exactly one of"),
    ]  # fmt: skip
    for args, message in cases:
        code, _, err = run_cli(monkeypatch, capsys, "profile", "build", *args, "--model-id", "m",
                               "--model-version", "1", "--output", str(tmp_path / "p"))  # fmt: skip
        assert code == 1 and err.startswith("driftwarden: error: ") and message in err, (args, err)
        assert err.count("\n") == 1


def test_without_pyarrow_profile_build_from_is_one_clear_line(tmp_path):
    script = (
        "import sys; sys.modules['pyarrow'] = None; sys.argv = ['driftwarden', 'profile', 'build', '--from', "
        f"{str(tmp_path / 't.parquet')!r}, '--model-id', 'm', '--model-version', '1', '--output', {str(tmp_path)!r}]\n"
        "from driftwarden.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == (
        "driftwarden: error: reading Parquet or CSV needs pyarrow: pip install 'driftwarden[profile]'\n"
    )


def test_profile_show_and_diff(monkeypatch, capsys, tmp_path):
    for version, shift, seed in (("1", 0.0, 1), ("2", 0.0, 2), ("3", 0.5, 3)):
        pyarrow.parquet.write_table(training_table(5_000, shift, seed).drop_columns(["score"]), tmp_path / "t.parquet")
        code, _, err = run_cli(monkeypatch, capsys, "profile", "build", "--from", str(tmp_path / "t.parquet"),
                               "--model-id", "fraud", "--model-version", version, "--output", str(tmp_path),
                               "--exclude", "label")  # fmt: skip
        assert code == 0, err
    one, two, three = (str(tmp_path / "fraud" / f"{v}.json") for v in "123")

    code, out, _ = run_cli(monkeypatch, capsys, "profile", "show", one)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "fraud v1: 5,000 rows, classification, 3 numeric and 2 categorical features"
    assert lines[1].startswith("  age  numeric  n=5,000  missing 0.0%  mean ")
    assert lines[2].startswith("  amount  numeric  n=4,") and "mean 10" in lines[2]
    assert lines[4].startswith("  country  categorical  3 categories  missing 0.0%  top: 'NL' ")
    assert "joint mean and covariance of 3 numeric features" in lines[-1]

    code, out, _ = run_cli(monkeypatch, capsys, "profile", "diff", one, two)
    assert code == 0 and out.splitlines()[-1] == "0 of 5 features differ"
    code, out, _ = run_cli(monkeypatch, capsys, "profile", "diff", one, three)
    assert code == 1 and out.splitlines()[-1] == "1 of 5 features differ: amount"
    amount = next(line for line in out.splitlines() if line.startswith("  amount:"))
    assert "DIFFERS" in amount and "mean 10" in amount and "PSI" in amount and "Wasserstein 0.5" in amount

    code, _, err = run_cli(monkeypatch, capsys, "profile", "show", str(tmp_path / "t.parquet"))
    assert code == 1 and "not a reference profile" in err and err.count("\n") == 1


def test_profile_diff_uses_the_configured_tests_and_names_schema_changes():
    rng = np.random.default_rng(5)
    from driftwarden.core.profile import CategoricalProfile, NumericProfile

    def profile(numeric: dict[str, float], categorical: dict[str, dict[str, int]]) -> ReferenceProfile:
        numbers = {name: NumericProfile.of(rng.normal(shift, 1, 4_000), 0.0) for name, shift in numeric.items()}
        categories = {name: CategoricalProfile(counts, 0.0) for name, counts in categorical.items()}
        return ReferenceProfile("m", "1", 4_000, "regression", None, numbers, categories, None, None)

    a = profile({"x": 0.0, "kind": 0.0, "old": 0.0}, {"c": {"a": 500, "b": 500}})
    b = profile({"x": 0.12, "new": 0.0}, {"c": {"a": 500, "b": 500}, "kind": {"k": 10}})
    rows = {row.feature: row for row in compare(a, b, ModelMonitorConfig())}
    assert {name: row.change for name, row in rows.items() if row.change != "compared"} == {
        "kind": "type changed", "old": "only in A", "new": "only in B",
    }  # fmt: skip
    assert not rows["x"].drift and not rows["c"].drift  # 0.12 σ: under the default Wasserstein floor of 0.15
    psi_only = ModelMonitorConfig.model_validate(
        {"features": {"x": {"type": "numeric", "tests": ["psi"]}}, "psi_threshold": 0.005}
    )
    x = next(row for row in compare(a, b, psi_only) if row.feature == "x")
    assert x.drift and x.evidence is not None and x.evidence["psi"] >= 0.005


def test_the_monitor_core_watches_production_against_a_training_set_profile():
    from test_monitor_core import firing, run_scenario

    from driftwarden.core.monitor import Monitor
    from driftwarden.training_data import profile_from_table
    from driftwarden_load.scenarios import Scenario, generate

    training = [e["features"] for c in generate(Scenario(name="stable", n_events=20_000, seed=11)) for e in
                c.prediction_events()]  # fmt: skip
    profile = profile_from_table(pa.Table.from_pylist(training), "demo-model", "1", {})
    assert len(profile.numeric) == 16 and len(profile.categorical) == 4 and profile.n_events == 20_000

    def monitor() -> Monitor:
        return Monitor(load_profile=lambda m, v: profile if (m, v) == ("demo-model", "1") else None)

    stable, *_ = run_scenario(Scenario(name="stable", n_events=20_000, seed=12), monitor(), labels=False)
    assert not {alert for alert in firing(stable) if alert[0] == "data_drift"}
    shifted = Scenario(name="abrupt-shift", n_events=20_000, onset=5_000, seed=13)
    alerts, *_ = run_scenario(shifted, monitor(), labels=False)
    assert {alert for alert in firing(alerts) if alert[0] == "data_drift"} == {
        ("data_drift", name) for name in shifted.ground_truth().drifting_features
    }


def embedding_table(rows: int, dims: int = 64, shift: float = 0.0, seed: int = 0, fixed: bool = True) -> pa.Table:
    """An ``amount`` and a ``text`` embedding (every 10th vector missing), as Parquet would hold them."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, 1, (rows, dims)) + np.r_[np.full(8, shift), np.zeros(dims - 8)]
    kind = pa.list_(pa.float32(), dims) if fixed else pa.list_(pa.float64())
    text = pa.array([None if i % 10 == 0 else v for i, v in enumerate(vectors.tolist())], type=kind)
    return pa.table({"amount": rng.normal(100, 20, rows), "text": text, "label": rng.integers(0, 2, rows)})


@pytest.mark.parametrize("form", ["fixed_size_list", "list", "csv"])
def test_profile_build_from_reads_an_embedding_column(monkeypatch, capsys, tmp_path, form):
    """A Parquet (fixed-size) list column of numbers, or CSV cells holding JSON arrays: an embedding."""
    table = embedding_table(3_000, fixed=form == "fixed_size_list")
    if form == "csv":
        texts = [None if v is None else orjson.dumps(v).decode() for v in table["text"].to_pylist()]
        table = table.set_column(1, "text", pa.array(texts, pa.string()))
        pyarrow.csv.write_csv(table, path := tmp_path / "train.csv")
    else:
        pyarrow.parquet.write_table(table, path := tmp_path / "train.parquet")
    code, out, err = build(monkeypatch, capsys, path, tmp_path / "profiles", "--exclude", "label")
    assert code == 0, err
    assert "3000 rows, 1 numeric, 0 categorical and 1 embedding features" in out
    profile = profile_loader(tmp_path / "profiles")("fraud", "1")
    assert isinstance(profile, ReferenceProfile) and list(profile.embedding) == ["text"]
    text = profile.embedding["text"]
    assert text.dim == 64 and len(text.sample) == 2_000 and text.distance.missing_rate == pytest.approx(0.1)
    assert np.abs(text.centroid).max() < 0.1 and text.distance.mean == pytest.approx(8.0, abs=0.2)  # sqrt(64)


def test_profile_build_from_refuses_what_is_not_an_embedding_in_one_line(monkeypatch, capsys, tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text('amount,text\n1.5,"[0.1, 0.2]"\n2.5,\n3.5,"[0.3, oops]"\n')
    config = tmp_path / "monitoring.toml"
    config.write_text('[models.fraud]\nfeatures = { amount = "embedding" }\n')
    for extra, message in [
        ([], "column 'text', row 3: '[0.3, oops]' is not a JSON array of numbers"),
        (["--config", str(config)], "column 'amount' holds double; an embedding is a list of numbers (Parquet) or "
         "JSON arrays (CSV)"),
    ]:  # fmt: skip
        code, _, err = build(monkeypatch, capsys, csv, tmp_path / "p", *extra)
        assert (code, err) == (1, f"driftwarden: error: {message}\n")


def test_profile_show_and_diff_of_embeddings(monkeypatch, capsys, tmp_path):
    """One line per embedding; diff by the monitor's MMD test, with the centroid's move; another
    length is reported, not compared."""
    tables = {"1": embedding_table(5_000, seed=1), "2": embedding_table(5_000, seed=2),
              "3": embedding_table(5_000, shift=0.6, seed=3), "4": embedding_table(5_000, dims=32, seed=4)}  # fmt: skip
    for version, table in tables.items():
        pyarrow.parquet.write_table(table, tmp_path / "t.parquet")
        code, _, err = run_cli(monkeypatch, capsys, "profile", "build", "--from", str(tmp_path / "t.parquet"),
                               "--model-id", "search", "--model-version", version, "--output", str(tmp_path),
                               "--exclude", "label")  # fmt: skip
        assert code == 0, err
    one, two, three, four = (str(tmp_path / "search" / f"{v}.json") for v in "1234")

    code, out, _ = run_cli(monkeypatch, capsys, "profile", "show", one)
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("1 numeric, 0 categorical and 1 embedding features")
    (text,) = [line for line in lines if line.startswith("  text  ")]
    assert text.startswith("  text  embedding  64 dimensions  n=4,500  missing 10.0%  2,000 reference vectors  "
                           "distance to the centroid: mean 7.9")  # fmt: skip
    assert all(f" {q} " in text for q in ("p5", "median", "p95", "max"))

    code, out, _ = run_cli(monkeypatch, capsys, "profile", "diff", one, two)
    assert code == 0 and out.splitlines()[-1] == "0 of 2 features differ"
    code, out, _ = run_cli(monkeypatch, capsys, "profile", "diff", one, three)
    assert code == 1 and out.splitlines()[-1] == "1 of 2 features differ: text"
    (row,) = [line for line in out.splitlines() if line.startswith("  text: ")]
    assert row.startswith("  text: DIFFERS  MMD² 0.") and "(floor 0.0050, p=" in row
    assert "centroid moved 1.7" in row and "mean distance to the centroid 7.9" in row
    code, out, _ = run_cli(monkeypatch, capsys, "profile", "diff", one, four)
    assert code == 1 and "  text: length changed: 64 -> 32" in out.splitlines()


def test_the_monitor_core_watches_embeddings_against_a_training_set_profile():
    from test_monitor_core import firing, run_scenario

    from driftwarden.core.monitor import Monitor
    from driftwarden.training_data import profile_from_table
    from driftwarden_load.scenarios import EMBEDDING_FEATURE, Scenario, generate

    training = [e["features"] for c in generate(Scenario(name="embedding-stable", n_events=10_000, seed=11))
                for e in c.prediction_events()]  # fmt: skip
    profile = profile_from_table(pa.Table.from_pylist(training), "demo-model", "1", {})
    assert profile.embedding[EMBEDDING_FEATURE].dim == 64

    def monitor() -> Monitor:
        return Monitor(load_profile=lambda m, v: profile if (m, v) == ("demo-model", "1") else None)

    stable, *_ = run_scenario(Scenario(name="embedding-stable", n_events=10_000, seed=12), monitor(), labels=False)
    assert ("data_drift", EMBEDDING_FEATURE) not in firing(stable)
    moved = Scenario(name="embedding-topic-mix", n_events=10_000, onset=4_000, seed=13)
    alerts, *_ = run_scenario(moved, monitor(), labels=False)
    assert ("data_drift", EMBEDDING_FEATURE) in firing(alerts)


def test_the_monitor_refuses_a_missing_profiles_dir_or_a_broken_profile_in_one_line_before_connecting(
    monkeypatch, capsys, tmp_path
):
    """Found in a new user's session: ``--profiles-dir`` with a typo started silently (every model on its first events),
    and ``{"garbage": 1}`` as a profile dead-lettered each batch with that model's events as ``internal error:
    KeyError('numeric')``. Both are refused at start, naming the directory or the file (no broker is set: the check
    comes first)."""
    monkeypatch.setenv("DRIFTWARDEN_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    code, _, err = run_cli(
        monkeypatch, capsys, "monitor", "--metrics-port", "0", "--profiles-dir", str(tmp_path / "no")
    )
    assert (code, err) == (
        1,
        f"driftwarden: error: profiles directory {tmp_path / 'no'} does not exist or is not a directory\n",
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "2.json").write_text('{"garbage": 1}')
    code, _, err = run_cli(monkeypatch, capsys, "monitor", "--metrics-port", "0", "--profiles-dir", str(tmp_path))
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"driftwarden: error: {tmp_path / 'm' / '2.json'}: not a reference profile (KeyError"), err
    with pytest.raises(DriftwardenError, match=r"2\.json: not a reference profile"):  # (one written after the start)
        (load := profile_loader(tmp_path)) is not None and load("m", "2")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model-id", "../../evil"], "--model-id '../../evil': letters, digits"),
        (["--model-id", ""], "--model-id '': letters, digits"),
        (["--model-version", "../x"], "--model-version '../x': letters, digits"),
        (["--exclude", "a,b,empty"], "no features: every column is excluded"),
        ([], "column 'empty' has no values: declare its type in the config's features, or --exclude it"),
    ],
)
def test_profile_build_refuses_what_would_go_unwatched_or_outside_output_in_one_line(
    monkeypatch, capsys, tmp_path, extra, message
):
    """Found in a new user's session: an all-empty column left the profile silently (its feature never watched),
    ``--model-id ../../evil`` wrote outside ``--output``, and excluding every column wrote a profile of nothing."""
    rng = np.random.default_rng(3)
    table = pa.table({"a": rng.normal(size=400), "b": rng.normal(size=400), "empty": pa.nulls(400, pa.float64())})
    pyarrow.csv.write_csv(table, tmp_path / "t.csv")
    args = {"--model-id": "m", "--model-version": "1"} | dict(zip(extra[::2], extra[1::2], strict=True))
    code, _, err = run_cli(monkeypatch, capsys, "profile", "build", "--from", str(tmp_path / "t.csv"), "--output",
                           str(tmp_path / "out"), *[item for pair in args.items() for item in pair])  # fmt: skip
    assert code == 1 and err.startswith(f"driftwarden: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil").exists()


def test_an_infinite_value_in_a_training_set_is_missing_as_in_events(monkeypatch, capsys, tmp_path):
    """Found in a new user's session: a tenth of a column at ±inf was counted neither as values nor as missing
    ("n=359, missing 0.0%" of 400 rows) and took the joint covariance with it."""
    rng = np.random.default_rng(4)
    a = np.where(rng.random(400) < 0.1, np.inf, rng.normal(size=400))
    pyarrow.csv.write_csv(pa.table({"a": a, "b": rng.normal(size=400)}), tmp_path / "t.csv")
    code, _, err = run_cli(monkeypatch, capsys, "profile", "build", "--from", str(tmp_path / "t.csv"), "--model-id",
                           "m", "--model-version", "1", "--output", str(tmp_path))  # fmt: skip
    assert code == 0, err
    profile = ReferenceProfile.from_json((tmp_path / "m" / "1.json").read_bytes())
    assert profile.numeric["a"].n + round(profile.numeric["a"].missing_rate * 400) == 400
    assert profile.numeric["a"].missing_rate == np.mean(np.isinf(a)) and profile.multivariate_features == ["a", "b"]
