"""Both benchmark commands keep working (tiny sizes; the full runs are for docs/benchmarks.md)."""

from __future__ import annotations

import re
import sys

import pytest

from driftwarden.cli import main
from driftwarden.core.detectors.sequential import BANK, bank

pytestmark = pytest.mark.integration


def run(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["driftwarden", "bench", *args])
    main()
    return capsys.readouterr().out


def test_bench_core_reports_events_per_second(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "core", "--events", "10000", "--batch-size", "200")
    assert re.search(r"10,000 events in envelopes of 200: [\d,]+ events/s", out)


def test_bench_core_rss_every_reports_memory_while_labels_join(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "core", "--events", "30000", "--batch-size", "500", "--rss-every", "10000",
              "--label-delay", "5000")  # fmt: skip
    assert re.search(r"^30,000 events in columnar batches of 500, every other one labelled 5,000 events later", out,
                     re.MULTILINE), out  # fmt: skip
    rows = re.findall(r"^\| ([\d,]+) \| (\d+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", out,
                      re.MULTILINE)  # fmt: skip
    assert [row[0] for row in rows] == ["10,000", "20,000", "30,000"], out
    assert all(int(row[1]) > 50 for row in rows)
    # every event's id is remembered; half of them wait for no label, the other half are joined ~5,000-15,000 later
    assert [row[6] for row in rows] == ["10,000", "20,000", "30,000"]
    assert [row[4] for row in rows] == ["0", "5,000", "10,000"] and rows[-1][2] == "20,000", out
    assert re.search(r"^RSS at 30,000 / at 10,000: \d\.\d{3} \([+-][\d.]+ %\)$", out, re.MULTILINE)


def test_bench_joiner_reports_bytes_per_pending_prediction_and_rss_while_full(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "joiner", "--pending", "50000", "--events", "100000", "--label-calls", "1,100",
              "--labels", "3000")  # fmt: skip
    held = re.search(r"^50,000 pending predictions: (\d+) bytes each \(tracemalloc\)", out, re.MULTILINE)
    assert held and 100 < int(held.group(1)) <= 200, out  # issue 12: at most 200 bytes per pending prediction
    rows = re.findall(r"^\| ([\d,]+) \| (\d+) \|$", out, re.MULTILINE)
    assert rows[0][0] == "50,000" and rows[-1][0] == "100,000" and all(int(rss) > 50 for _, rss in rows)
    assert re.search(r"^RSS from full to the end: [+-][\d.]+ %$", out, re.MULTILINE)
    costs = re.findall(r"^\| ([\d,]+) \| (\d+\.\d) \|$", out, re.MULTILINE)
    assert [calls for calls, _ in costs] == ["1", "100"] and all(float(us) > 0 for _, us in costs), out


def test_bench_shards_reports_throughput_per_worker_count_and_the_cost_of_bucketed_decisions(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "shards", "--events", "20000", "--workers", "1,2", "--null-values", "2000",
              "--delay-runs", "1")  # fmt: skip
    rows = re.findall(r"^\| (\d) \| [\d,]+ \| [\d,]+ \| ([\d,]+) \|", out, re.MULTILINE)
    assert [workers for workers, _ in rows] == ["1", "2"], out
    assert int(rows[1][1]) == 2 * int(rows[0][1])  # every worker publishes every bucket
    costs = re.findall(r"^\| (\w+) \| (per value \(RankCusumDetector\)|per bucket of [\d,]+) \| \d+ \| [\d,]+ \|$", out,
                       re.MULTILINE)  # fmt: skip
    assert len(costs) == 8 * 4, out
    shares = re.findall(r"^\| \w+ \| (0\.\d{4}|1\.0000) \|$", out, re.MULTILINE)
    assert len(shares) == 8, out


def test_bench_serving_reports_rate_and_latency_per_batch_size_and_protocol(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "serving", "--batch-sizes", "1,8", "--requests", "20", "--concurrency", "2")
    cells = r" \| 20 \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$"
    rows = re.findall(r"^\| (v[12]) \| (\d+)" + cells, out, re.MULTILINE)
    assert [r[:2] for r in rows] == [("v1", "1"), ("v2", "1"), ("v1", "8"), ("v2", "8")]  # every answer checked
    assert all(float(r[2].replace(",", "")) > 0 and float(r[3]) <= float(r[4]) for r in rows)
    assert all(float(r[5].replace(",", "")) > float(r[2].replace(",", "")) for r in rows), "the ceiling is above"
    assert all(int(r[6].replace(",", "")) > 0 for r in rows), "the server's CPU time per request is measured"


