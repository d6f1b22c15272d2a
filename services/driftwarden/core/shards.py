"""One hot model across many workers: mergeable per-bucket summaries, one owner that decides.

A model whose traffic is too much for one worker may spread it over several partitions (key
``model_id/shard``, :func:`shard_key`). Each worker that reads a shard summarises its events per
**event-time bucket** (:class:`ShardSummarizer`) and publishes one ``window-summary.v1`` per bucket
when its watermark passes the bucket's end; the model's **owner** (:class:`SummaryMerger`) adds the
shards' summaries of each bucket and runs every decision on the merged buckets, in bucket order.

Every summary is a vector of integer counts, so merging is exact and independent of how the events
were spread over shards and of their order within a shard. Detection on N shards is then detection
on one shard of the same events, by construction (``tests/unit/test_shards.py`` checks it on the
shape corpus):

* a numeric feature's values become ranks ``u`` against the reference (the randomized probability
  integral transform of :class:`~driftwarden.core.detectors.sequential.ReferenceCdf`, its ``V`` drawn
  from a hash of the event id and the feature, not from the value's position in a stream) counted in
  :data:`BINS` equal-probability bins of the reference;
* a categorical feature's values are counted per category.

Decisions on a merged bucket:

* **CUSUMs** (the bank of :data:`~driftwarden.core.detectors.sequential.BANK`), stepped once per bucket
  by ``sum over bins of count x log(P_alt(bin) / P_ref(bin))``: the log-likelihood ratio of the binned
  values (:data:`BIN_LLR`). Thresholds are the per-value ones (:func:`bank_thresholds`), which stay
  conservative here: the binned ratio's drift under no change is smaller (the binning loses
  information, Jensen), and a CUSUM stepped by a bucket's sum is at most the per-value CUSUM at the
  bucket's end (each per-value step floors at zero), so it crosses no more often. The price is delay:
  a change is seen at the end of a bucket, by a CUSUM on coarser evidence. The continuous-part
  CUSUMs of :func:`~driftwarden.core.detectors.sequential.continuous_part`, the atoms' of
  :func:`~driftwarden.core.detectors.sequential.atom_bank` and a multimodal reference's of
  :func:`~driftwarden.core.detectors.multimodal.shape_bank` are not run.
* **Window tests**: merged buckets accumulate until a window holds ``window_size`` events; then a
  chi-square test per feature (numeric: the bins against the reference's equal shares; categorical:
  the counts against the reference's, unseen categories pooled) with the p-value given the reference
  (:func:`~driftwarden.core.stats.category_test`) and Benjamini-Hochberg over the features at
  ``window_level``; a categorical one also needs the Jensen-Shannon effect floor.

Means and variances (``sum``, ``sum_squares``) travel along for the evidence; being floating-point
sums they may differ in the last bits between shardings, so no decision depends on them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> quantiles = np.quantile(rng.normal(0, 1, 5_000), np.linspace(0, 1, 1_000))
>>> reference = ShardedReference.of_quantiles({"x": quantiles.tolist()}, 5_000, {})
>>> summarizer = ShardSummarizer("m", "1", reference, shard=0, shards=1, bucket_seconds=10)
>>> merger = SummaryMerger(reference, shards=1, arl=1e4, window_size=2_000, window_level=1e-3)
>>> values = np.concatenate([rng.normal(0, 1, 3_000), rng.normal(1, 1, 3_000)])
>>> for i in range(0, 6_000, 100):  # one bucket of 10 s per 100 events
...     batch = ShardBatch([f"e{j}" for j in range(i, i + 100)], np.full(100, 10.0 * (i // 100) + 5),
...                        {"x": values[i:i + 100]}, {})
...     summaries = summarizer.add(batch)
...     drifted = [d for s in summaries for d in merger.add(s) if d.drifted]
...     if drifted:
...         break
>>> drifted[0].kind, drifted[0].feature, drifted[0].bucket  # the change starts in bucket 30
('cusum', 'x', 30)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, cast

import numpy as np

from driftwarden.core.detectors.sequential import (
    BANK,
    COEFFICIENTS,
    ReferenceCdf,
    bank_thresholds,
    features,
    normal_scores,
)
from driftwarden.core.events import CategoricalSummary, NumericSummary, WindowSummary, is_model_id
from driftwarden.core.profile import Columns, FeatureSchema, ReferenceProfile
from driftwarden.core.state import State, StateError, StateReader, pack_float, pack_ints
from driftwarden.core.stats import benjamini_hochberg, category_test

#: Equal-probability bins of the reference a numeric feature's ranks are counted in. Multiples of 1/50
#: include every end share of the bank (:data:`~driftwarden.core.detectors.sequential.END_SHARES`).
BINS = 50
WINDOW_SUMMARY_SCHEMA = "window-summary.v1"
#: Summaries one stream holds behind a gap at the most (:class:`SummaryMerger`): one more gives the gap up.
HELD_MAX = 256


def shard_key(model_id: str, shard: int) -> bytes:
    """The Kafka key of a prediction of a sharded model: ``model_id/shard`` (producers spread a model's
    events over shards 0..shards-1 as they like, e.g. round robin or by a hash of the event id).

    >>> shard_key("fraud", 3)
    b'fraud/3'
    """
    return f"{model_id}/{shard}".encode()


def shard_of_key(key: bytes | None, shards_of: Callable[[str], int]) -> tuple[str, int] | None:
    """``(model_id, shard)`` of a message keyed by :func:`shard_key` for one of the shards of a model with
    ``shards_of(model_id) > 1``; None for any other key (the single-worker path).

    >>> shards_of = {"hot": 4}.get
    >>> [shard_of_key(key, lambda m: shards_of(m, 1)) for key in (b"hot/3", b"hot/4", b"hot", b"cold/0", None)]
    [('hot', 3), None, None, None, None]
    """
    model_id, _, shard = (key or b"").decode("utf-8", "replace").partition("/")
    if not (shard.isdigit() and is_model_id(model_id)):
        return None
    shards = shards_of(model_id)
    return (model_id, int(shard)) if shards > 1 and int(shard) < shards else None


def _bin_llr() -> np.ndarray:
    """``log(P_alt(bin) / P_ref(bin))`` per CUSUM of the bank (rows) and rank bin (columns), by quadrature."""
    points = 2_000  # per bin
    u = (np.arange(BINS * points) + 0.5) / (BINS * points)
    density = np.exp(COEFFICIENTS @ features(normal_scores(u)))  # the alternative's density of u
    mass = density.reshape(len(BANK), BINS, points).sum(axis=2)
    llr: np.ndarray = np.log(mass / mass.sum(axis=1, keepdims=True) * BINS)
    return llr


#: One row per CUSUM of :data:`~driftwarden.core.detectors.sequential.BANK`: the log-likelihood ratio of
#: a rank falling in each of the :data:`BINS` bins.
BIN_LLR = _bin_llr()


def event_uniforms(event_ids: Sequence[str], feature: str) -> np.ndarray:
    """A uniform (0, 1) number per event id and feature (blake2b): the ``V`` of the randomized ranks."""
    prefix = feature.encode() + b"\0"
    raw = [int.from_bytes(hashlib.blake2b(prefix + e.encode(), digest_size=8).digest(), "little") for e in event_ids]
    uniforms: np.ndarray = (np.array(raw, dtype=np.uint64) >> np.uint64(11)).astype(float) / 2.0**53 + 2.0**-54
    return uniforms


def _uniforms_of(event_ids: Sequence[str], rows: np.ndarray, feature: str, drawn: np.ndarray) -> np.ndarray:
    """:func:`event_uniforms` of the events at ``rows[drawn]``."""
    return event_uniforms([event_ids[i] for i in rows[drawn].tolist()], feature)


@dataclass(frozen=True)
class ShardedReference:
    """What summarizing and deciding need of a reference: a rank scale per numeric feature, the category
    counts per categorical one."""

    numeric: dict[str, ReferenceCdf]
    reference_n: dict[str, int]
    categorical: dict[str, dict[str, int]]

    @classmethod
    def of(cls, profile: ReferenceProfile) -> ShardedReference:
        return cls(
            {name: ReferenceCdf(p.quantiles, max(1, p.n)) for name, p in profile.numeric.items()},
            {name: max(1, p.n) for name, p in profile.numeric.items()},
            {name: dict(p.counts) for name, p in profile.categorical.items()},
        )

    @classmethod
    def of_quantiles(
        cls, quantiles: Mapping[str, Sequence[float]], reference_n: int, categorical: Mapping[str, Mapping[str, int]]
    ) -> ShardedReference:
        return cls(
            {name: ReferenceCdf(q, reference_n) for name, q in quantiles.items()},
            dict.fromkeys(quantiles, reference_n),
            {name: dict(counts) for name, counts in categorical.items()},
        )


@dataclass
class ShardBatch:
    """Events of one model read by one shard's worker, as columns (NaN / None: missing)."""

    event_ids: list[str]
    ts: np.ndarray
    numeric: dict[str, np.ndarray]
    categorical: dict[str, list[str | None]]

    @classmethod
    def of_columns(cls, columns: Columns, schema: FeatureSchema) -> ShardBatch:
        """The monitor's columns of decoded events (a type violation counts as missing, as in the detectors)."""
        return cls(
            columns.event_ids,
            columns.ts,
            {name: columns.numeric[:, i] for i, name in enumerate(schema.numeric)},
            dict(zip(schema.categorical, columns.categorical, strict=True)),
        )


