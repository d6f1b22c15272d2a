"""One peer of ``driftwarden bench peers``, run by the peer's own Python (its virtual environment).

Standalone on purpose: it imports only the standard library, numpy, pandas and the peer, never
driftwarden, so a peer's environment needs nothing of ours. Usage::

    python peer_runner.py TOOL ROWS.npz

``ROWS.npz`` (written by :mod:`driftwarden.bench.peers`) holds ``numeric`` (rows x 16), ``categorical``
(rows x 4, text), the feature names, ``reference_rows`` and ``chunk``. The first ``reference_rows``
rows are the reference; the rest are judged chunk by chunk (or row by row, for River). It prints one
JSON line: ``rows`` judged, ``seconds`` spent judging them (reference fitting included) and the
process's ``cpu_seconds`` in that time (every thread: what a shared machine's load does not inflate), and
``detections`` as ``[row, feature]``: the row count of the stream (reference included) at which the
feature was flagged (for chunk tools: the end of the chunk).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from typing import Any

import numpy as np

Times = tuple[float, float]  # (wall seconds, CPU seconds)


class Stopwatch:
    """Wall and CPU seconds (of every thread of this process) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> Times:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _frames(data: Any) -> tuple[Any, Any, list[str]]:
    import pandas as pd

    names = [str(n) for n in data["numeric_names"]] + [str(n) for n in data["categorical_names"]]
    frame = pd.DataFrame(data["numeric"], columns=names[: data["numeric"].shape[1]])
    for j, name in enumerate(names[data["numeric"].shape[1] :]):
        frame[name] = data["categorical"][:, j].astype(str)
    n_ref = int(data["reference_rows"])
    return frame.iloc[:n_ref], frame.iloc[n_ref:].reset_index(drop=True), names


def run_evidently(data: Any) -> tuple[int, Times, list[list[Any]]]:
    from evidently import Report  # type: ignore[import-not-found]
    from evidently.presets import DataDriftPreset  # type: ignore[import-not-found]

    reference, current, _ = _frames(data)
    chunk, n_ref = int(data["chunk"]), int(data["reference_rows"])
    detections = []
    started = Stopwatch()
    for start in range(0, len(current), chunk):
        snapshot = Report([DataDriftPreset()]).run(current_data=current.iloc[start : start + chunk],
                                                   reference_data=reference)  # fmt: skip
        for metric in snapshot.dict()["metrics"]:
            config = metric.get("config", {})
            if config.get("type") != "evidently:metric_v2:ValueDrift":
                continue
            value, threshold = float(metric["value"]), float(config["threshold"])
            drifted = value < threshold if "p_value" in config["method"] else value >= threshold
            if drifted:
                detections.append([n_ref + min(start + chunk, len(current)), config["column"]])
    return len(current), started.read(), detections


def run_nannyml(data: Any, per_chunk: bool) -> tuple[int, Times, list[list[Any]]]:
    import nannyml  # type: ignore[import-not-found]

    reference, current, names = _frames(data)
    chunk, n_ref = int(data["chunk"]), int(data["reference_rows"])
    numeric = [str(n) for n in data["numeric_names"]]
    started = Stopwatch()
    calculator = nannyml.UnivariateDriftCalculator(
        column_names=names, continuous_methods=["kolmogorov_smirnov"], categorical_methods=["chi2"], chunk_size=chunk
    )
    calculator.fit(reference)
    parts = [current.iloc[s : s + chunk] for s in range(0, len(current), chunk)] if per_chunk else [current]
    detections = []
    offset = n_ref
    for part in parts:
        frame = calculator.calculate(part.reset_index(drop=True)).filter(period="analysis").to_df()
        ends = frame[("chunk", "chunk", "end_index")].to_numpy()
        for name in names:
            method = "kolmogorov_smirnov" if name in numeric else "chi2"
            for end, alert in zip(ends, frame[(name, method, "alert")].to_numpy(), strict=True):
                if alert:
                    detections.append([offset + int(end) + 1, name])
        offset += len(part)
    return len(current), started.read(), detections


def run_river(data: Any) -> tuple[int, Times, list[list[Any]]]:
    """River's ADWIN (default delta) on every numeric feature, row by row.

    >>> rng = np.random.default_rng(0)
    >>> shifted = np.r_[rng.normal(0, 1, (500, 1)), rng.normal(3, 1, (500, 1))]
    >>> rows, (seconds, cpu_seconds), detections = run_river({"numeric": shifted, "numeric_names": np.asarray(["x"])})
    >>> rows, 500 < detections[0][0] < 600, detections[0][1]
    (1000, True, 'x')
    """
    from river import drift

    names = [str(n) for n in data["numeric_names"]]
    values = data["numeric"].tolist()
    detectors = [drift.ADWIN() for _ in names]
    detections = []
    started = Stopwatch()
    for row, x in enumerate(values):
        for j, detector in enumerate(detectors):
            detector.update(x[j])
            if detector.drift_detected:
                detections.append([row + 1, names[j]])
    return len(values), started.read(), detections


def main() -> None:
    tool, path = sys.argv[1], sys.argv[2]
    warnings.simplefilter("ignore")
    data = dict(np.load(path, allow_pickle=False))
    runs = {
        "evidently": lambda: run_evidently(data),
        "nannyml-chunks": lambda: run_nannyml(data, per_chunk=True),
        "nannyml-frame": lambda: run_nannyml(data, per_chunk=False),
        "river-adwin": lambda: run_river(data),
    }
    rows, (seconds, cpu_seconds), detections = runs[tool]()
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": peak,
        "detections": detections,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
