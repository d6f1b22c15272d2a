"""One hot model across many workers: detection on N shards equals detection on one (driftwarden.core.shards)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from driftwarden.bench.detection_shapes import (
    CHANGES,
    FAMILIES,
    category_probabilities,
    category_theta_for,
    change,
    theta_for,
)
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.detectors.sequential import BANK
from driftwarden.core.events import CategoricalSummary, NumericSummary, PredictionEvent, WindowSummary
from driftwarden.core.profile import build_profile, schema_of, to_columns
from driftwarden.core.shards import (
    BIN_LLR,
    BINS,
    HELD_MAX,
    Decision,
    ShardBatch,
    ShardedReference,
    ShardSummarizer,
    SummaryMerger,
)
from driftwarden.core.state import StateError, decode, encode
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

REFERENCE_N = 5_000
EVENTS = 16_000
CHANGE_AT = 8_000
RATE = 100.0  # events per second of event time
BUCKET_SECONDS = 1.0
DISORDER_S = 0.5  # how far an event may arrive behind the latest one of its shard
KL = 0.05


@dataclass
class Stream:
    """One model's events, in event-time order: one numeric feature per shape family, one categorical."""

    reference: ShardedReference
    event_ids: list[str]
    ts: np.ndarray
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[str | None]]

    def batch(self, rows: np.ndarray) -> ShardBatch:
        return ShardBatch(
            [self.event_ids[i] for i in rows],
            self.ts[rows],
            {name: values[rows] for name, values in self.numeric.items()},
            {name: [values[i] for i in rows] for name, values in self.categorical.items()},
        )


def shape_stream(variant: int, seed: int) -> Stream:
    """Every family of the shape corpus as a feature, each changing by its ``variant``-th change type at
    :data:`KL` half way; a categorical feature whose mix moves; a few values missing."""
    rng = np.random.default_rng(seed)
    quantiles, numeric = {}, {}
    for family in FAMILIES:
        kind = CHANGES[family][variant % len(CHANGES[family])]
        pre, post = change(family, kind, theta_for(family, kind, KL))
        quantiles[family] = np.quantile(pre.sample(rng, REFERENCE_N), np.linspace(0, 1, 1_000)).tolist()
        values = np.concatenate([pre.sample(rng, CHANGE_AT), post.sample(rng, EVENTS - CHANGE_AT)])
        values[rng.random(EVENTS) < 0.01] = np.nan
        numeric[family] = values
    levels = [f"c{i}" for i in range(len(category_probabilities(0.0)))]
    reference_counts = rng.multinomial(REFERENCE_N, category_probabilities(0.0))
    after = category_probabilities(category_theta_for(KL))
    categories = [*rng.choice(levels, CHANGE_AT, p=category_probabilities(0.0)),
                  *rng.choice(levels, EVENTS - CHANGE_AT, p=after)]  # fmt: skip
    reference = ShardedReference.of_quantiles(
        quantiles, REFERENCE_N, {"category": dict(zip(levels, reference_counts.tolist(), strict=True))}
    )
    ts = 1_700_000_000 + np.arange(EVENTS) / RATE
    return Stream(
        reference, [f"ev-{seed}-{i}" for i in range(EVENTS)], ts, numeric, {"category": [str(c) for c in categories]}
    )