@dataclass
class _Bucket:
    """One shard's (or the merged) counts of one bucket."""

    events: int = 0
    bins: dict[str, np.ndarray] = field(default_factory=dict)
    missing: Counter[str] = field(default_factory=Counter)
    sums: dict[str, list[float]] = field(default_factory=dict)  # feature -> [sum, sum of squares]
    categories: dict[str, Counter[str]] = field(default_factory=dict)

    def add_numeric(self, name: str, bins: np.ndarray, missing: int, total: float, squares: float) -> None:
        self.bins[name] = self.bins[name] + bins if name in self.bins else bins.copy()
        self.missing[name] += missing
        sums = self.sums.setdefault(name, [0.0, 0.0])
        sums[0] += total
        sums[1] += squares

    def add_categorical(self, name: str, counts: Mapping[str, int], missing: int) -> None:
        self.categories.setdefault(name, Counter()).update(counts)
        self.missing[name] += missing

    def state(self) -> State:
        return {
            "events": self.events,
            "bins": {name: pack_ints(bins) for name, bins in self.bins.items()},
            "missing": dict(self.missing),
            "sums": {name: [pack_float(total), pack_float(squares)] for name, (total, squares) in self.sums.items()},
            "categories": {name: dict(counts) for name, counts in self.categories.items()},
        }

    @classmethod
    def from_state(cls, state: StateReader) -> _Bucket:
        bins, missing, sums = state.child("bins"), state.child("missing"), state.child("sums")
        categories = state.child("categories")
        bucket = cls(state.integer("events"))
        bucket.bins = {name: bins.ints(name) for name in bins.data}
        bucket.missing = Counter({name: missing.integer(name) for name in missing.data})
        bucket.sums = {name: sums.numbers(name) for name in sums.data}
        for name in categories.data:
            counts = categories.child(name)
            bucket.categories[name] = Counter({category: counts.integer(category) for category in counts.data})
        if any(len(pair) != 2 for pair in bucket.sums.values()) or any(len(b) != BINS for b in bucket.bins.values()):
            raise StateError(f"{state.where}: bins or sums of the wrong length")
        return bucket

    def summary(self, of: ShardSummarizer, bucket: int) -> WindowSummary:
        return WindowSummary.model_validate(
            {
                "schema": WINDOW_SUMMARY_SCHEMA,
                "model_id": of.model_id,
                "model_version": of.model_version,
                "shard": of.shard,
                "shards": of.shards,
                "bucket": bucket,
                "bucket_seconds": of.bucket_seconds,
                "events": self.events,
                "late_events": of.late,
                "group": of.group,
                "input_topic": of.input_topic,
                "input_partition": of.input_partition,
                "input_origin": of.origin,
                "seq": of.seq,
                "numeric": {
                    name: NumericSummary(
                        bins=bins.tolist(),
                        missing=self.missing[name],
                        sum=self.sums[name][0],
                        sum_squares=self.sums[name][1],
                    )
                    for name, bins in self.bins.items()
                },
                "categorical": {
                    name: CategoricalSummary(counts=dict(counts), missing=self.missing[name])
                    for name, counts in self.categories.items()
                },
            }
        )


