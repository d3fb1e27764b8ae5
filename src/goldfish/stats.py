"""Bootstrap intervals for the figures the reports show (``scipy.stats.bootstrap``: percentile
intervals, ``N_RESAMPLES`` resamples, a fixed seed, so a report is the same every run).

Every function resamples the rows it is given (documents, chat turns, prompts) with replacement and
returns (estimate, low, high) at 95%; with fewer than two rows the interval is (estimate, None, None).
"""

from __future__ import annotations

import numpy as np

N_RESAMPLES, LEVEL, SEED = 1000, 0.95, 0


def _interval(statistic, samples: tuple, paired: bool) -> tuple[float | None, float | None]:
    from scipy.stats import bootstrap

    if min(len(s) for s in samples) < 2:
        return None, None
    res = bootstrap(samples, statistic, paired=paired, vectorized=False, n_resamples=N_RESAMPLES, confidence_level=LEVEL,
                    method="percentile", random_state=np.random.default_rng(SEED))
    low, high = res.confidence_interval
    return float(low), float(high)


def mean_ci(values) -> tuple[float, float | None, float | None]:
    """The mean of ``values`` and its interval."""
    values = np.asarray(values, dtype=np.float64)
    return (float(values.mean()), *_interval(np.mean, (values,), paired=False))


def weighted_mean_ci(sums, counts) -> tuple[float, float | None, float | None]:
    """sum(sums) / sum(counts) (e.g. a loss per token from per-row loss sums and token counts), rows resampled."""
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    return (float(sums.sum() / counts.sum()), *_interval(lambda s, c: s.sum() / c.sum(), (sums, counts), paired=True))


def paired_change_ci(sums, base_sums, counts, relative: bool) -> tuple[float, float | None, float | None]:
    """The change of a per-row-weighted mean against a baseline on the same rows: sum(sums) - sum(base_sums)
    over sum(counts), or, ``relative``, sum(sums) / sum(base_sums) - 1; rows resampled together."""
    a, b, n = (np.asarray(x, dtype=np.float64) for x in (sums, base_sums, counts))

    def change(a, b, n):
        return a.sum() / b.sum() - 1 if relative else (a.sum() - b.sum()) / n.sum()

    return (float(change(a, b, n)), *_interval(change, (a, b, n), paired=True))


def two_sample_ci(statistic, first, second) -> tuple[float, float | None, float | None]:
    """``statistic(first, second)`` (e.g. ROC AUC of members vs non-members), each sample resampled on its own."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    return (float(statistic(first, second)), *_interval(statistic, (first, second), paired=False))
