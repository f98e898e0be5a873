"""Seasonality and weekly rhythm of declarations and journeys."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000


def day_weights(start: dt.date, days: int) -> np.ndarray:
    """Relative activity per day: weekly rhythm (quiet Sundays), winter dip,
    pre-New-Year peak, Nauryz/Navruz holidays, slow growth over the period."""
    dates = np.arange(np.datetime64(start), np.datetime64(start) + days)
    weekday = (dates.astype("datetime64[D]").view("int64") - 4) % 7  # 0 = Monday
    week = np.array([1.1, 1.1, 1.1, 1.1, 1.05, 0.6, 0.25])[weekday]
    months = dates.astype("datetime64[M]").astype(int) % 12
    month = np.array([0.75, 0.85, 1.0, 1.0, 1.0, 0.95, 0.95, 1.0, 1.05, 1.05, 1.15, 1.25])[months]
    day_of_month = (dates - dates.astype("datetime64[M]")).astype(int) + 1
    holiday = ((months == 2) & (day_of_month >= 21) & (day_of_month <= 23)) | (
        ((months == 11) & (day_of_month == 31)) | ((months == 0) & (day_of_month <= 2))
    )
    trend = 1.0 + 0.12 * np.arange(days) / max(days, 1)
    w = week * month * trend * np.where(holiday, 0.3, 1.0)
    return np.asarray(w / w.sum(), dtype=np.float64)


def sample_days(
    rng: np.random.Generator, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """One day per row, drawn from `weights` restricted to [lo, hi) per row."""
    cdf = np.concatenate([[0.0], np.cumsum(weights)])
    a = cdf[lo]
    b = cdf[np.maximum(hi, lo + 1)]
    u = a + rng.random(len(lo)) * (b - a)
    day = np.searchsorted(cdf, u, side="right") - 1
    return np.clip(day, lo, np.maximum(hi - 1, lo)).astype(np.int64)


def office_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Microseconds into the (UTC) day: working hours in UTC+5, some night work."""
    hour = np.clip(rng.normal(6.5, 3.0, n), 0, 23.99)
    night = rng.random(n) < 0.08
    hour = np.where(night, rng.uniform(0, 24, n), hour)
    return (hour * US_PER_HOUR).astype(np.int64)


def ser(*args: object, **kwargs: object) -> pl.Series:
    """pl.Series that accepts object arrays holding None (as lists)."""
    fixed = [a.tolist() if isinstance(a, np.ndarray) and a.dtype == object else a for a in args]
    return pl.Series(*fixed, **kwargs)  # type: ignore[arg-type]


def strs(values: np.ndarray) -> pl.Series:
    """A String series from a numpy array of str (or None) - faster than astype(str)."""
    return pl.Series(np.asarray(values).tolist(), dtype=pl.String)
