"""``driftwarden bench peers``: the same rows through driftwarden, Evidently, NannyML and River.

The rows: the ``abrupt-shift`` scenario (16 numeric and 4 categorical features), ``num_00`` and
``num_01`` shifted by ``magnitude`` (0.5) reference standard deviations half way; the first
``reference_rows`` rows are every tool's reference, the rest are judged in chunks of ``chunk`` rows
(driftwarden: windows of that size plus its streaming detectors; River: row by row). They are
written once to an ``.npz`` file that every tool reads, each in its own process: driftwarden with
this interpreter, each peer with the Python of its own virtual environment (made with ``uv`` on
first use, kept in ``envs_dir``), running :mod:`driftwarden.bench.peer_runner`.

Driftwarden is timed from message bytes on: the rows are encoded as a producer would send them
(``prediction-columns.v1`` or ``prediction-batch.v1`` envelopes of ``chunk`` rows) before the
clock starts, then decoded, validated and run through the default detectors of one model version
(:class:`~driftwarden.core.monitor.ModelMonitor`). The ``+ label joiner`` row runs the whole
:class:`~driftwarden.core.monitor.Monitor` as the worker does, which also screens each event time,
drops duplicate event ids and keeps each prediction for its label.

A detection is a (feature, chunk) cell: flagged and not drifting (or before the shift) is a false
positive; the delay of a drifting feature is the rows from the shift to its first detection.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from driftwarden.bench.peer_runner import Stopwatch
from driftwarden.core import compiled
from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import PredictionEvent
from driftwarden.core.monitor import ModelMonitor, Monitor
from driftwarden.errors import DriftwardenError
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import CATEGORICAL_FEATURES, NUMERIC_FEATURES, Scenario, generate

#: Peer tool -> (its environment, what that environment installs). Evidently 0.7 needs pandas < 3.
PEERS: dict[str, tuple[str, list[str]]] = {
    "evidently": ("evidently", ["evidently==0.7.*", "pandas<3"]),
    "nannyml-chunks": ("nannyml", ["nannyml==0.13.*", "statsmodels"]),
    "nannyml-frame": ("nannyml", ["nannyml==0.13.*", "statsmodels"]),
    "river-adwin": ("river", ["river==0.26.1", "numpy"]),
}
LABELS = {
    "driftwarden-columns": "driftwarden core, columnar envelopes (decode + validate + default detectors)",
    "driftwarden-rows": "driftwarden core, row envelopes (decode + validate + default detectors)",
    "driftwarden-columns-joiner": "driftwarden monitor, columnar envelopes + time screen, dedupe, label joiner",
    "evidently": "Evidently 0.7 DataDriftPreset, one report per chunk",
    "nannyml-chunks": "NannyML 0.13 univariate drift (KS, chi2), one call per chunk",
    "nannyml-frame": "NannyML 0.13 univariate drift (KS, chi2), whole frame in one call",
    "river-adwin": "River ADWIN on the 16 numeric features (no decode, no window tests)",
}
DRIFTWARDEN = ("driftwarden-columns", "driftwarden-rows", "driftwarden-columns-joiner")
DRIFTING = ("num_00", "num_01")
#: Event time of the first row (one row a millisecond after it).
START_TS = 1.7e9


@dataclass(frozen=True)
class PeerRows:
    path: Path
    rows: int
    reference_rows: int
    chunk: int
    onset: int


@dataclass
class PeerResult:
    tool: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    false_positives: int
    cells: int
    delays: dict[str, int | None]

    def as_row(self) -> str:
        delays = " / ".join("missed" if d is None else f"{d:,}" for d in self.delays.values())
        return (
            f"| {LABELS[self.tool]} | {self.rows / self.seconds:,.0f} | {self.rows / self.cpu_seconds:,.0f} | "
            f"{self.peak_rss_mb:,.0f} | "
            f"{self.false_positives} of {self.cells:,} | {delays} |"
        )


HEADER = (
    "| tool | rows/s | rows per CPU-second | peak RSS (MB) | false-positive feature-chunks | "
    "delay num_00 / num_01 (rows) |\n|---|---|---|---|---|---|"
)


def write_rows(path: Path, rows: int, chunk: int, reference_rows: int, magnitude: float = 0.5) -> PeerRows:
    """The benchmark's rows as an ``.npz`` file every tool reads (values rounded as events carry them)."""
    onset = rows // 2
    scenario = Scenario(name="abrupt-shift", n_events=rows, onset=onset, magnitude=magnitude,
                        drift_features=DRIFTING, seed=1)  # fmt: skip
    chunks = list(generate(scenario, chunk_size=chunk))
    np.savez(
        path,
        numeric=np.round(np.vstack([c.numeric for c in chunks]), 4),
        categorical=np.vstack([np.asarray(["a", "b", "c", "d", "e"])[c.categorical] for c in chunks]),
        score=np.round(np.concatenate([c.score for c in chunks]), 6),
        numeric_names=np.asarray(NUMERIC_FEATURES),
        categorical_names=np.asarray(CATEGORICAL_FEATURES),
        reference_rows=reference_rows,
        chunk=chunk,
        onset=onset,
    )
    return PeerRows(path, rows, reference_rows, chunk, onset)


