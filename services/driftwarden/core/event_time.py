"""Event time and identity: a clock one outlier cannot move, implausible timestamps, duplicate event ids.

* :class:`Watermark` is a model's event-time clock (it expires label joins): the ``quorum``-th
  largest event time seen, so a single timestamp far ahead (milliseconds, a wrong year) does not move
  it; it takes ``quorum`` events at or beyond a time to get there.
* :func:`time_problem` (:func:`time_problems` for a column of times) says why an event time cannot
  be right: a value that looks like milliseconds (or micro-, nanoseconds) since the epoch, a time
  beyond the monitor's clock plus a tolerance, or a time older than the model's watermark minus the
  label TTL (no label could join it). The monitor service dead-letters such events with that reason
  (:meth:`driftwarden.core.monitor.Monitor.screen`).
* :class:`RecentIds` remembers the last ``horizon`` distinct event ids of a model (as 64-bit hashes)
  so that a duplicate within that horizon is counted and dropped before detectors and joins.

>>> clock = Watermark(quorum=3)
>>> for ts in (10.0, 11.0, 1_764_500_000_000.0, 12.0):  # one timestamp in milliseconds
...     clock.observe(ts)
>>> clock.value
11.0
>>> time_problem(1_764_500_000_000.0, now=1_764_500_000.0, watermark=None, future_tolerance_s=300, ttl_s=86400)
'ts 1.7645e+12 looks like milliseconds since the epoch (expected seconds)'
>>> time_problem(1_764_500_100.0, now=1_764_500_000.0, watermark=None, future_tolerance_s=60, ttl_s=86400)
'ts 1.7645e+09 is 100 s ahead of the monitor clock (tolerance 60 s)'
>>> ids = RecentIds(horizon=2)
>>> [ids.add(i) for i in ("a", "b", "a", "c", "a")]  # "a" left the horizon once "c" came
[True, True, False, True, True]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from hashlib import blake2b

import numpy as np

from driftwarden.core.state import State, StateError, Stateful, StateReader, pack_array, pack_ints

#: Event times at or beyond a time needed before the watermark moves there.
WATERMARK_QUORUM = 8
#: Above these, an event time in seconds since the epoch is a value in a smaller unit (year 5138+).
UNIT_LIMITS = ((1e17, "nanoseconds"), (1e14, "microseconds"), (1e11, "milliseconds"))


class Watermark(Stateful):
    """The ``quorum``-th largest event time seen (the smallest seen while fewer came); None before any."""

    def __init__(self, quorum: int = WATERMARK_QUORUM) -> None:
        if quorum < 1:
            raise ValueError("quorum must be positive")
        self.quorum = quorum
        self._top: list[float] = []  # min-heap of the largest event times

    def observe(self, ts: float) -> None:
        self.observe_many((ts,))

    def observe_many(self, times: Iterable[float]) -> None:
        """``observe`` each time in order (one call per batch: the hot path)."""
        top, quorum = self._top, self.quorum
        for ts in times:
            if len(top) < quorum:
                heapq.heappush(top, ts)
            elif ts > top[0]:
                heapq.heapreplace(top, ts)

    @property
    def value(self) -> float | None:
        return self._top[0] if self._top else None

    def state(self) -> State:
        return {"quorum": self.quorum, "top": pack_array(sorted(self._top))}

    @classmethod
    def from_state(cls, state: StateReader) -> Watermark:
        clock = cls(state.integer("quorum", minimum=1))
        top = state.array("top").tolist()
        if len(top) > clock.quorum:
            raise StateError(f"{state.where}.top: more than quorum={clock.quorum} values")
        clock._top = top  # sorted ascending: a valid min-heap
        return clock


def time_problem(ts: float, now: float, watermark: float | None, future_tolerance_s: float, ttl_s: float) -> str | None:
    """Why ``ts`` (seconds since the epoch) cannot be an event's time, or None when it is plausible."""
    for limit, unit in UNIT_LIMITS:
        if ts >= limit:
            return f"ts {ts:.5g} looks like {unit} since the epoch (expected seconds)"
    if ts > now + future_tolerance_s:
        return f"ts {ts:.5g} is {ts - now:.0f} s ahead of the monitor clock (tolerance {future_tolerance_s:g} s)"
    if watermark is not None and ts < watermark - ttl_s:
        return f"ts {ts:.5g} is {watermark - ts:.0f} s behind the model's event time, older than label_ttl_s={ttl_s:g}"
    return None


