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
    args = ["throughput", "--batch-sizes", "1,100", "--events", "8000", "--single-events", "1000"]
    out = run(monkeypatch, capsys, *args)
    rows = re.findall(r"^\| (\d+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$", out,
                      re.MULTILINE)  # fmt: skip
    assert [(r[0], r[1]) for r in rows] == [("1", "1,000"), ("100", "8,000")]
    assert all(float(value.replace(",", "")) > 0 for row in rows for value in row[2:5])  # the three rates