def test_bench_throughput_compares_the_monitor_with_both_ceilings(monkeypatch, capsys):
    args = ["throughput", "--batch-sizes", "1,100", "--columnar-sizes", "500", "--events", "8000",
            "--single-events", "3000", "--latency-rate",
            "6000", "--latency-models", "2", "--latency-events", "9000", "--memory-events", "20000",
            "--scaling-events", "20000"]  # fmt: skip
    out = run(monkeypatch, capsys, *args)
    cells = r" \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ≥?([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$"  # ≥: too fast to time
    rows = re.findall(r"^\| (\d+(?: columnar)?)" + cells, out, re.MULTILINE)
    assert [(r[0], r[1]) for r in rows] == [("1", "3,000"), ("100", "8,000"), ("500 columnar", "8,000")]
    assert all(float(value.replace(",", "")) > 0 for row in rows for value in row[2:5])  # the three rates
    # Single events: the CPU per message of both workers (from /proc), over the spans their rates are timed.
    cpu = re.findall(r"^single events, CPU per message: empty Faust agent ([\d,]+) µs, monitor ([\d,]+) µs, "
                     r"Faust/monitor ([\d.]+)$", out, re.MULTILINE)  # fmt: skip
    assert len(cpu) == 1 and all(float(value.replace(",", "")) > 0 for value in cpu[0]), out
    # Every firing alert of the two drifting models is timed from its trigger event's send time.
    latency = re.search(r"latency at [\d,]+ events/s \(2 models, (\d+) alerts\): p50 (\d+) ms, p99 (\d+) ms", out)
    assert latency and int(latency.group(1)) >= 4 and 0 < int(latency.group(2)) <= int(latency.group(3))
    scaling = re.search(
        r"2 partitions, 20,000 events: 1 worker ≥?([\d,]+) events/s, 2 workers ≥?([\d,]+) events/s", out
    )
    assert scaling and all(int(rate.replace(",", "")) > 0 for rate in scaling.groups())
    samples = re.findall(r"^\| ([\d,]+) \| (\d+) \|$", out, re.MULTILINE)
    assert samples and samples[-1][0] == "20,000"
    # Once it processes events the worker holds its imports and state (before, on a loaded machine, a
    # sample may catch it still importing: 36 MB at 0 events was seen).
    assert all(int(rss) > 50 for processed, rss in samples if processed != "0")
    assert re.search(r"peak RSS \d+ MB over 20,000 events", out)


def test_bench_peers_puts_driftwarden_and_river_through_the_same_rows(monkeypatch, capsys, tmp_path):
    """Tiny size, driftwarden and River only: River's environment is made by uv in seconds (its cache);
    Evidently's and NannyML's take minutes, so only the full run in docs/benchmarks.md makes them."""
    tools = "driftwarden-columns,driftwarden-rows,driftwarden-columns-joiner,river-adwin"
    out = run(monkeypatch, capsys, "peers", "--tools", tools,
              "--rows", "8000", "--reference-rows", "2000", "--chunk", "1000", "--envs-dir", str(tmp_path))  # fmt: skip
    rows = re.findall(r"^\| (driftwarden core|driftwarden monitor|River ADWIN)[^|]* \| ([\d,]+) \| ([\d,]+) \| "
                      r"([\d,]+) \| (\d+) of 120 \| ([^|]+) \|$", out, re.MULTILINE)  # fmt: skip
    assert [r[0] for r in rows] == ["driftwarden core", "driftwarden core", "driftwarden monitor", "River ADWIN"]
    number = [[int(cell.replace(",", "")) for cell in r[1:4]] for r in rows]  # rows/s, per CPU-second, RSS
    assert all(wall > 0 and cpu > 0 and rss > 50 for wall, cpu, rss in number)
    # Columnar batches, row envelopes and the whole monitor (time screen, dedupe, joiner): the same
    # detections, hence the same false positives and delays.
    assert rows[0][4:] == rows[1][4:] == rows[2][4:]
    assert re.fullmatch(r"[\d,]+ / [\d,]+", rows[0][5].strip()), rows[0][5]  # both shifted features caught