class ShardSummarizer:
    """One shard's worker side: counts its events per event-time bucket, one summary per closed bucket.

    A bucket closes when the shard's watermark (the latest event time it has seen minus ``lateness_s``)
    passes its end; an event of a closed bucket is late: counted (``late``) and left out, which is the
    one way N shards can differ from one (an event late on one shard need not be late on another), so
    ``lateness_s`` must cover the disorder of the producers. Summaries are published for every bucket
    from the shard's first on, empty ones included, so the owner knows when a bucket is complete.

    The summaries are a function of the summarizer's state and the batches added, nothing else (no clock,
    no batch boundaries beyond those of ``add``): restored from :meth:`state` and given the same batches,
    it publishes the same summaries with the same ``seq``. They form one stream, named by ``input_topic``,
    ``input_partition``, ``shard`` and ``origin`` (the input offset where counting started: a summarizer
    started afresh on the same shard is another stream), numbered 0, 1, 2, ... by ``seq``.
    """

    def __init__(self, model_id: str, model_version: str, reference: ShardedReference, shard: int, shards: int,
                 bucket_seconds: float, lateness_s: float = 0.0, input_topic: str = "", input_partition: int = 0,
                 origin: int = 0, group: str = "") -> None:  # fmt: skip
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} is not one of 0..{shards - 1}")
        if bucket_seconds <= 0 or lateness_s < 0:
            raise ValueError("bucket_seconds must be positive and lateness_s non-negative")
        self.model_id, self.model_version, self.reference = model_id, model_version, reference
        self.shard, self.shards, self.bucket_seconds, self.lateness_s = shard, shards, bucket_seconds, lateness_s
        self.input_topic, self.input_partition, self.origin, self.group = input_topic, input_partition, origin, group
        self.seq = 0  # of the next summary
        self.open: dict[int, _Bucket] = {}
        self.closed_until: int | None = None  # every bucket below is published
        self.latest_ts = -math.inf
        self.late = 0

    def state(self) -> State:
        """Everything but the reference (the same profile's, given back to :meth:`from_state`)."""
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "shard": self.shard,
            "shards": self.shards,
            "bucket_seconds": self.bucket_seconds,
            "lateness_s": self.lateness_s,
            "input_topic": self.input_topic,
            "input_partition": self.input_partition,
            "origin": self.origin,
            "group": self.group,
            "seq": self.seq,
            "open": [[bucket, counts.state()] for bucket, counts in sorted(self.open.items())],
            "closed_until": self.closed_until,
            "latest_ts": pack_float(self.latest_ts),
            "late": self.late,
        }

    @classmethod
    def from_state(cls, state: StateReader, reference: ShardedReference) -> ShardSummarizer:
        try:
            summarizer = cls(state.text("model_id"), state.text("model_version"), reference, state.integer("shard"),
                             state.integer("shards", 1), state.number("bucket_seconds"), state.number("lateness_s"),
                             state.text("input_topic"), state.integer("input_partition"), state.integer("origin"),
                             state.text("group"))  # fmt: skip
        except ValueError as exc:
            raise StateError(f"{state.where}: {exc}") from None
        summarizer.seq, summarizer.late = state.integer("seq"), state.integer("late")
        summarizer.closed_until = None if state.raw("closed_until") is None else state.integer("closed_until", None)
        summarizer.latest_ts = state.number("latest_ts")
        summarizer.open = {bucket: _Bucket.from_state(counts) for bucket, counts in _rows(state, "open")}
        return summarizer

    def add(self, batch: ShardBatch) -> list[WindowSummary]:
        """Count ``batch`` and return the summaries of the buckets its event times close."""
        buckets = np.floor(np.asarray(batch.ts, dtype=float) / self.bucket_seconds).astype(np.int64)
        on_time = buckets >= self.closed_until if self.closed_until is not None else np.ones(len(buckets), bool)
        self.late += int(len(buckets) - on_time.sum())
        for bucket in np.unique(buckets[on_time]).tolist():
            self._count(self.open.setdefault(bucket, _Bucket()), batch, np.flatnonzero(buckets == bucket))
        if len(batch.ts):
            self.latest_ts = max(self.latest_ts, float(np.max(batch.ts)))
        return self.close(self.latest_ts - self.lateness_s)

    def _count(self, bucket: _Bucket, batch: ShardBatch, rows: np.ndarray) -> None:
        bucket.events += len(rows)
        for name, cdf in self.reference.numeric.items():
            values = batch.numeric[name][rows] if name in batch.numeric else np.full(len(rows), np.nan)
            finite = np.isfinite(values)
            x, present = values[finite], rows[finite]
            u = cdf.transform(x, 0, 0, partial(_uniforms_of, batch.event_ids, present, name))
            bins = np.bincount(np.minimum((u * BINS).astype(np.int64), BINS - 1), minlength=BINS)
            bucket.add_numeric(name, bins, int(len(rows) - len(x)), float(x.sum()), float(np.dot(x, x)))
        for name in self.reference.categorical:
            column = batch.categorical.get(name)
            seen = [column[i] for i in rows] if column is not None else [None] * len(rows)
            counts = Counter(v for v in seen if v is not None)
            bucket.add_categorical(name, counts, len(seen) - counts.total())

    def close(self, watermark: float) -> list[WindowSummary]:
        """Publish every bucket that ends at or before ``watermark`` (a shard with no events yet publishes the
        empty bucket just before it, so an idle shard does not hold the owner back)."""
        end = math.floor(watermark / self.bucket_seconds) if math.isfinite(watermark) else None
        if end is None:
            return []
        start = self.closed_until if self.closed_until is not None else min(self.open, default=end - 1)
        summaries = []
        for bucket in range(start, end):
            summaries.append(self.open.pop(bucket, _Bucket()).summary(self, bucket))
            self.seq += 1
        self.closed_until = max(start, end)
        return summaries