def encode_messages(data: dict[str, Any], columnar: bool) -> list[bytes]:
    """The rows as a model server sends them: one envelope per chunk."""
    numeric, categorical, score = data["numeric"], data["categorical"], data["score"]
    names = [str(n) for n in data["numeric_names"]], [str(n) for n in data["categorical_names"]]
    chunk = int(data["chunk"])
    messages = []
    for start in range(0, len(numeric), chunk):
        rows = slice(start, start + chunk)
        p = score[rows]
        document: dict[str, Any] = {
            "schema": "prediction-columns.v1", "model_id": "peers", "model_version": "1",
            "event_id": [f"e{i}" for i in range(start, start + len(p))],
            "ts": (START_TS + np.arange(start, start + len(p)) / 1000).tolist(),
            "features": {name: numeric[rows, j].tolist() for j, name in enumerate(names[0])}
            | {name: categorical[rows, j].tolist() for j, name in enumerate(names[1])},
            "prediction": (p >= 0.5).astype(int).tolist(),
            "scores": {"0": np.round(1 - p, 6).tolist(), "1": p.tolist()},
        }  # fmt: skip
        if columnar:
            messages.append(orjson.dumps(document))
            continue
        features = document["features"]
        events = [
            {"event_id": document["event_id"][i], "model_id": "peers", "model_version": "1",
             "ts": document["ts"][i], "features": {name: column[i] for name, column in features.items()},
             "prediction": document["prediction"][i],
             "scores": {"0": document["scores"]["0"][i], "1": document["scores"]["1"][i]}}
            for i in range(len(p))
        ]  # fmt: skip
        messages.append(envelope("prediction-batch.v1", "peers", events))
    return messages


def run_driftwarden(data: dict[str, Any], mode: str) -> dict[str, Any]:
    """Decode + validate + detect, timed from message bytes; detections as ``[row, feature]``."""
    messages = encode_messages(data, columnar=mode != "driftwarden-rows")
    config = ModelMonitorConfig(reference_size=int(data["reference_rows"]), window_size=int(data["chunk"]))
    index = {f"e{i}": i for i in range(len(data["numeric"]))}
    alerts = []
    compiled.load()  # (numba and the compiled loops, as the peers' imports, before the clock)
    if mode == "driftwarden-columns-joiner":
        monitor = Monitor(MonitoringConfig(defaults=config))
        now = START_TS + len(data["numeric"]) / 1000  # the last row's event time
        started = Stopwatch()
        for message in messages:
            decoded = PREDICTIONS.decode(message, rows_as_columns=True)
            accepted, refused = monitor.screen([*decoded.events, *decoded.columns], now)
            assert not refused
            alerts += monitor.observe(accepted, now).alerts
    else:
        model = ModelMonitor("peers", "1", config)
        started = Stopwatch()
        for message in messages:
            decoded = PREDICTIONS.decode(message, rows_as_columns=True)
            parts: list[list[PredictionEvent] | PredictionColumns] = [*decoded.columns] or [decoded.events]
            for part in parts:
                alerts += model.observe(part, now=0.0).alerts
    seconds, cpu_seconds = started.read()
    detections = [
        [index[a.trigger_event_id] + 1, a.subject]
        for a in alerts
        if a.state == "firing" and a.kind == "data_drift" and a.trigger_event_id is not None
    ]
    n_ref = int(data["reference_rows"])
    return {
        "rows": len(data["numeric"]) - n_ref,  # the reference's rows are collected, not judged
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "detections": detections,
    }