def test_bench_detection_runs_the_shape_corpus(monkeypatch, capsys, tmp_path):
    args = ["detection", "--out", str(tmp_path), "--parts", "shapes", "--shape-families", "poisson,categorical",
            "--kl-sizes", "0.2", "--shape-seeds", "1", "--shape-stable-events", "2000", "--kswin-seeds", "1",
            "--workers", "1", "--shape-reference-size", "8000"]  # fmt: skip
    out = run(monkeypatch, capsys, *args)
    assert "Each stream's reference: 8,000 values." in out
    rows = re.findall(r"^\| (poisson|categorical) \| (.+?) \| ([\d,]+) \| ([\d.]+) \((\d+)\) \| (\d+)/(\d+) \|", out,
                      re.MULTILINE)  # fmt: skip
    detectors = {r[1] for r in rows}
    assert {"driftwarden (default)", "driftwarden streaming only", "driftwarden window tests only", "ADWIN",
            "PageHinkley", "KSWIN", "never retrain"} <= detectors  # fmt: skip
    # the per-change table: the streaming detector alone → the default set, and what its window tests caught first
    # (none here: a categorical feature's rank CUSUMs find a KL 0.2 mix change long before a window of 2,000 ends)
    assert re.search(r"^\| categorical \| mixture \| 0.2 \| 69 \| 0/1 → 0/1 \| .+ \| 0/1 \|$", out, re.MULTILINE)
    assert {r[0] for r in rows} == {"poisson", "categorical"}
    # every configuration saw the same unchanged values: the stable stream and each change's lead-in
    # (KSWIN, at ~170 µs an update, watches the change streams only)
    assert {r[2] for r in rows if r[0] == "poisson" and r[1] != "KSWIN"} == {"8,000"}  # 2,000 + 3 x 2,000
    never = [r for r in rows if r[1] == "never retrain"]
    assert all(r[3] == "0.00" and r[5] == r[6] for r in never)  # never alarms: misses every change
    assert re.search(r"^- (met|NOT met): 0 missed changes with KL ≥ 0.2", out, re.MULTILINE)
    assert (tmp_path / "shapes.json").exists() and (tmp_path / "results.md").read_text() in out


def test_bench_detection_runs_only_the_chosen_concept_configurations(monkeypatch, capsys, tmp_path):
    args = ["detection", "--out", str(tmp_path), "--parts", "concepts", "--seeds", "1", "--concepts", "2",
            "--concept-length", "500", "--gradual-width", "100", "--workers", "1",
            "--concept-detector", "driftwarden (default)", "--concept-detector", "retrain every 1,000"]  # fmt: skip
    out = run(monkeypatch, capsys, *args)
    rows = re.findall(r"^\| (\w+/\w+) \| (.+?) \|", out, re.MULTILINE)
    assert {r[1] for r in rows} == {"driftwarden (default)", "retrain every 1,000"}
    assert len(rows) == 2 * 12  # both, on each of the 12 concept streams


def test_bench_bank_overhead_reports_the_multiplicity_and_the_margin_over_references(monkeypatch, capsys):
    out = run(monkeypatch, capsys, "bank-overhead", "--targets", "3e3", "--alarms", "30", "--references", "20",
              "--reference-n", "1000")  # fmt: skip
    rows = re.findall(r"^\| (\d+) CUSUMs \| 3e\+03 \| ([\d,]+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \|$", out,
                      re.MULTILINE)  # fmt: skip
    assert [row[0] for row in rows] == [str(len(BANK)), str(len(bank((0.3, 1.0))))], out
    assert all(0 < int(union) < int(total) for _, _, union, total, _, _ in rows), out  # the bank: fewer than the sum
    assert re.search(r"^Reference spreads, .* over 20 references of 1,000 values", out, re.MULTILINE), out
    shares = re.findall(r"^\| [\d.]+ \| [\d.]+–[\d.]+ \(median [\d.]+\) \| ([\d.]+)% \|$", out, re.MULTILINE)
    assert len(shares) == 4, out