def time_problems(
    ts: np.ndarray, now: float, watermark: float | None, future_tolerance_s: float, ttl_s: float
) -> dict[int, str]:
    """:func:`time_problem` of each event time in ``ts`` that has one, by position (for a columnar batch).

    One numpy pass finds the times that may have a problem; only those are looked at one by one.

    >>> ts = np.array([1_764_500_000.0, 1_764_500_000_000.0, 1_764_500_100.0])
    >>> problems = time_problems(ts, now=1_764_500_000.0, watermark=None, future_tolerance_s=60, ttl_s=86400)
    >>> for i, problem in problems.items():
    ...     print(i, problem)
    1 ts 1.7645e+12 looks like milliseconds since the epoch (expected seconds)
    2 ts 1.7645e+09 is 100 s ahead of the monitor clock (tolerance 60 s)
    """
    oldest = -np.inf if watermark is None else watermark - ttl_s
    suspect = (ts >= UNIT_LIMITS[-1][0]) | (ts > now + future_tolerance_s) | (ts < oldest)
    found = ((i, time_problem(t, now, watermark, future_tolerance_s, ttl_s)) for i, t in
             zip(np.flatnonzero(suspect).tolist(), ts[suspect].tolist(), strict=True))  # fmt: skip
    return {i: problem for i, problem in found if problem is not None}


def id_hash(event_id: str) -> int:
    """A stable 63-bit hash of an event id (Python's ``hash`` differs between processes)."""
    return int.from_bytes(_digest(event_id), "little") >> 1


def _digest(event_id: str) -> bytes:
    return blake2b(event_id.encode(), digest_size=8).digest()


class RecentIds(Stateful):
    """The last ``horizon`` distinct event ids, as 63-bit hashes in a ring and a set.

    Memory is bounded by ``horizon``: ~86 bytes per id in memory (measured: 8.6 MB at the default
    100,000), ~11 in a checkpoint (8 bytes in base64: 1.07 MB). Two different ids share a hash with
    probability ~horizon²/2⁶⁴ (5e-10 at 100,000): a false duplicate that rare is accepted.
    """

    def __init__(self, horizon: int) -> None:
        if horizon < 1:
            raise ValueError("horizon must be positive")
        self.horizon = horizon
        self._ring: list[int] = []
        self._next = 0  # once the ring is full: the slot of the oldest id, which the next one replaces
        self._seen: set[int] = set()

    def add(self, event_id: str) -> bool:
        """Remember an id; False when it is a duplicate within the horizon."""
        return self._add(id_hash(event_id))

    def add_many(self, event_ids: Sequence[str]) -> np.ndarray:
        """``add`` each id in order (one call per columnar batch): which were new.

        Ids all new (none among the horizon's, none twice) enter the ring at once, as one at a time would
        put them there; otherwise one at a time.

        >>> ids = RecentIds(horizon=3)
        >>> ids.add_many(["a", "b", "c", "d"]).tolist(), ids.add_many(["b", "a", "a"]).tolist()
        ([True, True, True, True], [False, True, False])
        """
        keys = (np.frombuffer(b"".join(_digest(event_id) for event_id in event_ids), "<u8") >> 1).tolist()
        if len(set(keys)) < len(keys) or not self._seen.isdisjoint(keys):
            return np.fromiter(map(self._add, keys), bool, len(keys))
        seen, ring = self._seen, self._ring
        room = self.horizon - len(ring)
        ring += keys[:room]
        seen.update(keys[:room])
        start = min(room, len(keys))
        while start < len(keys):  # the oldest ids give way, from the ring's next slot to its end at most
            rest = keys[start : start + self.horizon - self._next]
            start += len(rest)
            slots = slice(self._next, self._next + len(rest))
            seen.difference_update(ring[slots])  # (none of them is among ``keys``)
            ring[slots] = rest
            seen.update(rest)
            self._next = (self._next + len(rest)) % self.horizon
        return np.ones(len(keys), dtype=bool)

    def _add(self, key: int) -> bool:
        seen = self._seen
        if key in seen:
            return False
        if len(self._ring) < self.horizon:
            self._ring.append(key)
        else:
            seen.discard(self._ring[self._next])
            self._ring[self._next] = key
            self._next = (self._next + 1) % self.horizon
        seen.add(key)
        return True

    def __len__(self) -> int:
        return len(self._ring)

    def state(self) -> State:
        oldest_first = self._ring[self._next :] + self._ring[: self._next]
        return {"horizon": self.horizon, "hashes": pack_ints(oldest_first)}

    @classmethod
    def from_state(cls, state: StateReader) -> RecentIds:
        ids = cls(state.integer("horizon", minimum=1))
        hashes = state.ints("hashes")
        if len(hashes) > ids.horizon or len(set(hashes.tolist())) != len(hashes):
            raise StateError(f"{state.where}.hashes: expected at most horizon={ids.horizon} distinct hashes")
        ids._ring = hashes.tolist()
        ids._seen = set(ids._ring)
        return ids