def score(tool: str, report: dict[str, Any], rows: PeerRows) -> PeerResult:
    """False-positive (feature, chunk) cells and the delay per drifting feature.

    >>> rows = PeerRows(Path("rows.npz"), 20_000, 10_000, 2_000, 15_000)
    >>> found = [[15_150, "num_00"], [4_000, "num_05"], [12_001, "num_07"], [12_500, "num_07"], [18_000, "num_01"]]
    >>> result = score("river-adwin", {"rows": 20_000, "seconds": 0.1, "cpu_seconds": 0.1, "peak_rss_mb": 90.0,
    ...                                 "detections": found}, rows)
    >>> result.false_positives, result.cells, result.delays  # (the reference's rows are not judged)
    (1, 100, {'num_00': 150, 'num_01': 3000})
    """
    features = len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES)
    cells = (rows.rows - rows.reference_rows) // rows.chunk * features
    false_cells: set[tuple[str, int]] = set()
    first: dict[str, int] = {}
    for row, feature in report["detections"]:
        if feature in DRIFTING and row > rows.onset:
            first.setdefault(feature, row)
            first[feature] = min(first[feature], row)
        elif row > rows.reference_rows:
            false_cells.add((feature, (row - 1) // rows.chunk))
    delays = {f: (first[f] - rows.onset if f in first else None) for f in DRIFTING}
    return PeerResult(tool, report["rows"], report["seconds"], report["cpu_seconds"], report["peak_rss_mb"],
                      len(false_cells), cells, delays)  # fmt: skip


def peer_python(tool: str, envs_dir: Path) -> Path:
    """The Python of the tool's environment, made with ``uv`` on first use."""
    name, requirements = PEERS[tool]
    env = envs_dir / name
    python = env / "bin" / "python"
    ready = env / ".installed"
    if not ready.exists() or ready.read_text() != " ".join(requirements):
        uv = Path(sys.executable).with_name("uv")
        for command in ([str(uv), "venv", "-q", "--allow-existing", "--python", sys.executable, str(env)],
                        [str(uv), "pip", "install", "-q", "--python", str(python), *requirements]):  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode:
                raise DriftwardenError(f"cannot make the {name} environment: {result.stderr.strip()[-400:]}")
        ready.write_text(" ".join(requirements))
    return python


def run_tool(tool: str, rows: PeerRows, envs_dir: Path) -> PeerResult:
    if tool in DRIFTWARDEN:
        command = [sys.executable, "-m", "driftwarden.bench.peers", tool, str(rows.path)]
    else:
        command = [str(peer_python(tool, envs_dir)), str(Path(__file__).with_name("peer_runner.py")), tool,
                   str(rows.path)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode:
        raise DriftwardenError(f"{tool} failed: {result.stderr.strip()[-600:]}")
    return score(tool, json.loads(result.stdout.strip().splitlines()[-1]), rows)


def run_peers_benchmark(
    tools: list[str], work: Path, envs_dir: Path, rows: int, chunk: int, reference_rows: int
) -> Iterator[PeerResult]:
    """Each tool's result on the same rows, in the order given."""
    unknown = [t for t in tools if t not in LABELS]
    if unknown:
        raise DriftwardenError(f"unknown tools {unknown}; choose from {', '.join(LABELS)}")
    if rows <= reference_rows or chunk < 100 or (rows - reference_rows) % chunk:
        raise DriftwardenError("rows must exceed the reference by a whole number of chunks of at least 100 rows")
    written = write_rows(work / "peer-rows.npz", rows, chunk, reference_rows)
    for tool in tools:
        yield run_tool(tool, written, envs_dir)


def main() -> None:
    """``python -m driftwarden.bench.peers MODE ROWS.npz``: one driftwarden run, a JSON line."""
    mode, path = sys.argv[1], sys.argv[2]
    print(json.dumps(run_driftwarden(dict(np.load(path, allow_pickle=False)), mode)))


if __name__ == "__main__":
    main()
