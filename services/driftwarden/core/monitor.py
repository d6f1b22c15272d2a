"""The monitor's core: events and labels in, alerts and retrain commands out. Pure and synchronous.

The Faust service is a thin adapter around :class:`Monitor`. Per (model_id, model_version) a
:class:`ModelMonitor` collects the version's reference (or loads a profile), then runs

* streaming rank-CUSUM detectors on every numeric feature, on every categorical feature's frequency
  ranks (a category-mix change), on each embedding's distance to its reference centroid and on the
  prediction signal (fast path, thresholds from the false-alarm budget
  ``false_alarms_per_million`` less the window tests' share);
* every ``window_size`` events, the window detectors (distribution tests, multivariate, data
  quality, estimated accuracy, latency/cost), with Benjamini–Hochberg across the window's p-values
  at the window tests' share of the budget (``ModelMonitorConfig.window_level``);
* on joined labels, the performance monitor (window tests, error-rate CUSUMs, segments);

and reports findings to its :class:`~driftwarden.core.alerting.AlertBook` and retrain policy.

>>> from driftwarden_load.scenarios import Scenario, generate
>>> from driftwarden.core.events import PredictionEvent
>>> scenario = Scenario(name="abrupt-shift", n_events=12_000, onset=7_000, drift_features=("num_03",))
>>> monitor = Monitor()
>>> alerts = []
>>> for chunk in generate(scenario):
...     events = [PredictionEvent.model_validate(e) for e in chunk.prediction_events()]
...     alerts += monitor.observe(events, now=0.0).alerts
>>> sorted({(a.kind, a.subject) for a in alerts if a.state == "firing"})
[('data_drift', 'num_03'), ('multivariate_drift', 'numeric_features')]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, groupby, repeat
from operator import attrgetter
from typing import TypeVar, cast

import numpy as np
import orjson

from driftwarden.core.alerting import AlertBook, Finding, Severity, passes_with_margin
from driftwarden.core.changes import TOP_MOVERS, Change, rank_mix_change, streaming_change, window_change
from driftwarden.core.columnar import DecodedColumns, PredictionColumns, decode_columns
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig, RetrainPolicyConfig, model_config_from_state
from driftwarden.core.detectors import (
    DETECTOR_CLASSES,
    RankCusumDetector,
    StatisticKey,
    WindowDetector,
    decide,
    window_detectors,
)
from driftwarden.core.detectors.sequential import frequency_ranks
from driftwarden.core.detectors.streaming import shift_in_sigma
from driftwarden.core.event_time import RecentIds, Watermark, time_problem, time_problems
from driftwarden.core.events import (
    Alert,
    AlertKind,
    KeyedEvent,
    LabelEvent,
    MonitorStatusV1,
    PredictionEvent,
    RetrainCommand,
    Scalar,
)
from driftwarden.core.joins import Joined, LabelJoiner
from driftwarden.core.performance import PerformanceMonitor
from driftwarden.core.profile import (
    CategoricalProfile,
    Columns,
    FeatureSchema,
    ReferenceProfile,
    build_profile,
    profile_of,
    schema_of,
    to_columns,
    top_scores,
)
from driftwarden.core.retrain_policy import PendingRetrain, RetrainPolicy
from driftwarden.core.state import JsonValue, State, StateError, StateReader, decode, encode, pack_optional_float

#: The streaming detector of the prediction signal (a name no feature can have).
SIGNAL = "\0signal"
#: The streaming detector of an embedding's distances to its reference centroid: this, then its name.
DISTANCE = "\0distance:"
#: The streaming detector of a categorical feature's frequency ranks (its category mix): this, then its name.
CATEGORIES = "\0categories:"
#: A categorical feature whose reference leaves more than this share of values to unseen categories (Good and
#: Turing's estimate) gets no rank CUSUMs (:func:`_category_rankings`): 2,000 Zipf levels in 5,000 values (~17 %)
#: gave them 12 times their false-alarm budget, 300 levels (~0.5 %) an eighth of it. Many levels with a heavy tail
#: break the budget well below 5 % (the rare categories' reference shares are biased up: a category seen once is
#: rarer than one in the sample, on average): 10,000 Zipf levels, exponent 1.6, 2.5-4 x the budget at 3-3.5 %
#: unseen, 0.6-1.75 x at 2 %, 0.7-1.13 x at 1.5 %; at ~1 % (exponents 1.8 and 2) 0.08-0.6 x (6 references each,
#: 600,000 values; docs/detectors.md).
MAX_UNSEEN_SHARE = 0.01
#: :meth:`Monitor.quick`'s bound: a call with more predictions and labels than this may take longer than a moment.
QUICK_EVENTS = 1_000
#: Alert kinds that stop a growing reference (their data must not become the reference).
DRIFT_KINDS = frozenset({"data_drift", "prediction_drift", "multivariate_drift"})
#: Window statistics kept for metrics and the status topic: each of these a detector's evidence holds.
WINDOW_STATISTICS = (
    "wasserstein_normed",
    "psi",
    "p_value",
    "js_distance",
    "mahalanobis_distance",
    "estimated_accuracy",
    "rate",
    "current",
)
STATE_FORMAT = "driftwarden.monitor-state"
#: 13: rank-CUSUM streaming detectors beside an end atom of at least 3 % run the atoms' share CUSUMs (6 an atom, 3
#: more for both ends), and the continuous part lies between atoms of at least 3 % (10 % before); those of a reference
#: with several modes run 6 CUSUMs of its own density shifted and blurred.
#: 12: a reference that came as columnar batches is written as one ``prediction-columns.v1`` document
#: (``reference_columns``), not as events.
#: 11: rank-CUSUM streaming detectors run 33 CUSUMs (the rank tilts ±0.44, ±0.87 added), 43 beside an end atom.
#: 10: rank-CUSUM streaming detectors run 29 CUSUMs (location ±0.15σ and a small component beyond either side
#: added), 39 beside an end atom.
#: 9: rank-CUSUM streaming detectors on categorical features' frequency ranks (``masses`` in their params).
#: 8: the performance monitor's error-rate CUSUMs (``cusum``, ``improvement``, ``retake``: Bernoulli
#: CUSUMs, the default error detector; ADWIN before). 7: rank-CUSUM streaming detectors run 25 CUSUMs
#: (the end-of-scale ones added), 33 where the reference has an end atom (location and spread within
#: the continuous part). 6: the label joiner's pending
#: predictions, and the performance window's joined ones, keep no features (the trainer joins its own
#: examples); pending predictions are packed records. 5: an embedding's distance-to-centroid alarm is
#: keyed in the alert book by the embedding's name (``<embedding>/centroid_distance`` before: an alert no
#: window verdict could resolve); 4: embedding features (their profiles, window columns and detectors);
#: 3: event-time watermark, recent event ids, duplicate counts, the alert book's settle streaks (2) and
#: rank-CUSUM streaming detectors (ADWIN before).
STATE_VERSION = 13
ProfileLoader = Callable[[str, str], ReferenceProfile | None]
#: Predictions of one model version in stream order: events, or a columnar batch (the fast path).
Predictions = Sequence[PredictionEvent] | PredictionColumns


@dataclass(frozen=True)
class Rejected:
    """A prediction refused before the detectors (the service dead-letters it with ``reason``)."""

    event: PredictionEvent
    reason: str
    row: int | None = field(default=None, compare=False)  # its row in the columnar batch it came in


@dataclass
class Outputs:
    alerts: list[Alert] = field(default_factory=list)
    commands: list[RetrainCommand] = field(default_factory=list)
    #: Predictions fed to the detectors, by (model_id, model_version): duplicates not included.
    processed: dict[tuple[str, str], int] = field(default_factory=dict)

    def __iadd__(self, other: Outputs) -> Outputs:
        self.alerts += other.alerts
        self.commands += other.commands
        for key, n in other.processed.items():
            self.processed[key] = self.processed.get(key, 0) + n
        return self


def drift_severity(config: ModelMonitorConfig, evidence: dict[str, Scalar]) -> Severity:
    """A drift finding's severity: ``critical`` when an effect size reaches its critical floor (a streaming
    alarm's normal-score shift; a window's PSI or Wasserstein distance; a category mix's Jensen-Shannon
    distance, a window's or a categorical rank-CUSUM alarm's)."""
    floors = {
        "psi": config.critical_psi,
        "wasserstein_normed": config.critical_wasserstein,
        "js_distance": config.critical_js,
    }
    big = any(isinstance(v := evidence.get(key), float) and v >= floor for key, floor in floors.items())
    return "critical" if big or shift_in_sigma(evidence) >= config.critical_shift_sigma else "warning"


class ModelMonitor:
    """Detectors, alerts and retrain policy of one (model_id, model_version)."""

    def __init__(
        self,
        model_id: str,
        model_version: str,
        config: ModelMonitorConfig,
        profile: ReferenceProfile | None = None,
    ) -> None:
        self.model_id = model_id
        self.model_version = model_version
        self.config = config
        self.profile: ReferenceProfile | None = None
        #: The reference being collected or grown, in stream order: event lists and columnar batches as they came.
        self.reference_parts: list[Predictions] = []
        #: Each reference part with its events as written in a state (a checkpoint every few seconds writes a
        #: part once; the parts stay as they came, so a columnar reference is profiled without making events).
        self._reference_json: list[tuple[Predictions, bytes]] = []
        self.streaming: dict[str, RankCusumDetector] = {}
        #: Per categorical feature, its reference's categories by frequency rank (their codes for its detector).
        self.category_codes: dict[str, dict[str, int]] = {}
        self.window_detectors: list[WindowDetector] = []
        self.pending: list[Columns] = []
        self.pending_events = 0
        self.windows = 0
        self.book = AlertBook(
            model_id, model_version, config.resolve_after_windows, config.cooldown_s, config.repeat_tolerance
        )
        self.policy = RetrainPolicy(config.retrain)
        self.performance: PerformanceMonitor | None = None
        self.latest_window: dict[StatisticKey, float] = {}
        self._schema_of: tuple[ReferenceProfile | None, FeatureSchema | None, frozenset[str]] = (
            None,
            None,
            frozenset(),
        )
        if profile is not None:
            self._use_profile(profile)

    # -- predictions -----------------------------------------------------------------------------

    def observe(self, events: Predictions, now: float) -> Outputs:
        """Predictions of this version in stream order (events or a columnar batch); what they raise."""
        fired: list[Alert] = []
        start = 0
        while start < len(events):
            if self.profile is None:  # collect the first reference
                stop = start + self._first_reference_size() - self._reference_collected()
                self.reference_parts.append(events[start:stop])
                if self._reference_collected() >= self._first_reference_size():
                    self._build_reference()
                start = stop
                continue
            # While the reference grows, cut the batch where it grows (results must not depend on batching).
            growing = bool(self.reference_parts)
            stop = start + self._next_reference_size() - self._reference_collected() if growing else len(events)
            run = events[start:stop]
            found = self._detect(run, now)
            fired += found
            if growing:
                drifted = any(a.kind in DRIFT_KINDS for a in found) or self._drift_open()
                self._grow_reference(run, drifted=drifted)
            start = stop
        if len(events) and self.profile is not None:
            last_ts = events.ts[-1] if isinstance(events, PredictionColumns) else events[-1].ts
            self.policy.evaluate(self.book, fired, float(last_ts))
        return Outputs(fired)

    def _detect(self, events: Predictions, now: float) -> list[Alert]:
        schema, known = self._schema()
        columns = events.columns(schema) if isinstance(events, PredictionColumns) else to_columns(events, schema)
        fired: list[Alert] = self._unprofiled(events, schema, known, now)
        # Walk the batch in stream order, one window at a time, so that results do not depend on how
        # events were batched (a replay after a restart comes in much larger batches). Before the
        # first full window, the window tests also look at the growing first window (early looks).
        start = 0
        while start < len(columns):
            stop = min(len(columns), start + self._next_window_cut() - self.pending_events)
            segment = columns.slice(start, stop)
            fired += self._stream(segment, now)
            self.pending.append(segment)
            self.pending_events += len(segment)
            if self.pending_events == self.config.window_size:
                window = Columns.concat(self.pending) if len(self.pending) > 1 else self.pending[0]
                self.pending, self.pending_events = [], 0
                fired += self._evaluate_window(window, now)
            elif self.windows == 0 and self.pending_events in self.config.early_looks_at:
                fired += self._evaluate_window(Columns.concat(self.pending), now, early=True)
            start = stop
        return fired

    def _unprofiled(self, events: Predictions, schema: FeatureSchema, known: frozenset[str], now: float) -> list[Alert]:
        """A data-quality alert for each feature the events carry that the reference does not have (and the config
        does not ignore: ``known``): nothing watches it. A profile built from a training set whose columns are named
        otherwise than the events' features, or a feature a model server added after the first events, would
        otherwise go unwatched without a word. Looked for in a columnar batch's features, and in the first and last
        event of a run of events (a feature every event carries is in those; the row path pays for two set checks,
        not a scan). Once open, the alert stays open (not a repeat each batch) until the model version changes."""
        if isinstance(events, PredictionColumns):
            carried = [name for name in events.features if name not in known]
            event_id, ts = events.event_ids[0], float(events.ts[0])
        elif len(events) and not (known.issuperset(events[0].features) and known.issuperset(events[-1].features)):
            carried = [name for name in dict.fromkeys([*events[0].features, *events[-1].features]) if name not in known]
            event_id, ts = events[0].event_id, events[0].ts
        else:
            return []
        assert self.profile is not None
        evidence: dict[str, Scalar] = {
            "check": "unprofiled",
            "reference_size": self.profile.n_events,
            "reference_features": len(schema.numeric) + len(schema.categorical) + len(schema.embedding),
        }
        fired = []
        for name in carried:
            if ("data_quality", f"{name}/unprofiled") in self.book.open:
                continue
            summary = (f"{name} is in the events but not in the reference of {self.model_id} v{self.model_version}: "
                       "nothing watches it (add it to the profile, or to the config's ignore_features)")  # fmt: skip
            finding = Finding("data_quality", f"{name}/unprofiled", "unprofiled", True, evidence, summary)
            alert = self.book.report(finding, event_id, ts, now)
            fired += [alert] if alert is not None else []
        return fired

    def _schema(self) -> tuple[FeatureSchema, frozenset[str]]:
        """The reference's columns, and its features with the config's ignored ones (made once per reference)."""
        assert self.profile is not None
        profile, schema, known = self._schema_of
        if profile is not self.profile or schema is None:
            schema = schema_of(self.profile)
            known = frozenset([*schema.numeric, *schema.categorical, *schema.embedding, *self.config.ignore_features])
            self._schema_of = (self.profile, schema, known)
        return schema, known

    def _next_window_cut(self) -> int:
        """Pending events at which the next test runs (an early look or the full window)."""
        looks = [n for n in self.config.early_looks_at if n > self.pending_events] if self.windows == 0 else []
        return looks[0] if looks else self.config.window_size

    # -- the reference ---------------------------------------------------------------------------

    def _first_reference_size(self) -> int:
        return min(self.config.min_reference_size, self.config.reference_size)

    def _next_reference_size(self) -> int:
        """The reference doubles, up to ``reference_size``, while no drift alert is open."""
        assert self.profile is not None
        return min(2 * self.profile.n_events, self.config.reference_size)

    def _drift_open(self) -> bool:
        return any(kind in DRIFT_KINDS for kind, _ in self.book.open)

    @property
    def reference_events(self) -> list[PredictionEvent]:
        """The reference collected or growing, as events."""
        return [event for part in self.reference_parts for event in _as_events(part)]

    def _reference_collected(self) -> int:
        return sum(len(part) for part in self.reference_parts)

    def _grow_reference(self, events: Predictions, drifted: bool) -> None:
        """Events tested clean join the growing reference; a drift alert freezes it where it is."""
        if drifted:
            self.reference_parts = []
            return
        self.reference_parts.append(events)
        if self._reference_collected() >= self._next_reference_size():
            self._build_reference()

    def _build_reference(self) -> None:
        """The profile of the reference events; they are kept (to grow on) until ``reference_size``."""
        declared: dict[str, str] = dict(self.config.features)
        if self.profile is not None:  # growing: the same features, so pending windows stay comparable
            declared |= {name: "numeric" for name in self.profile.numeric}
            declared |= {name: "categorical" for name in self.profile.categorical}
            declared |= {name: "embedding" for name in self.profile.embedding}
        ignored, parts = self.config.ignore_features, self.reference_parts
        batches = [part for part in parts if isinstance(part, PredictionColumns)]
        if len(batches) == len(parts) and _same_columns(batches):  # columnar batches: no events made
            batch = PredictionColumns.concat(batches)
            schema = batch.schema(declared, ignored)
            profile = profile_of(self.model_id, self.model_version, schema, batch.columns(schema))
        else:
            profile = build_profile(self.model_id, self.model_version, self.reference_events, declared, ignored)
        if profile.n_events >= self.config.reference_size:
            self.reference_parts = []
        self._use_profile(profile)

    def _use_profile(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        streams = (
            dict(profile.numeric)
            | {DISTANCE + name: p.distance for name, p in profile.embedding.items()}
            | ({SIGNAL: profile.signal} if profile.signal is not None else {})
        )
        rankings = _category_rankings(profile)
        self.category_codes = {name: codes for name, (codes, _) in rankings.items()}
        # the model's budget less the window tests' share, over every streaming detector
        arl = self.config.streaming_arl(len(streams) + len(rankings))
        self.streaming = {
            name: RankCusumDetector(p.quantiles, max(p.n, 1), arl, seed)
            for seed, (name, p) in enumerate(streams.items())
        }
        for seed, (name, (_, counts)) in enumerate(rankings.items(), start=len(streams)):
            self.streaming[CATEGORIES + name] = category_detector(counts, arl, seed)
        self.window_detectors = window_detectors(profile, self.config)
        if self.performance is None:  # (a growing reference keeps the labels' history)
            self.performance = PerformanceMonitor(profile.task, profile.positive_class, self.config)

    def _feed_streaming(self, columns: Columns, on_drift: Callable[[str, RankCusumDetector, int], None]) -> None:
        assert self.profile is not None
        numeric_names, embeddings = list(self.profile.numeric), list(self.profile.embedding)
        categorical = list(self.profile.categorical)
        for name, detector in self.streaming.items():
            if name == SIGNAL:
                values = columns.signal
            elif name.startswith(CATEGORIES):
                feature = name.removeprefix(CATEGORIES)
                values = category_ranks(columns.categorical[categorical.index(feature)], self.category_codes[feature])
            elif name.startswith(DISTANCE):
                feature = name.removeprefix(DISTANCE)
                values = self.profile.embedding[feature].distances(columns.embeddings[embeddings.index(feature)])
            else:
                values = columns.numeric[:, numeric_names.index(name)]
            detector.update_many(values, partial(on_drift, name, detector))

    def _stream_subject(self, name: str) -> tuple[str, str]:
        """The alert subject of a streaming detector, and what its values are (a summary's first words).

        An embedding's distance to its centroid reports under the embedding's name, as a numeric
        feature's CUSUM does under the feature's: one open data-drift alert per feature, whichever of
        its detectors fires first (the others are counted, not re-sent), so a feature counts once
        toward ``retrain.min_drifted_features``, and its window test's settled verdicts resolve it.
        """
        assert self.profile is not None
        if name == SIGNAL:
            subject = "score" if self.profile.task == "classification" else "prediction"
            return subject, subject
        if name.startswith(DISTANCE):
            feature = name.removeprefix(DISTANCE)
            return feature, f"{feature} distance to the reference centroid:"
        if name.startswith(CATEGORIES):
            return name.removeprefix(CATEGORIES), name.removeprefix(CATEGORIES)
        return name, name

    def _stream(self, columns: Columns, now: float) -> list[Alert]:
        fired: list[Alert] = []

        def on_drift(name: str, detector: RankCusumDetector, i: int) -> None:
            assert self.profile is not None
            kind: AlertKind = "prediction_drift" if name == SIGNAL else "data_drift"
            subject, watched = self._stream_subject(name)
            if self.book.counted_while_open(kind, subject):  # a persisting change: nothing to send
                return
            if name.startswith(CATEGORIES):  # on the categories' scale: their shares since the change point
                codes = self.category_codes[subject]
                column = columns.categorical[list(self.profile.categorical).index(subject)]
                change, evidence = category_alarm(self.profile.categorical[subject], codes, detector, column[: i + 1])
                since, shared = evidence["values_since_change"], evidence["recent_values"]
                of = f" (shares of the last {shared})" if shared != since else ""
                summary = f"{watched} category mix changed over the last {since} values{of} on "
                summary += f"{self.model_id} v{self.model_version}"
            else:
                evidence = detector.evidence()
                change = streaming_change(evidence)
                summary = f"{watched} {detector.summary(self.model_id, self.model_version)}"
            evidence |= {"reference_size": self.profile.n_events} | change.evidence()
            severity = drift_severity(self.config, evidence)
            finding = Finding(kind, subject, detector.name, True, evidence, f"{summary}; {change.text}", severity)
            alert = self.book.report(finding, columns.event_ids[i], float(columns.ts[i]), now)
            if alert is not None:
                fired.append(alert)

        self._feed_streaming(columns, on_drift)
        return fired

    def _evaluate_window(self, window: Columns, now: float, early: bool = False) -> list[Alert]:
        """Test a window; an early look (part of the first window) reports drift only, never a clean verdict."""
        assert self.profile is not None
        self.windows += 0 if early else 1
        tested = [d for d in self.window_detectors if d.update(window)]
        decide(tested, self.config.window_level)
        trigger, event_ts = window.event_ids[-1], float(window.ts[-1])
        fired = []
        for detector in tested:
            drifted = detector.drift_detected
            if early and not drifted:
                continue
            evidence = detector.evidence() | {
                "window": self.windows,
                "window_start_ts": float(window.ts[0]),
                "level": self.config.window_level if detector.p_value is not None else None,
                "reference_size": self.profile.n_events,
            }
            self._remember_window_statistic(detector, evidence)
            if drifted and self.book.counted_while_open(detector.kind, detector.subject):
                continue  # a change that persists: what changed is described when it fires
            summary = ""
            if drifted:
                change = window_change(detector, window, self.profile)
                evidence |= change.evidence()
                summary = detector.summary(self.model_id, self.model_version)
                summary += f"; {change.text}" if change.text else ""
            settled = not drifted and not detector.effect_exceeded
            finding = Finding(
                detector.kind,
                detector.subject,
                detector.name,
                drifted,
                evidence,
                summary,
                drift_severity(self.config, evidence),
                settled and passes_with_margin(evidence, self.config.resolve_p_value),
            )
            alert = self.book.report(finding, trigger, event_ts, now)
            if alert is not None:
                fired.append(alert)
        return fired

    def _remember_window_statistic(self, detector: WindowDetector, evidence: dict[str, Scalar]) -> None:
        for key in WINDOW_STATISTICS:
            value = evidence.get(key)
            if isinstance(value, float) and math.isfinite(value):
                self.latest_window[StatisticKey(detector.kind, detector.subject, key)] = value

    # -- labels ----------------------------------------------------------------------------------

    def observe_joined(self, joined: list[Joined], now: float) -> Outputs:
        if self.performance is None or not joined:
            return Outputs()
        fired = []
        for finding, item in self.performance.update(joined):
            finding.settled = not finding.drifted and passes_with_margin(finding.evidence, self.config.resolve_p_value)
            alert = self.book.report(finding, item.event_id, item.ts, now)
            if alert is not None:
                fired.append(alert)
        self.policy.evaluate(self.book, fired, max(j.ts for j in joined))
        command = self.policy.on_labels([j.ts for j in joined], now)
        return Outputs(fired, [command] if command else [])

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> State:
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "config": self.config.model_dump(mode="json"),
            "profile": None if self.profile is None else self.profile.state(),
            **self._reference_state(),
            "streaming": {name: d.state() for name, d in self.streaming.items()},
            "window_detectors": [{"class": type(d).__name__, "state": d.state()} for d in self.window_detectors],
            "pending": [columns.state() for columns in self.pending],
            "windows": self.windows,
            "book": self.book.state(),
            "policy": _policy_state(self.policy),
            "performance": None if self.performance is None else self.performance.state(),
            "latest_window": [[*key, value] for key, value in self.latest_window.items()],
        }

    def _reference_state(self) -> State:
        """The reference collected or growing: columnar batches of the same columns as one
        ``prediction-columns.v1`` document (no events made), anything else as a JSON list of events
        (each part made and written once)."""
        parts = self.reference_parts
        batches = [part for part in parts if isinstance(part, PredictionColumns)]
        if parts and len(batches) == len(parts) and _same_columns(batches):
            self.reference_parts = [batch := PredictionColumns.concat(batches)]  # (joined once: later parts append)
            return {"reference_events": [], "reference_columns": batch.to_json().decode()}
        written = {id(part): raw for part, raw in self._reference_json}
        self._reference_json = [(part, written[id(part)] if id(part) in written else _events_json(part))
                                for part in parts]  # fmt: skip
        events = orjson.Fragment(b"[" + b",".join(raw for _, raw in self._reference_json if raw) + b"]")
        return {"reference_events": events, "reference_columns": None}

    @classmethod
    def from_state(cls, state: StateReader) -> ModelMonitor:
        monitor = cls(state.text("model_id"), state.text("model_version"), model_config_from_state(state, "config"))
        profile = state.optional_child("profile")
        monitor.profile = None if profile is None else ReferenceProfile.from_state(profile)
        try:
            events = [PredictionEvent.model_validate(e) for e in state.items("reference_events")]
        except ValueError as exc:
            raise StateError(f"{state.where}.reference_events: not valid events ({exc})") from None
        columns = _reference_columns(state)
        monitor.reference_parts = [events] if events else [columns] if columns is not None else []
        monitor.streaming = {k: RankCusumDetector.from_state(v) for k, v in state.mapping("streaming").items()}
        # (the categorical features whose rank CUSUMs the checkpoint has: a gate changed since keeps running ones)
        monitor.category_codes = {name: category_ranking(p)[0] for name, p in
                                  ({} if monitor.profile is None else monitor.profile.categorical).items()
                                  if CATEGORIES + name in monitor.streaming}  # fmt: skip
        monitor.window_detectors = [_window_detector(item) for item in state.children("window_detectors")]
        monitor.pending = [Columns.from_state(item) for item in state.children("pending")]
        monitor.pending_events = sum(len(columns) for columns in monitor.pending)
        monitor.windows = state.integer("windows")
        monitor.book = AlertBook.from_state(state.child("book"))
        monitor.policy = _policy_from_state(state.child("policy"))
        performance = state.optional_child("performance")
        monitor.performance = None if performance is None else PerformanceMonitor.from_state(performance)
        monitor.latest_window = _statistics(state)
        return monitor


def _reference_columns(state: StateReader) -> PredictionColumns | None:
    """A reference written as a ``prediction-columns.v1`` document, validated as the worker validates one."""
    text = state.optional_text("reference_columns")
    if text is None:
        return None
    raw = text.encode()
    try:
        decoded = decode_columns(orjson.loads(raw), raw)
    except orjson.JSONDecodeError:
        decoded = DecodedColumns(None, [(None, "not JSON", raw)])
    if decoded.batch is None or decoded.rejections:
        reasons = [reason for _, reason, _ in decoded.rejections[:1]]
        raise StateError(f"{state.where}.reference_columns: not a valid columnar batch ({reasons})")
    return decoded.batch


def _window_detector(item: StateReader) -> WindowDetector:
    cls = DETECTOR_CLASSES.get(item.text("class"))
    if cls is None or not issubclass(cls, WindowDetector):
        raise StateError(f"{item.where}.class: {item.raw('class')!r} is not a window detector")
    return cls.from_state(item.child("state"))


def _statistics(state: StateReader) -> dict[StatisticKey, float]:
    statistics = {}
    for row in state.items("latest_window"):
        if not (isinstance(row, list) and len(row) == 4 and all(isinstance(part, str) for part in row[:3])):
            raise StateError(f"{state.where}.latest_window: expected [kind, subject, statistic, value] rows")
        value = StateReader({"value": row[3]}, f"{state.where}.latest_window").number("value")
        statistics[StatisticKey(str(row[0]), str(row[1]), str(row[2]))] = value
    return statistics


def _policy_state(policy: RetrainPolicy) -> State:
    pending = policy.pending
    return {
        "config": policy.config.model_dump(mode="json"),
        "last_command_ts": pack_optional_float(policy.last_command_ts),
        "pending": None
        if pending is None
        else {
            "model_id": pending.model_id,
            "model_version": pending.model_version,
            "start_ts": pending.start_ts,
            "reasons": list(pending.reasons),
            "examples": pending.examples,
            "latest_ts": pending.latest_ts,
        },
    }


def _policy_from_state(state: StateReader) -> RetrainPolicy:
    try:
        config = RetrainPolicyConfig.model_validate(state.child("config").data)
    except ValueError as exc:
        raise StateError(f"{state.where}.config: not a valid retrain config ({exc})") from None
    pending = state.optional_child("pending")
    return RetrainPolicy(
        config,
        state.optional_number("last_command_ts"),
        None
        if pending is None
        else PendingRetrain(
            pending.text("model_id"),
            pending.text("model_version"),
            pending.number("start_ts"),
            pending.texts("reasons"),
            pending.integer("examples"),
            pending.number("latest_ts"),
        ),
    )


@dataclass
class ModelCounters:
    processed: int = 0
    dead_lettered: int = 0
    labels: int = 0
    alerts: int = 0
    commands: int = 0
    duplicates: int = 0  # predictions dropped as a repeat of an event id within the horizon
    latest_version: str | None = None

    COUNTS = ("processed", "dead_lettered", "labels", "alerts", "commands", "duplicates")

    def state(self) -> State:
        return {**{name: getattr(self, name) for name in self.COUNTS}, "latest_version": self.latest_version}

    @classmethod
    def from_state(cls, state: StateReader) -> ModelCounters:
        counts = {name: state.integer(name) for name in cls.COUNTS}
        return cls(**counts, latest_version=state.optional_text("latest_version"))


@dataclass
class ModelState:
    """Everything the monitor knows about one model_id: the unit of checkpoints."""

    joiner: LabelJoiner
    ids: RecentIds
    counters: ModelCounters = field(default_factory=ModelCounters)
    versions: dict[str, ModelMonitor] = field(default_factory=dict)
    clock: Watermark = field(default_factory=Watermark)

    def state(self) -> State:
        return {
            "joiner": self.joiner.state(),
            "ids": self.ids.state(),
            "counters": self.counters.state(),
            "versions": {version: monitor.state() for version, monitor in self.versions.items()},
            "clock": self.clock.state(),
        }

    @classmethod
    def from_state(cls, state: StateReader) -> ModelState:
        return cls(
            joiner=LabelJoiner.from_state(state.child("joiner")),
            ids=RecentIds.from_state(state.child("ids")),
            counters=ModelCounters.from_state(state.child("counters")),
            versions={v: ModelMonitor.from_state(m) for v, m in state.mapping("versions").items()},
            clock=Watermark.from_state(state.child("clock")),
        )


class Monitor:
    """All monitored models. A new model version gets fresh detectors and a new reference."""

    def __init__(self, config: MonitoringConfig | None = None, load_profile: ProfileLoader | None = None) -> None:
        self.config = config or MonitoringConfig()
        self.load_profile = load_profile
        self.models: dict[str, ModelState] = {}

    def state(self, model_id: str) -> ModelState:
        state = self.models.get(model_id)
        if state is None:
            config = self.config.for_model(model_id)
            state = self.models[model_id] = ModelState(
                LabelJoiner(config.label_ttl_s, config.max_pending), RecentIds(config.dedupe_horizon)
            )
        return state

    def model(self, model_id: str, model_version: str) -> ModelMonitor:
        state = self.state(model_id)
        monitor = state.versions.get(model_version)
        if monitor is None:
            profile = self.load_profile(model_id, model_version) if self.load_profile else None
            monitor = ModelMonitor(model_id, model_version, self.config.for_model(model_id), profile)
            state.versions[model_version] = monitor
        return monitor

    def screen(
        self, events: Sequence[PredictionEvent | PredictionColumns], now: float
    ) -> tuple[list[PredictionEvent | PredictionColumns], list[Rejected]]:
        """Split predictions into those with a plausible event time and those without (with the reason).

        ``now`` is the monitor's clock (processing time). The service dead-letters the rejected ones
        before :meth:`observe` (see :func:`driftwarden.core.event_time.time_problem`). A columnar
        batch is screened row by row: its refused rows leave it, each as its own event.
        """
        accepted: list[PredictionEvent | PredictionColumns] = []
        rejected: list[Rejected] = []
        for event in events:
            config = self.config.for_model(event.model_id)
            state = self.models.get(event.model_id)
            watermark = state.clock.value if state else None
            if isinstance(event, PredictionColumns):
                problems = time_problems(event.ts, now, watermark, config.future_tolerance_s, config.label_ttl_s)
                if not problems:
                    accepted.append(event)
                    continue
                refused = np.array(list(problems))
                rejected += map(Rejected, event.take(refused).events(), problems.values(), problems)
                if len(keep := np.setdiff1d(np.arange(len(event)), refused)):
                    accepted.append(event.take(keep))
                continue
            problem = time_problem(event.ts, now, watermark, config.future_tolerance_s, config.label_ttl_s)
            if problem is None:
                accepted.append(event)
            else:
                rejected.append(Rejected(event, problem))
        return accepted, rejected

    def quick(self, events: Sequence[PredictionEvent | PredictionColumns], labels: int) -> bool:
        """Whether :meth:`observe` of these predictions and :meth:`observe_labels` of ``labels`` labels take only a
        moment: at most :data:`QUICK_EVENTS` predictions and labels together, all of model versions that have their
        whole reference profile (not still growing) and no embeddings. Only a profile's build (numba's loops loaded on
        a process's first fed stream too) or an embedding's MMD window (its first one computes the reference's kernel
        spectrum: 3-8 s) take longer than a few hundred events' detectors. It reads the state, never changes it, and
        what ``observe`` gives does not depend on it.

        >>> monitor = Monitor()
        >>> events = [PredictionEvent(event_id="e", model_id="m", model_version="1", ts=0.0, features={"x": 1.0},
        ...                           prediction="a")]
        >>> monitor.quick(events, labels=0)  # no reference yet: its build is to come
        False
        >>> monitor.quick([], labels=QUICK_EVENTS), monitor.quick([], labels=QUICK_EVENTS + 1)
        (True, False)
        """
        rows = sum(len(e) if isinstance(e, PredictionColumns) else 1 for e in events)
        if rows + labels > QUICK_EVENTS:
            return False
        for model_id, version in {(e.model_id, e.model_version) for e in events}:
            state = self.models.get(model_id)
            monitor = state.versions.get(version) if state is not None else None
            if monitor is None or monitor.profile is None or monitor.reference_parts or monitor.profile.embedding:
                return False
        return True

    def observe(self, events: Sequence[PredictionEvent | PredictionColumns], now: float) -> Outputs:
        """Feed predictions (any mix of models, events and columnar batches, in stream order); return
        what they raise.

        Models share no state: each model's predictions are fed together, in their order (a batch of
        many interleaved models costs one detector update per model, not one per message).
        An event id seen among the model's last ``dedupe_horizon`` distinct ids is counted and dropped
        (a columnar batch row by row, as if its rows came as events).
        """
        outputs = Outputs()
        fresh = [f for run in _runs(_merged(by_model(events)), _MODEL) for f in self._fresh(run)]  # each in its order
        for run in _runs(fresh, _MODEL_VERSION):
            first = run if isinstance(run, PredictionColumns) else run[0]
            outputs += self._observe_version(first.model_id, first.model_version, run, now)
        self._count(outputs)
        return outputs

    def _observe_version(self, model_id: str, version: str, batch: Predictions, now: float) -> Outputs:
        state = self.state(model_id)
        outputs = self.model(model_id, version).observe(batch, now)
        outputs.processed[(model_id, version)] = outputs.processed.get((model_id, version), 0) + len(batch)
        state.counters.processed += len(batch)
        state.counters.latest_version = version
        if isinstance(batch, PredictionColumns):
            ids, ts, predictions = batch.event_ids, batch.ts, batch.prediction
            confidence, segments = batch.join_columns()
        else:  # a run of events, into the joiner at once as a columnar batch's rows are
            ids, predictions = [e.event_id for e in batch], [e.prediction for e in batch]
            ts = np.array([e.ts for e in batch])
            confidence = np.array(top_scores(batch))
            segments = [tuple(sorted(segment.items())) if (segment := e.segment) else () for e in batch]
        state.clock.observe_many(ts.tolist())
        joined = state.joiner.add_predictions(ids, ts, version, predictions, confidence, segments)
        outputs += self._route_joined(model_id, joined, now)
        watermark = state.clock.value
        if watermark is not None:
            state.joiner.expire(watermark)
        return outputs

    def _fresh(self, run: list[PredictionEvent] | PredictionColumns) -> Sequence[PredictionEvent | PredictionColumns]:
        """A model's consecutive events, or a columnar batch: those whose event ids are new (a batch as one
        item, or none when none is).

        A duplicate id (among the model's last ``dedupe_horizon``) is counted and dropped.
        """
        state = self.state(run.model_id if isinstance(run, PredictionColumns) else run[0].model_id)
        ids = run.event_ids if isinstance(run, PredictionColumns) else [event.event_id for event in run]
        fresh = state.ids.add_many(ids)
        if fresh.all():
            return [run] if isinstance(run, PredictionColumns) else run
        state.counters.duplicates += int((~fresh).sum())
        if isinstance(run, PredictionColumns):
            return [run.take(np.flatnonzero(fresh))] if fresh.any() else []
        return list(compress(run, fresh.tolist()))

    def observe_labels(self, labels: Sequence[LabelEvent], now: float) -> Outputs:
        outputs = Outputs()
        for model_id, run in groupby(by_model(labels), key=_MODEL):
            batch = list(run)
            state = self.state(model_id)
            state.counters.labels += len(batch)
            joined = [j for label in batch if (j := state.joiner.add_label(label.event_id, label.label, label.ts))]
            outputs += self._route_joined(model_id, joined, now)
        self._count(outputs)
        return outputs

    def _route_joined(self, model_id: str, joined: list[Joined], now: float) -> Outputs:
        outputs = Outputs()
        for version, run in groupby(joined, key=lambda j: j.model_version):
            outputs += self.model(model_id, version).observe_joined(list(run), now)
        return outputs

    def _count(self, outputs: Outputs) -> None:
        for alert in outputs.alerts:
            self.state(alert.model_id).counters.alerts += 1
        for command in outputs.commands:
            self.state(command.model_id).counters.commands += 1

    def count_dead_letters(self, model_id: str, n: int) -> None:
        self.state(model_id).counters.dead_lettered += n

    def status(self, model_id: str, now: float) -> MonitorStatusV1:
        state = self.state(model_id)
        counters = state.counters
        performance: dict[str, float | None] = {}
        version = counters.latest_version
        monitor = state.versions.get(version) if version else None
        if monitor is not None:
            if monitor.performance is not None:
                performance.update(monitor.performance.metrics)
            for key, value in monitor.latest_window.items():
                if key.kind == "estimated_performance":
                    performance["estimated_accuracy"] = value
        return MonitorStatusV1(
            model_id=model_id,
            ts=now,
            model_version=version,
            events_processed=counters.processed,
            events_dead_lettered=counters.dead_lettered,
            alerts_fired=counters.alerts,
            labels_received=counters.labels,
            retrain_commands=counters.commands,
            performance=performance,
            label_joins=state.joiner.counts() | {"duplicate_predictions": counters.duplicates},
            alerts_suppressed=sum(m.book.suppressed for m in state.versions.values()),
            window_statistics=[(*key, value) for key, value in monitor.latest_window.items()] if monitor else None,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def export(self, model_ids: Iterable[str]) -> bytes:
        """The complete state of these models, as versioned JSON bytes (see :mod:`driftwarden.core.state`)."""
        models: dict[str, JsonValue] = {m: self.models[m].state() for m in model_ids if m in self.models}
        return encode(STATE_FORMAT, STATE_VERSION, {"models": models})

    def restore(self, raw: bytes) -> list[str]:
        """Load models exported by :meth:`export`, replacing what is in memory; return their ids.

        Every field is checked: bytes that are not such a state raise :class:`StateError` (nothing in
        memory changes then), they never run code.
        """
        models = decode(raw, STATE_FORMAT, STATE_VERSION).mapping("models")
        states = {model_id: ModelState.from_state(state) for model_id, state in models.items()}
        self.models.update(states)
        return list(states)

    def forget(self, model_ids: Iterable[str]) -> None:
        for model_id in model_ids:
            self.models.pop(model_id, None)


def category_ranking(profile: CategoricalProfile) -> tuple[dict[str, int], list[int]]:
    """A categorical feature's categories and their codes (frequency ranks), and the ranks' counts, then the
    count of the last rank, categories the reference did not see
    (:func:`~driftwarden.core.detectors.sequential.frequency_ranks`).

    >>> codes, counts = category_ranking(CategoricalProfile({"a": 600, "b": 300, "c": 100}, 0.0))
    >>> codes, category_detector(counts, 1e5, 0).cdf.above.round(2).tolist()
    ({'a': 0, 'b': 1, 'c': 2}, [0.61, 0.9, 1.0, 1.0])
    >>> category_ranks(["c", None, "a", "z"], codes).tolist()  # (missing: skipped; unseen: the last rank)
    [2.0, nan, 0.0, 3.0]
    """
    ranked, counts = frequency_ranks(profile.counts)
    return {c: code for code, c in enumerate(ranked)}, counts


def category_detector(counts: list[int], arl: float, seed: int) -> RankCusumDetector:
    """A categorical feature's rank CUSUMs: on its categories' codes, against the ranks' exact reference shares
    ``counts`` (:func:`category_ranking`)."""
    return RankCusumDetector(range(len(counts)), sum(counts), arl, seed, masses=counts)


def category_alarm(
    profile: CategoricalProfile, codes: dict[str, int], detector: RankCusumDetector, batch: Sequence[str | None] = ()
) -> tuple[Change, dict[str, Scalar]]:
    """A categorical feature's rank-CUSUM alarm on the categories' scale: the shares of the detector's values
    since the change point (at most its last :data:`~driftwarden.core.detectors.streaming.RECENT`,
    ``recent_values``) against the reference's
    (:func:`~driftwarden.core.changes.rank_mix_change`). The detector keeps those values (as codes), so a
    restored one describes an alarm as before the restart. The categories the ranks leave out are named by
    the most common of them among as many of the last values of ``batch`` (the alarm's batch up to it).
    """
    alarm = detector.evidence()
    changed = detector.changed_values()
    others = Counter(v for v in batch[len(batch) - len(changed) :] if v is not None and v not in codes)
    named = ", ".join(c for c, _ in others.most_common(TOP_MOVERS))
    label = f"new or rare categories ({named})" if named else "new or rare categories"
    change, evidence = rank_mix_change(profile, list(codes), changed, label)
    kept = {key: alarm[key] for key in ("values_since_change", "values_seen", "false_alarm_arl")}
    return change, kept | {"recent_values": len(changed)} | evidence


def category_ranks(column: Sequence[str | None], codes: dict[str, int]) -> np.ndarray:
    """A categorical column as its categories' codes (NaN: missing; one the ranks leave out: ``len(codes)``)."""
    # one C-level lookup per value (no Python call per value): missing is NaN, an unseen category the last rank
    lookup: dict[str | None, float] = {category: float(code) for category, code in codes.items()} | {None: math.nan}
    return np.fromiter(map(lookup.get, column, repeat(float(len(codes)))), dtype=float, count=len(column))


def _category_rankings(profile: ReferenceProfile) -> dict[str, tuple[dict[str, int], list[int]]]:
    """Per categorical feature the rank CUSUMs watch, its categories' codes and the ranks' counts
    (:func:`category_ranking`).

    Not a feature without reference values, nor one whose categories the reference did not see are more than
    :data:`MAX_UNSEEN_SHARE` of the values (an identifier, say: new ones keep coming, and how many is too
    uncertain for the CUSUMs' budget; its window tests still watch it).
    """
    rankings = {name: category_ranking(p) for name, p in profile.categorical.items()}
    return {name: (codes, counts) for name, (codes, counts) in rankings.items()
            if codes and counts[-1] <= MAX_UNSEEN_SHARE * sum(counts)}  # fmt: skip


def _events_json(predictions: Predictions) -> bytes:
    """Predictions as the JSON objects of their events, comma-separated (a part of a JSON list)."""
    return orjson.dumps([e.model_dump(mode="json", exclude_none=True) for e in _as_events(predictions)])[1:-1]


def _as_events(predictions: Predictions) -> list[PredictionEvent]:
    """Predictions as events (a reference of events, or the state's copy of a reference)."""
    return predictions.events() if isinstance(predictions, PredictionColumns) else list(predictions)


#: What :func:`_runs` cuts runs of events by.
_MODEL = attrgetter("model_id")
#: Anything of one model: an event or a columnar batch.
Keyed = TypeVar("Keyed", bound=KeyedEvent | PredictionColumns)
_MODEL_VERSION = attrgetter("model_id", "model_version")


def by_model(items: Sequence[Keyed]) -> Sequence[Keyed]:
    """Each model's items together, in their order; models in the order they first appear.

    >>> from driftwarden.core.events import LabelEvent
    >>> labels = [LabelEvent(event_id=i, model_id=m, ts=1.0, label=0) for i, m in [("a", "x"), ("b", "y"), ("c", "x")]]
    >>> [e.event_id for e in by_model(labels)]
    ['a', 'c', 'b']
    """
    groups: dict[str, list[Keyed]] = {}
    for item in items:
        groups.setdefault(item.model_id, []).append(item)
    return items if len(groups) <= 1 else [item for group in groups.values() for item in group]


def _merged(items: Sequence[PredictionEvent | PredictionColumns]) -> list[PredictionEvent | PredictionColumns]:
    """Consecutive columnar batches of one model version with the same columns joined into one (a model's
    row envelopes of a Kafka batch make one detector update, not one per message)."""
    merged: list[PredictionEvent | PredictionColumns] = []
    for key, group in groupby(items, key=_columns_key):
        run = list(group)
        merged += [PredictionColumns.concat(cast("list[PredictionColumns]", run))] if key and len(run) > 1 else run
    return merged


def _columns_key(item: PredictionEvent | PredictionColumns) -> tuple[object, ...] | None:
    if not isinstance(item, PredictionColumns):
        return None
    scores = None if item.scores is None else tuple(item.scores)
    return item.model_id, item.model_version, tuple(item.features), scores


def _runs(
    events: Iterable[PredictionEvent | PredictionColumns], key: Callable[[PredictionEvent], object]
) -> Iterator[list[PredictionEvent] | PredictionColumns]:
    """Predictions in stream order as runs: consecutive events of one ``key``, each columnar batch alone.

    >>> from driftwarden.core.events import PredictionEvent
    >>> events = [PredictionEvent(event_id=i, model_id=m, model_version="1", ts=1.0, features={}, prediction=0.0)
    ...           for i, m in [("a", "x"), ("b", "x"), ("c", "y"), ("d", "x")]]
    >>> [[e.event_id for e in run] for run in _runs(events, _MODEL)]
    [['a', 'b'], ['c'], ['d']]
    """
    run: list[PredictionEvent] = []
    for item in events:
        if run and (isinstance(item, PredictionColumns) or key(item) != key(run[0])):
            yield run
            run = []
        if isinstance(item, PredictionColumns):
            yield item
        else:
            run.append(item)
    if run:
        yield run


def _same_columns(batches: list[PredictionColumns]) -> bool:
    """Whether columnar batches hold the same features and score classes (``PredictionColumns.concat`` joins them)."""
    first = batches[0]
    return all(
        b.features.keys() == first.features.keys() and (b.scores or {}).keys() == (first.scores or {}).keys()
        and (b.scores is None) == (first.scores is None)
        for b in batches
    )  # fmt: skip
