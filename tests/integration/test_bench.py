"""Both benchmark commands keep working (tiny sizes; the full runs are for docs/benchmarks.md)."""

from __future__ import annotations

import re
import sys

import pytest

from driftwarden.cli import main

pytestmark = pytest.mark.integration


def run(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["driftwarden", "bench", *args])
    main()
    return capsys.readouterr().out


def test_bench_core_reports_events_per_second(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "core", "--events", "10000", "--batch-size", "200")
    assert re.search(r"10,000 events in envelopes of 200: [\d,]+ events/s", out)


def test_bench_serving_reports_rate_and_latency_per_batch_size(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "serving", "--batch-sizes", "1,8", "--requests", "20", "--concurrency", "2")
    rows = re.findall(r"^\| (\d+) \| 20 \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$", out, re.MULTILINE)
    assert [r[0] for r in rows] == ["1", "8"]
    assert all(float(r[1].replace(",", "")) > 0 and float(r[2]) <= float(r[3]) for r in rows)


def test_bench_throughput_compares_the_monitor_with_both_ceilings(monkeypatch, capsys):
    args = ["throughput", "--batch-sizes", "1,100", "--columnar-sizes", "500", "--events", "8000",
            "--single-events", "1000", "--latency-rate",
            "6000", "--latency-models", "2", "--latency-events", "9000", "--memory-events", "20000",
            "--scaling-events", "20000"]  # fmt: skip
    out = run(monkeypatch, capsys, *args)
    cells = r" \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$"
    rows = re.findall(r"^\| (\d+(?: columnar)?)" + cells, out, re.MULTILINE)
    assert [(r[0], r[1]) for r in rows] == [("1", "1,000"), ("100", "8,000"), ("500 columnar", "8,000")]
    assert all(float(value.replace(",", "")) > 0 for row in rows for value in row[2:5])  # the three rates
    # Every firing alert of the two drifting models is timed from its trigger event's send time.
    latency = re.search(r"latency at [\d,]+ events/s \(2 models, (\d+) alerts\): p50 (\d+) ms, p99 (\d+) ms", out)
    assert latency and int(latency.group(1)) >= 4 and 0 < int(latency.group(2)) <= int(latency.group(3))
    scaling = re.search(r"2 partitions, 20,000 events: 1 worker ([\d,]+) events/s, 2 workers ([\d,]+) events/s", out)
    assert scaling and all(int(rate.replace(",", "")) > 0 for rate in scaling.groups())
    samples = re.findall(r"^\| ([\d,]+) \| (\d+) \|$", out, re.MULTILINE)
    assert samples and samples[-1][0] == "20,000" and all(int(rss) > 50 for _, rss in samples)
    assert re.search(r"peak RSS \d+ MB over 20,000 events", out)


def test_bench_peers_puts_driftwarden_and_river_through_the_same_rows(monkeypatch, capsys, tmp_path):
    """Tiny size, driftwarden and River only: River's environment is made by uv in seconds (its cache);
    Evidently's and NannyML's take minutes, so only the full run in docs/benchmarks.md makes them."""
    out = run(monkeypatch, capsys, "peers", "--tools", "driftwarden-columns,driftwarden-rows,river-adwin",
              "--rows", "8000", "--reference-rows", "2000", "--chunk", "1000", "--envs-dir", str(tmp_path))  # fmt: skip
    rows = re.findall(r"^\| (driftwarden core|River ADWIN)[^|]* \| ([\d,]+) \| ([\d,]+) \| (\d+) of 120 \| ([^|]+) \|$",
                      out, re.MULTILINE)  # fmt: skip
    assert [r[0] for r in rows] == ["driftwarden core", "driftwarden core", "River ADWIN"]
    assert all(int(r[1].replace(",", "")) > 0 and int(r[2].replace(",", "")) > 50 for r in rows)
    # Columnar batches and row envelopes: the same detections, hence the same false positives and delays.
    assert rows[0][3:] == rows[1][3:]
    assert re.fullmatch(r"[\d,]+ / [\d,]+", rows[0][4].strip()), rows[0][4]  # both shifted features caught
