"""The two measurements of `driftwarden bench bank-overhead` (docs/benchmarks.md, issue 10), in seconds."""

from __future__ import annotations

import numpy as np

from driftwarden.bench.bank_overhead import DEFAULT_STREAM_ARL, bank_alarms, bank_within_budget, reference_thetas
from driftwarden.core.detectors.sequential import BANK, REFERENCE_Z


def test_the_bank_alarms_less_often_than_its_cusums_in_sum_and_less_so_as_thresholds_rise():
    """On exact uniform ranks at 3,000 and 30,000 values between each CUSUM's false alarms (~200 of the bank's
    each): the bank's false alarms are 0.42 of the sum at the lower level, 0.63 at the higher (the overlap of
    neighbouring alternatives' excursions shrinks as thresholds rise: 0.85-0.9 at 3e6 and 3e7, docs/benchmarks.md),
    and Bonferroni holds: the bank's ARL is at least the target over the bank's size (within the noise)."""
    ratios = []
    for target in (3e3, 3e4):
        values = int(200 * target / len(BANK))
        union, each = bank_alarms(None, target, values, seed=1)
        assert values / union >= 0.8 * target / len(BANK)
        ratios.append(union / each.sum())
    assert ratios[0] < ratios[1] < 0.9


def test_exact_thetas_over_references_give_the_banks_reference_spreads():
    """``sqrt(n) (1 - θ)`` over 150 references of 5,000 uniform values (θ exact given each reference): its standard
    deviation is each CUSUM's ``reference_spread`` within -25 %/+30 % (those were measured by simulation, the
    larger of 5,000- and 1,000-value references), and today's thresholds keep the bank's summed rate within its
    budget for 88-97 % of references (the margin, 95 % per CUSUM, cannot move onto the sum: docs/benchmarks.md)."""
    n = 5_000
    thetas = np.array(list(reference_thetas(150, n, seed=2)))
    ratio = np.sqrt(n) * (1 - thetas).std(axis=0) / np.array([spec.reference_spread for spec in BANK])
    assert ratio.min() >= 0.75 and ratio.max() <= 1.3, dict(zip([s.name for s in BANK], ratio.round(2), strict=True))
    share, thresholds = bank_within_budget(thetas, n, DEFAULT_STREAM_ARL, REFERENCE_Z)
    assert 0.88 <= share <= 0.97
    assert 19 < thresholds.min() < thresholds.max() < 26