@dataclass(frozen=True)
class Decision:
    """A verdict of the owner on merged buckets: a CUSUM crossing, or a window test (rejected or not)."""

    bucket: int  # the merged bucket at whose end it was found
    kind: Literal["cusum", "window"]
    feature: str
    detector: str  # the CUSUM's name, or the window test (chi2)
    statistic: float
    threshold: float  # the CUSUM's threshold, or the Benjamini-Hochberg level
    p_value: float | None = None
    values: int = 0  # values the window held (window tests)
    mean: float | None = field(default=None, compare=False)  # from floating-point sums: not compared
    drifted: bool = True  # False: a window test that did not reject (evidence that nothing changed)


class SummaryMerger:
    """The owner of one model: merges the shards' summaries per bucket and decides on merged buckets.

    **Exactly once.** Summaries come in streams (one per shard's summarizer, named by its input topic,
    partition, shard and origin), numbered by ``seq``. Per stream the owner merges ``seq`` 0, 1, 2, ...
    in order, each once: a summary whose ``seq`` it merged already (a replay after a restart or a
    rebalance) is dropped and counted (``duplicates``); one beyond the next expected (a gap) is held,
    not merged, until the summaries before it arrive. A stream first seen at a ``seq`` above 0 is taken
    from there (the owner's state started after it: e.g. a refused checkpoint).

    **Refused and missing summaries.** A summary this owner cannot merge (another shard count, bins or
    features of another build: :meth:`refusal`) is refused by :meth:`add`, which then changes nothing;
    its reader dead-letters it and calls :meth:`skip`: the stream moves past its ``seq`` (counted,
    ``skipped``), so what follows it is not held. A summary that never arrives (unreadable and
    dead-lettered, deleted by retention, lost with a failed batch) leaves a gap that nothing fills: a
    stream gives its gap up (the ``seq`` it lacks counted as ``missing``, what it held merged) when it
    has held summaries for ``idle_s`` of wall-clock without moving (timed from this merger's first sight
    of the gap: after a restore, from the restore), or when it would hold more than :data:`HELD_MAX`.
    So a gap holds decisions no longer than a silent shard does, and a stream holds at most
    :data:`HELD_MAX` summaries. A summary of a ``seq`` given up that arrives after all is dropped as a
    duplicate.

    **Deciding.** Buckets are decided in order once every shard has published that bucket or a later
    one. A shard that has published nothing for ``idle_s`` seconds of wall-clock (``now``; since the
    owner's first summary for a shard never heard of) no longer holds decisions back: buckets are
    decided up to the last one every shard still heard of published (all of them, when every shard is
    idle). A summary of an already decided bucket (from a shard that was idle, or whose worker was
    restarting) is not lost: it is merged into the next undecided bucket and counted
    (``late_summaries``, ``late_events``). Without ``idle_s`` (infinite) the decisions are a function of
    the summaries alone; with it they also depend on when summaries arrive, but every summary is still
    counted exactly once (``merged_events``).

    Parameters
    ----------
    reference
        The model version's reference.
    shards
        How many shards publish summaries.
    arl
        Mean number of values between false alarms of each numeric feature's CUSUM bank.
    window_size
        Events per window test.
    window_level
        Benjamini-Hochberg's rate over a window's features.
    js_threshold
        The Jensen-Shannon effect floor of a categorical window test.
    idle_s
        Wall-clock seconds after which a silent shard no longer holds decisions back.
    """

    def __init__(self, reference: ShardedReference, shards: int, arl: float, window_size: int,
                 window_level: float, js_threshold: float = 0.05, idle_s: float = math.inf) -> None:  # fmt: skip
        self.reference, self.shards, self.idle_s = reference, shards, idle_s
        self.window_size, self.window_level, self.js_threshold = window_size, window_level, js_threshold
        self.thresholds = {name: bank_thresholds(None, arl, n) for name, n in reference.reference_n.items()}
        self.cusums = {name: np.zeros(len(BANK)) for name in reference.numeric}
        self.pending: dict[int, _Bucket] = {}
        self.latest: dict[int, int] = {}  # shard -> the last bucket it published
        self.heard: dict[int, float] = {}  # shard -> wall-clock time of its last summary merged
        self.started: float | None = None  # wall-clock time of the first summary merged
        self.next_bucket: int | None = None
        self.window = _Bucket()
        self.model: tuple[str, str] | None = None  # (model_id, model_version) of the summaries merged
        self.streams: dict[Stream, int] = {}  # the next seq of each stream
        self.held: dict[Stream, dict[int, WindowSummary | None]] = {}  # beyond a gap, by seq (None: skipped)
        self.stalled: dict[Stream, float] = {}  # wall-clock time a stream that holds summaries last moved
        self.duplicates = 0
        self.skipped = 0
        self.missing = 0
        self.late_summaries = 0
        self.late_events = 0
        self.merged_events = 0
        self.decide_s = 0.0  # time spent deciding merged buckets (the rest of ``add`` is merging)

    def refusal(self, summary: WindowSummary) -> str | None:
        """Why this owner cannot merge ``summary`` (None: it can)."""
        if summary.shards != self.shards or not 0 <= summary.shard < self.shards:
            return f"a summary of shard {summary.shard} of {summary.shards}; this owner merges {self.shards}"
        model = (summary.model_id, summary.model_version)
        if self.model is not None and model != self.model:
            return f"a summary of {model}; this owner merges {self.model}"
        unknown = sorted((summary.numeric.keys() - self.reference.numeric.keys())
                         | (summary.categorical.keys() - self.reference.categorical.keys()))  # fmt: skip
        if unknown:
            return f"features the reference lacks: {', '.join(unknown)}"
        bins = {name: len(s.bins) for name, s in summary.numeric.items()}
        return "; ".join(f"{name}: {n} bins, not {BINS}" for name, n in bins.items() if n != BINS) or None

    def add(self, summary: WindowSummary, now: float = 0.0) -> list[Decision]:
        """Take one summary (merged, dropped as a duplicate or held behind a gap); return the decisions on
        the buckets that are complete at wall-clock time ``now``. One it cannot merge raises ValueError
        (:meth:`refusal`) and changes nothing."""
        if (refused := self.refusal(summary)) is not None:
            raise ValueError(refused)
        self.model = (summary.model_id, summary.model_version)
        if not self._take(summary, summary, now):
            self.duplicates += 1
        return self.decide(now)

    def skip(self, summary: WindowSummary, now: float = 0.0) -> None:
        """Let ``summary``'s stream move past its ``seq`` without merging it (it was refused or dead-lettered):
        what the stream holds behind it is merged; the decisions this completes come with the next
        :meth:`decide`. A ``seq`` merged or skipped already: nothing changes."""
        if self._take(summary, None, now):
            self.skipped += 1

    def _take(self, summary: WindowSummary, merged: WindowSummary | None, now: float) -> bool:
        """Put ``merged`` (None: nothing) at ``summary``'s place in its stream; False: that place is taken."""
        stream = stream_of(summary)
        self.streams.setdefault(stream, summary.seq)
        held = self.held.setdefault(stream, {})
        taken = summary.seq < self.streams[stream] or summary.seq in held
        if not taken:
            held[summary.seq] = merged
        self._advance(stream, now)
        if len(self.held.get(stream, ())) > HELD_MAX:
            self._give_up_gap(stream, now)
        return not taken

    def _advance(self, stream: Stream, now: float) -> None:
        """Merge what follows the stream's next expected ``seq`` without a gap."""
        held, expected = self.held[stream], self.streams[stream]
        while expected in held:
            if (summary := held.pop(expected)) is not None:
                self._merge(summary, now)
            expected += 1
        if not held:
            del self.held[stream]
            self.stalled.pop(stream, None)
        elif expected != self.streams[stream] or stream not in self.stalled:
            self.stalled[stream] = now
        self.streams[stream] = expected

    def _give_up_gap(self, stream: Stream, now: float) -> None:
        """The stream's gap will not fill: go on from the first ``seq`` it holds."""
        first = min(self.held[stream])
        self.missing += first - self.streams[stream]
        self.streams[stream] = first
        self._advance(stream, now)

    def _merge(self, summary: WindowSummary, now: float) -> None:
        self.started = now if self.started is None else self.started
        self.latest[summary.shard] = max(summary.bucket, self.latest.get(summary.shard, summary.bucket))
        self.heard[summary.shard] = now
        self.merged_events += summary.events
        index = summary.bucket
        if self.next_bucket is not None and index < self.next_bucket:  # decided without it: into the next one
            self.late_summaries += 1
            self.late_events += summary.events
            index = self.next_bucket
        _merge(self.pending.setdefault(index, _Bucket()), summary)

    def decide(self, now: float) -> list[Decision]:
        """Decide the buckets complete at wall-clock time ``now`` (call it now and then: a shard turns idle
        while nothing arrives)."""
        for stream in list(self.held):  # a gap that held its stream for idle_s is given up
            if now - self.stalled.setdefault(stream, now) > self.idle_s:
                self._give_up_gap(stream, now)
        complete = self._complete(now)
        if complete is None:
            return []
        if self.next_bucket is None:
            self.next_bucket = min(self.pending)
        decisions: list[Decision] = []
        started = time.perf_counter()
        while self.next_bucket <= complete:
            decisions += self._decide(self.next_bucket, self.pending.pop(self.next_bucket, _Bucket()))
            self.next_bucket += 1
        self.decide_s += time.perf_counter() - started
        return decisions

    def _complete(self, now: float) -> int | None:
        """The last bucket every shard not idle has published (None: a shard not idle published none yet)."""
        if self.started is None:
            return None
        awaited = [s for s in range(self.shards) if now - self.heard.get(s, self.started) <= self.idle_s]
        if any(s not in self.latest for s in awaited):
            return None
        return min(self.latest[s] for s in awaited) if awaited else max(self.latest.values())

    def state(self) -> State:
        """Everything but the reference and the parameters (given back to :meth:`from_state`)."""
        held = [(stream, seq, s) for stream, by_seq in sorted(self.held.items()) for seq, s in sorted(by_seq.items())]
        return {
            "shards": self.shards,
            "model": None if self.model is None else list(self.model),
            "cusums": {name: [pack_float(v) for v in paths.tolist()] for name, paths in self.cusums.items()},
            "pending": [[index, bucket.state()] for index, bucket in sorted(self.pending.items())],
            "window": self.window.state(),
            "latest": [[shard, index] for shard, index in sorted(self.latest.items())],
            "heard": [[shard, t] for shard, t in sorted(self.heard.items())],
            "started": self.started,
            "next_bucket": self.next_bucket,
            "streams": [[*stream, seq] for stream, seq in sorted(self.streams.items())],
            "held": [s.model_dump(mode="json", by_alias=True) for _, _, s in held if s is not None],
            "skipped_seqs": [[*stream, seq] for stream, seq, s in held if s is None],
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "missing": self.missing,
            "late_summaries": self.late_summaries,
            "late_events": self.late_events,
            "merged_events": self.merged_events,
        }

    def restore(self, state: StateReader) -> None:
        """Take over a state of :meth:`state` (of a merger with the same reference and parameters)."""
        if state.integer("shards", 1) != self.shards:
            raise StateError(f"{state.where}: a state of {state.integer('shards')} shards; this owner merges "
                             f"{self.shards}")  # fmt: skip
        model = state.texts("model") if state.raw("model") is not None else None
        self.model = (model[0], model[1]) if model is not None and len(model) == 2 else None
        cusums = state.child("cusums")
        self.cusums = {name: np.array(cusums.numbers(name)) for name in self.reference.numeric}
        if any(len(paths) != len(BANK) for paths in self.cusums.values()):
            raise StateError(f"{state.where}.cusums: not one path per CUSUM of the bank")
        self.pending = {index: _Bucket.from_state(bucket) for index, bucket in _rows(state, "pending")}
        self.window = _Bucket.from_state(state.child("window"))
        self.latest = {shard: index for shard, index in _table(state, "latest", (int, int))}
        self.heard = {shard: float(t) for shard, t in _table(state, "heard", (int, float))}
        self.started = state.optional_number("started")
        self.next_bucket = None if state.raw("next_bucket") is None else state.integer("next_bucket", None)
        self.streams = {
            (topic, partition, shard, origin): seq
            for topic, partition, shard, origin, seq in _table(state, "streams", (str, int, int, int, int))
        }
        self.held = {}
        for document in state.items("held"):
            try:
                summary = WindowSummary.model_validate(document)
            except ValueError as exc:
                raise StateError(f"{state.where}.held: not a window summary ({exc})") from None
            self.held.setdefault(stream_of(summary), {})[summary.seq] = summary
        self.stalled = {}
        if "skipped" in state.data:  # (not in the states of earlier versions)
            for topic, partition, shard, origin, seq in _table(state, "skipped_seqs", (str, int, int, int, int)):
                self.held.setdefault((topic, partition, shard, origin), {})[seq] = None
            self.skipped, self.missing = state.integer("skipped"), state.integer("missing")
        self.duplicates, self.late_summaries = state.integer("duplicates"), state.integer("late_summaries")
        self.late_events, self.merged_events = state.integer("late_events"), state.integer("merged_events")

    def _decide(self, index: int, bucket: _Bucket) -> list[Decision]:
        decisions = []
        for name, bins in bucket.bins.items():
            paths = np.maximum(0.0, self.cusums[name] + BIN_LLR @ bins)
            crossed = np.flatnonzero(paths > self.thresholds[name])
            if len(crossed):
                worst = int(crossed[np.argmax(paths[crossed] - self.thresholds[name][crossed])])
                decisions.append(Decision(index, "cusum", name, BANK[worst].name, float(paths[worst]),
                                          float(self.thresholds[name][worst])))  # fmt: skip
                paths = np.zeros(len(BANK))
            self.cusums[name] = paths
            self.window.add_numeric(name, bins, bucket.missing[name], *bucket.sums[name])
        for name, counts in bucket.categories.items():
            self.window.add_categorical(name, counts, bucket.missing[name])
        self.window.events += bucket.events
        if self.window.events >= self.window_size:
            decisions += self._window_tests(index)
            self.window = _Bucket()
        return decisions

    def _window_tests(self, index: int) -> list[Decision]:
        tests: list[tuple[str, float, float, int, float | None]] = []  # feature, chi2, p-value, values, mean
        effects: list[bool] = []
        for name, bins in self.window.bins.items():
            n = int(bins.sum())
            expected = np.full(BINS, self.reference.reference_n[name] / BINS)
            chi2, p_value, _ = category_test(expected, bins.astype(float))
            tests.append((name, chi2, p_value, n, self.window.sums[name][0] / n if n else None))
            effects.append(True)
        for name, seen in self.window.categories.items():
            reference = self.reference.categorical[name]
            counts = np.array([seen[c] for c in reference] + [seen.total() - sum(seen[c] for c in reference)], float)
            chi2, p_value, distance = category_test(np.array([*reference.values(), 0.0]), counts)
            tests.append((name, chi2, p_value, int(counts.sum()), None))
            effects.append(distance >= self.js_threshold)
        rejected = benjamini_hochberg(np.array([p for _, _, p, _, _ in tests]), self.window_level)
        return [
            Decision(index, "window", name, "chi2", chi2, self.window_level, p_value, n, mean, reject and effect)
            for (name, chi2, p_value, n, mean), reject, effect in zip(tests, rejected, effects, strict=True)
        ]