def arrival_order(rows: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rows`` in a shard's arrival order: event-time order disturbed by up to :data:`DISORDER_S`."""
    return rows[np.argsort(ts[rows] + rng.uniform(0, DISORDER_S, len(rows)))]


def run(stream: Stream, shards: int, seed: int) -> tuple[list[Decision], int]:
    """Spread ``stream`` over ``shards`` at random, feed each shard its events in batches of random sizes and
    out of order, interleave the shards' summaries at random (each shard's in its order) into one owner."""
    rng = np.random.default_rng(seed)
    shard_of = rng.integers(0, shards, EVENTS)
    summarizers = [ShardSummarizer("m", "1", stream.reference, s, shards, BUCKET_SECONDS, lateness_s=DISORDER_S)
                   for s in range(shards)]  # fmt: skip
    queues: list[list[WindowSummary]] = [[] for _ in range(shards)]
    for shard, summarizer in enumerate(summarizers):
        rows = arrival_order(np.flatnonzero(shard_of == shard), stream.ts, rng)
        cuts = np.sort(rng.choice(np.arange(1, len(rows)), size=len(rows) // 150, replace=False))
        for part in np.split(rows, cuts):
            queues[shard] += summarizer.add(stream.batch(part))
        queues[shard] += summarizer.close(float(stream.ts[-1]) + 2 * BUCKET_SECONDS)
    owner = SummaryMerger(stream.reference, shards, arl=1e5, window_size=2_000, window_level=1e-3)
    decisions: list[Decision] = []
    heads = [0] * shards
    while any(head < len(queue) for head, queue in zip(heads, queues, strict=True)):
        shard = int(rng.choice([s for s in range(shards) if heads[s] < len(queues[s])]))
        summary = WindowSummary.model_validate_json(queues[shard][heads[shard]].to_json())  # as on the topic
        heads[shard] += 1
        decisions += owner.add(summary)
    assert owner.duplicates == 0
    return decisions, sum(s.late for s in summarizers)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_detection_on_n_shards_equals_detection_on_one(variant: int):
    stream = shape_stream(variant, seed=variant)
    one, late = run(stream, shards=1, seed=100)
    assert late == 0
    change_bucket = int(stream.ts[CHANGE_AT] // BUCKET_SECONDS)
    # the decisions are the real thing: every feature's change is found, by a CUSUM and by a window test,
    # after it happened, and nothing before
    assert {d.feature for d in one if d.kind == "cusum"} >= set(FAMILIES) - {"poisson"}
    assert {d.feature for d in one if d.kind == "window" and d.drifted} >= {"category"}
    assert all(d.bucket >= change_bucket for d in one if d.drifted)
    assert sum(not d.drifted for d in one) > 30  # and the window tests that pass: compared too
    for shards in (2, 4):
        for seed in (1, 2):
            decisions, late = run(stream, shards, seed)
            assert late == 0
            assert decisions == one  # the same findings, in the same buckets, with the same statistics


def test_one_shard_in_a_different_order_decides_the_same():
    stream = shape_stream(0, seed=5)
    assert run(stream, 1, seed=1)[0] == run(stream, 1, seed=2)[0]


def test_bin_ratios_are_proper_likelihood_ratios():
    # each alternative's bin probabilities sum to 1; under no change a CUSUM's binned step drifts down
    # (by KL(null || alternative) of the bins), by less than its per-value step: binning loses information
    assert np.allclose(np.exp(BIN_LLR).sum(axis=1) / BINS, 1.0)
    binned_kl = -BIN_LLR.mean(axis=1)
    assert np.all(binned_kl > 0)
    assert np.all(binned_kl <= np.array([spec.kl for spec in BANK]) * (1 + 1e-3))  # (quadrature error)


def summaries_of(shards: int, bucket_rows: dict[int, int]) -> list[WindowSummary]:
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    out = []
    for shard in range(shards):
        summarizer = ShardSummarizer("m", "1", reference, shard, shards, bucket_seconds=10)
        for bucket, rows in bucket_rows.items():
            ts = np.full(rows, bucket * 10 + 1.0)
            out += summarizer.add(ShardBatch([f"{shard}-{bucket}-{i}" for i in range(rows)], ts,
                                             {"x": np.full(rows, 0.5)}, {}))  # fmt: skip
    return out


def test_a_replayed_summary_is_ignored_and_counted():
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    owner = SummaryMerger(reference, shards=1, arl=1e4, window_size=10_000, window_level=1e-3)
    summaries = summaries_of(1, {0: 5, 1: 5, 2: 5})
    assert [s.bucket for s in summaries] == [0, 1]
    for summary in summaries + summaries:
        owner.add(summary)
    assert owner.duplicates == 2
    assert owner.window.events == 10


def test_a_bucket_waits_for_every_shard():
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    owner = SummaryMerger(reference, shards=2, arl=1e4, window_size=10_000, window_level=1e-3)
    a = ShardSummarizer("m", "1", reference, 0, 2, bucket_seconds=10)
    b = ShardSummarizer("m", "1", reference, 1, 2, bucket_seconds=10)
    for summary in a.add(ShardBatch(["a1", "a2"], np.array([1.0, 31.0]), {"x": np.array([0.2, 0.3])}, {})):
        owner.add(summary)
    assert owner.next_bucket is None  # shard 1 has said nothing yet
    for summary in b.close(21.0):  # an idle shard: the empty bucket before its watermark
        owner.add(summary)
    assert owner.next_bucket == 2 and owner.window.events == 1  # buckets 0 and 1 decided, bucket 2 waits
    with pytest.raises(ValueError, match="this owner merges 2"):
        owner.add(summaries_of(1, {0: 1, 1: 1})[0])
    other = ShardSummarizer("m", "2", reference, 1, 2, bucket_seconds=10)
    with pytest.raises(ValueError, match=r"a summary of \('m', '2'\); this owner merges \('m', '1'\)"):
        owner.add(other.close(41.0)[0])


def test_late_events_are_counted_and_left_out():
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    summarizer = ShardSummarizer("m", "1", reference, 0, 1, bucket_seconds=10, lateness_s=5)
    assert summarizer.add(ShardBatch(["a"], np.array([3.0]), {"x": np.array([0.5])}, {})) == []
    (closed,) = summarizer.add(ShardBatch(["b"], np.array([16.0]), {"x": np.array([0.5])}, {}))
    assert closed.bucket == 0 and closed.events == 1
    assert summarizer.add(ShardBatch(["c", "d"], np.array([9.0, 12.0]), {"x": np.array([0.5, np.nan])}, {})) == []
    assert summarizer.late == 1
    (closed,) = summarizer.close(20.0)
    assert closed.events == 2 and closed.numeric["x"].missing == 1 and sum(closed.numeric["x"].bins) == 1
    assert closed.late_events == 1


def test_decoded_events_of_a_load_scenario_on_n_shards_alert_as_on_one_and_only_where_it_drifted():
    # the whole shard path from Kafka message bytes: decode, columns, counts; the reference a profile
    scenario = Scenario(name="abrupt-shift", n_events=25_000, onset=15_000, magnitude=0.5, seed=4)
    rows = [e for chunk in generate(scenario, chunk_size=5_000) for e in chunk.prediction_events()]
    profile = build_profile("m", "1", [PredictionEvent.model_validate(e) for e in rows[:REFERENCE_N]])
    schema, reference = schema_of(profile), ShardedReference.of(profile)
    messages = [
        envelope("prediction-batch.v1", scenario.model_id, rows[i : i + 250])
        for i in range(REFERENCE_N, len(rows), 250)
    ]
    config = ModelMonitorConfig()
    end = rows[-1]["ts"] + 1

    def decide(shards: int) -> list[Decision]:
        summarizers = [ShardSummarizer("m", "1", reference, s, shards, bucket_seconds=1.0) for s in range(shards)]
        owner = SummaryMerger(reference, shards, config.streaming_arl(len(profile.numeric)), config.window_size,
                              config.window_level)  # fmt: skip
        summaries = []
        for i, message in enumerate(messages):  # round robin, as a producer might
            events = PREDICTIONS.decode(message).events
            summaries += summarizers[i % shards].add(ShardBatch.of_columns(to_columns(events, schema), schema))
        summaries += [summary for summarizer in summarizers for summary in summarizer.close(end)]
        return [d for summary in sorted(summaries, key=lambda s: s.bucket) for d in owner.add(summary)]

    one = decide(1)
    assert {d.feature for d in one if d.drifted} == set(scenario.drift_features)
    assert min(d.bucket for d in one if d.drifted) >= int(rows[scenario.onset]["ts"])
    assert decide(2) == one
    assert decide(4) == one


def stream(shard: int, shards: int = 2, partition: int = 0, origin: int = 0) -> ShardSummarizer:
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    return ShardSummarizer("m", "1", reference, shard, shards, 10, 0, "predictions", partition, origin)


def counted(summarizer: ShardSummarizer, ts: list[float]) -> list[WindowSummary]:
    """The summaries of one event per time in ``ts`` (ids unique per summarizer and time)."""
    ids = [f"{summarizer.shard}-{summarizer.origin}-{t}" for t in ts]
    return summarizer.add(ShardBatch(ids, np.array(ts), {"x": np.full(len(ts), 0.5)}, {}))


def owner(shards: int = 2, idle_s: float = math.inf) -> SummaryMerger:
    reference = ShardedReference.of_quantiles({"x": np.linspace(0, 1, 100).tolist()}, 1_000, {})
    return SummaryMerger(reference, shards, arl=1e4, window_size=10_000, window_level=1e-3, idle_s=idle_s)


def test_the_owner_merges_each_seq_of_a_stream_once_and_in_order_holding_what_follows_a_gap():
    a, b = stream(0), stream(1)
    first = counted(a, [1, 2, 11, 12, 21, 31])  # buckets 0, 1, 2 closed: seq 0, 1, 2
    assert [s.seq for s in first] == [0, 1, 2] and [s.events for s in first] == [2, 2, 1]
    merger = owner()
    assert merger.add(first[0]) == [] and merger.add(first[2]) == []  # seq 2 before seq 1: a gap, held
    assert merger.merged_events == 2 and next(iter(merger.held.values())).keys() == {2}
    merger.add(first[1])  # the gap filled: seq 1, then the held seq 2
    assert merger.merged_events == 5 and merger.held == {}
    for summary in first:  # a replay (a restarted worker regenerates the same seqs): dropped, counted
        merger.add(summary)
    assert merger.duplicates == 3 and merger.merged_events == 5
    merger.add(first[2])
    assert merger.duplicates == 4
    for summary in counted(b, [1, 25]):  # shard 1 through bucket 1: buckets 0 and 1 are decided
        merger.add(summary)
    assert merger.next_bucket == 2 and merger.window.events == 5 and merger.merged_events == 6


def test_a_gap_holds_decisions_and_a_held_duplicate_is_dropped():
    a, b = stream(0), stream(1)
    merger = owner()
    summaries = counted(a, [1, 11, 21, 31])  # seq 0, 1, 2
    for summary in counted(b, [1, 11, 21, 31]):
        merger.add(summary)
    merger.add(summaries[0])
    merger.add(summaries[2])
    merger.add(summaries[2])  # a duplicate of a held one
    assert merger.next_bucket == 1 and merger.duplicates == 1  # bucket 1 waits for shard 0's seq 1
    merger.add(summaries[1])
    assert merger.next_bucket == 3 and merger.merged_events == 6


def test_a_stream_started_afresh_is_another_stream_and_one_first_seen_late_is_taken_from_there():
    merger = owner(shards=1)
    old, new = stream(0, shards=1, origin=0), stream(0, shards=1, origin=40)
    merger.add(counted(old, [1, 11])[0])
    merger.add(counted(new, [21, 31])[0])  # seq 0 of the stream that started at input offset 40: not a duplicate
    assert merger.duplicates == 0 and merger.merged_events == 2
    joined = stream(0, shards=1, partition=3)
    counted(joined, [1, 11])  # seq 0, not seen by this owner
    merger.add(counted(joined, [21])[0])  # seq 1: taken, the stream starts there for this owner
    assert merger.merged_events == 3


def test_a_silent_shard_stops_holding_decisions_after_idle_s_and_its_later_summaries_count_once():
    a, b = stream(0), stream(1)
    merger = owner(idle_s=30)
    for summary in counted(a, [1, 11, 21]):
        merger.add(summary, now=100.0)
    assert merger.next_bucket is None and merger.decide(now=129.0) == []  # shard 1 never heard of: waits
    merger.decide(now=131.0)  # idle for 30 s since the first summary: buckets 0 and 1 decided without it
    assert merger.next_bucket == 2 and merger.window.events == 2
    late = counted(b, [5, 6, 15, 31])  # shard 1 wakes up: its buckets 0..2, two of them decided already
    for summary in late:
        merger.add(summary, now=140.0)
    assert (merger.late_summaries, merger.late_events) == (2, 3)  # merged into bucket 2, the next undecided
    assert merger.next_bucket == 3 and merger.window.events == 5 and merger.merged_events == 5
    for summary in late:
        merger.add(summary, now=141.0)
    assert merger.duplicates == 3 and merger.merged_events == 5
    for summary in counted(a, [41]):  # both shards heard of: waits for shard 1 again
        merger.add(summary, now=150.0)
    assert merger.next_bucket == 3


def test_summarizer_and_owner_state_round_trip_and_a_restored_summarizer_regenerates_the_same_summaries():
    a = stream(0)
    counted(a, [1, 2, 11, 13.5])
    restored = ShardSummarizer.from_state(decode(encode("s", 1, a.state()), "s", 1), a.reference)
    assert counted(restored, [25, 26, 40]) == counted(a, [25, 26, 40])  # same seqs, same counts
    merger = owner(idle_s=30)
    b = stream(1)
    gap = counted(b, [1, 11, 21, 31])
    for summary in [*counted(stream(0), [1, 11, 21, 31]), gap[0], gap[2]]:
        merger.add(summary, now=5.0)
    copy = owner(idle_s=30)
    copy.restore(decode(encode("m", 1, merger.state()), "m", 1))
    assert copy.state() == merger.state()
    assert copy.add(gap[1], now=6.0) == merger.add(gap[1], now=6.0)
    assert copy.state() == merger.state() and copy.merged_events == 6
    with pytest.raises(StateError, match="3 shards"):
        owner(shards=2).restore(decode(encode("m", 1, {**merger.state(), "shards": 3}), "m", 1))


def test_a_refused_summary_changes_nothing_and_once_skipped_what_follows_in_its_stream_is_not_held():
    a, b = stream(0), stream(1)
    merger = owner()
    first, second = counted(a, [1, 11, 21, 31, 41]), counted(b, [1, 2, 11, 21, 31, 41])  # seq 0..3 each
    merger.add(first[0])
    corrupt = first[1].model_copy(update={"numeric": {"x": NumericSummary(bins=[1, 2], missing=0, sum=0.5,
                                                                           sum_squares=0.25)}})  # fmt: skip
    before = merger.state()
    with pytest.raises(ValueError, match=f"x: 2 bins, not {BINS}"):
        merger.add(corrupt)
    assert merger.state() == before
    unknown = first[1].model_copy(update={"categorical": {"zzz": CategoricalSummary(counts={"q": 1}, missing=0)}})
    with pytest.raises(ValueError, match="features the reference lacks: zzz"):  # (was a KeyError at each window)
        merger.add(unknown)
    merger.skip(corrupt)  # dead-lettered: its stream moves past seq 1
    merger.add(first[2])
    assert merger.held == {} and merger.merged_events == 2 and merger.skipped == 1
    merger.skip(first[2])  # a seq merged already: nothing changes
    assert merger.skipped == 1 and merger.merged_events == 2
    # a refused summary beyond a gap keeps its place: once the gap fills, the stream runs through it
    merger.add(second[0])
    other_count = second[2].model_copy(update={"shards": 3})
    with pytest.raises(ValueError, match="a summary of shard 1 of 3; this owner merges 2"):
        merger.add(other_count)
    merger.skip(other_count)
    merger.add(second[3])
    assert merger.held[("predictions", 0, 1, 0)].keys() == {2, 3}
    copy = owner()
    copy.restore(decode(encode("m", 1, merger.state()), "m", 1))
    assert copy.state() == merger.state()
    for restored_or_not in (merger, copy):
        restored_or_not.add(second[1])
        assert restored_or_not.held == {} and restored_or_not.merged_events == 2 + 4
        assert restored_or_not.skipped == 2 and restored_or_not.missing == 0
        assert restored_or_not.streams[("predictions", 0, 1, 0)] == 4


def test_a_gap_nothing_fills_is_given_up_after_idle_s_and_a_stream_holds_at_most_held_max_summaries():
    a, b = stream(0), stream(1)
    merger = owner(idle_s=30)
    summaries = counted(a, [1, 11, 21, 31, 41])  # seq 0..3; seq 1 never arrives (unreadable, dead-lettered)
    for summary in counted(b, [1, 11, 21, 31, 41]):
        merger.add(summary, now=100.0)
    merger.add(summaries[0], now=100.0)
    merger.add(summaries[2], now=101.0)
    merger.add(summaries[3], now=105.0)
    assert merger.held[("predictions", 0, 0, 0)].keys() == {2, 3} and merger.next_bucket == 1
    assert merger.decide(now=131.0) == [] and merger.missing == 0  # held for 30 s since the gap: still waiting
    merger.decide(now=131.5)
    assert merger.held == {} and merger.missing == 1 and merger.next_bucket == 4
    assert merger.merged_events == 4 + 3 and merger.stalled == {}
    merger.add(summaries[1], now=132.0)  # arrives after all: its seq was given up
    assert merger.duplicates == 1 and merger.merged_events == 7

    merger = owner(shards=1)  # no idle_s: the count bounds what a stream holds
    summaries = counted(stream(0, shards=1), [10.0 * i + 1 for i in range(HELD_MAX + 4)])  # seq 0..HELD_MAX + 2
    merger.add(summaries[0])
    most = 0
    for summary in summaries[2:]:
        merger.add(summary)
        most = max(most, *(len(held) for held in merger.held.values()), 0)
    assert most == HELD_MAX and merger.held == {} and merger.missing == 1
    assert merger.merged_events == len(summaries) - 1
