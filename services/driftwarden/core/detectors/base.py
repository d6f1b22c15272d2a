"""The detector protocol, in River's style (``river/base/drift_detector.py``).

A detector is a small object: ``update(...)`` feeds it, the read-only ``drift_detected`` property
says whether that update found drift, ``evidence()`` says why in numbers an on-call engineer can
check, ``summary()`` turns the evidence into alert text, and ``repr()`` shows its parameters. Its
whole state round-trips through :meth:`Detector.state` / :meth:`Detector.from_state` (JSON values,
see :mod:`driftwarden.core.state`). Every concrete detector class is listed in
:data:`driftwarden.core.detectors.DETECTOR_CLASSES`; the contract suite
(``tests/unit/test_detector_contract.py``) runs over all of them.

>>> key = StatisticKey("data_drift", "a:b", "psi")  # a feature name may hold any character
>>> key.subject, key == ("data_drift", "a:b", "psi")
('a:b', True)
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple, Self, TypeVar

import numpy as np

from driftwarden.core.events import Scalar
from driftwarden.core.state import JsonValue, State, StateError, Stateful, StateReader


def readable(values: Sequence[float], resolution: float) -> list[str]:
    """``values`` with as many significant digits as a difference of ``resolution`` needs to show (4 to 15): an
    alert about epoch seconds moving by ten minutes must not read ``median 1.7e+09 -> 1.7e+09``.

    >>> readable([1_700_000_100.0, 1_700_000_700.0], 600.0), readable([3.14159, 2.5], 0.5), readable([0.0, 0.0], 0.0)
    (['1700000100', '1700000700'], ['3.142', '2.5'], ['0', '0'])
    """
    big = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    digits = 4
    if big > 0 and 0 < resolution < math.inf:
        exponent = math.floor(math.log10(big))
        digits = min(15, max(4, exponent - math.floor(math.log10(resolution)) + 2))
        if exponent < 15 and (exponent <= digits or resolution >= 1):  # (every integer digit shown: no exponent)
            digits = max(digits, exponent + 1)
    return [f"{v:.{digits}g}" for v in values]


def number(evidence: dict[str, Scalar], key: str) -> float:
    """An evidence entry as a float (NaN when it is missing or not a number)."""
    value = evidence.get(key)
    return float(value) if isinstance(value, int | float) else math.nan


class StatisticKey(NamedTuple):
    """Which statistic of which detector: a structured key (a feature may be named ``a:b``)."""

    kind: str
    subject: str
    statistic: str


class Detector(Stateful):
    """Base of every detector: read-only verdict, parameters in ``repr``, state as plain values."""

    #: The detector named in alerts (an instance may override it).
    name: str = ""
    #: The evidence keys :meth:`summary` reads; present in ``evidence()`` after every tested update.
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._drift_detected = False

    @property
    def drift_detected(self) -> bool:
        """Whether drift was found by the last update (for window detectors: once the window is judged)."""
        return self._drift_detected

    @abc.abstractmethod
    def params(self) -> State:
        """The constructor's arguments as JSON values (``type(d).from_params(d.params())`` is a fresh copy)."""

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: StateReader) -> Self:
        """A fresh detector from :meth:`params`, each value checked."""

    @abc.abstractmethod
    def evidence(self) -> dict[str, Scalar]:
        """Why the detector fired (or did not): numbers and names, plain scalars."""

    @abc.abstractmethod
    def summary(self, model_id: str, model_version: str) -> str:
        """One line for the alert, built from :meth:`evidence`."""

    @abc.abstractmethod
    def dynamic_state(self) -> State:
        """What updates changed (everything that is not a parameter)."""

    @abc.abstractmethod
    def load_dynamic_state(self, state: StateReader) -> None:
        """Set what :meth:`dynamic_state` wrote, each value checked."""

    def state(self) -> State:
        return {"params": self.params(), "dynamic": self.dynamic_state()}

    @classmethod
    def from_state(cls, state: StateReader) -> Self:
        detector = cls.from_params(state.child("params"))
        detector.load_dynamic_state(state.child("dynamic"))
        return detector

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={_short(value)}" for key, value in self.params().items())
        return f"{type(self).__name__} ({shown})"


class StreamingDetector(Detector):
    """A detector fed one number per :meth:`update`; :meth:`update_many` feeds a whole column.

    The default :meth:`update_many` is a loop over :meth:`update`. A detector may override it with a
    native batch path (vectorized, or with less per-value overhead); its result must equal the loop's
    (the contract suite compares both on every registered streaming detector).
    """

    @abc.abstractmethod
    def update(self, x: float) -> None:
        """Feed one value."""

    def update_many(self, values: Sequence[float] | np.ndarray, on_drift: Callable[[int], None] | None = None) -> None:
        """:meth:`update` for each value in order, NaN skipped; ``on_drift(i)`` after each value ``i`` that
        drifted, with the detector's state (``evidence()`` included) as of that value.

        >>> from driftwarden.core.detectors import RankCusumDetector
        >>> values = np.r_[np.zeros(300), np.full(300, 5.0)] + np.tile([0.1, -0.1], 300)
        >>> quantiles = np.linspace(-1.0, 1.0, 101)
        >>> native, loop = RankCusumDetector(quantiles, 1_000), RankCusumDetector(quantiles, 1_000)
        >>> alarms: tuple[list[int], list[int]] = ([], [])
        >>> native.update_many(values, alarms[0].append)  # its own batch path
        >>> StreamingDetector.update_many(loop, values, alarms[1].append)  # the default loop
        >>> alarms[0] == alarms[1] != [], native.evidence() == loop.evidence()
        (True, True)
        >>> bool(np.allclose(native.cusums, loop.cusums, rtol=0, atol=1e-12))  # running sums vs one at a time
        True
        """
        for i, x in enumerate(np.asarray(values, dtype=float).tolist()):
            if x == x:
                self.update(x)
                if self.drift_detected and on_drift is not None:
                    on_drift(i)


def _short(value: JsonValue) -> str:
    """A parameter as ``repr`` shows it: scalars as they are, bulky values by their size."""
    if isinstance(value, list):
        return f"[{len(value)} values]" if len(value) > 6 else repr(value)
    if isinstance(value, dict):
        return f"{{{len(value)} entries}}"
    return repr(value)


D = TypeVar("D", bound=Detector)


def build(cls: type[D], params: StateReader, *args: object) -> D:
    """``cls(*args)`` for :meth:`Detector.from_params`: a rejected argument raises :class:`StateError`."""
    try:
        return cls(*args)
    except (ValueError, TypeError) as exc:
        raise StateError(f"{params.where}: {exc}") from None