#: A stream of summaries: (input topic, input partition, shard, origin).
Stream = tuple[str, int, int, int]


def stream_of(summary: WindowSummary) -> Stream:
    return summary.input_topic, summary.input_partition, summary.shard, summary.input_origin


def _table(state: StateReader, key: str, types: tuple[type, ...]) -> list[list[Any]]:
    """The rows of a table of state, each checked to be a list of values of ``types`` (a float may be an int)."""
    rows = state.items(key)
    for i, row in enumerate(rows):
        if not (
            isinstance(row, list)
            and len(row) == len(types)
            and all(type(v) is t or (t is float and type(v) is int) for v, t in zip(row, types, strict=True))
        ):
            raise StateError(f"{state.where}.{key}[{i}]: expected a row of {', '.join(t.__name__ for t in types)}")
    return cast("list[list[Any]]", rows)


def _rows(state: StateReader, key: str) -> list[tuple[int, StateReader]]:
    """The rows ``[integer, state]`` of a table of state."""
    return [(row[0], StateReader(row[1], f"{state.where}.{key}")) for row in _table(state, key, (int, dict))]


def _merge(bucket: _Bucket, summary: WindowSummary) -> None:
    bucket.events += summary.events
    for name, numeric in summary.numeric.items():
        bucket.add_numeric(name, np.array(numeric.bins, dtype=np.int64), numeric.missing, numeric.sum,
                           numeric.sum_squares)  # fmt: skip
    for name, categorical in summary.categorical.items():
        bucket.add_categorical(name, categorical.counts, categorical.missing)
