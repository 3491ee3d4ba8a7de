"""Preparing one time series for the energy use cases: a regular series at its frequency, labelled throughout.

Why: FLAML and the calendar features need one row per step with no gaps, and the hold-out is the last
`horizon` steps, so the series must be regular. Trailing rows without a label (hours not measured yet) are
dropped; gaps inside are filled by time interpolation. The frequency is the declared one, or the series' own
most common step: a daily series stays daily (never resampled to hours).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def drop_unlabelled_ends(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Drop leading and trailing rows whose label is missing (future steps not measured yet)."""
    known = frame[label].notna().to_numpy()
    if not known.any():
        return frame.iloc[0:0]
    first, last = int(np.argmax(known)), len(known) - int(np.argmax(known[::-1]))
    return frame.iloc[first:last]


def series_frequency(times: pd.Series, declared: str) -> str:
    """The declared frequency, else the most common step between the (sorted) time stamps."""
    if declared:
        return declared
    steps = times.drop_duplicates().sort_values().diff().dropna()
    if steps.empty:
        raise ValueError("one time stamp: cannot tell the series' frequency; declare time.frequency")
    step = steps.mode().iloc[0]
    days, rest = divmod(step, pd.Timedelta(days=1))
    if days >= 28 and not rest:
        # months and years have no fixed length: the most common step (31 days) would resample a monthly
        # series into 31-day bins, silently
        raise ValueError(
            f"steps of {days} days look like a calendar frequency (monthly, yearly) that cannot be detected; "
            "declare time.frequency (e.g. 'MS')"
        )
    if days and not rest:  # pandas spells whole days in hours ("24h"): a daily series must read as daily
        return "D" if days == 1 else f"{days}D"
    return pd.tseries.frequencies.to_offset(step).freqstr


def _already_regular(frame: pd.DataFrame, time_column: str, numeric: list[str], frequency: str) -> bool:
    """Sorted, one row per step of a fixed `frequency`, on its grid, nothing missing: nothing to do. Checked on
    the raw int64 time stamps (tens of microseconds; the pandas route costs ~10 ms a partition, which 10,000
    partitions pay 10,000 times)."""
    step = pd.tseries.frequencies.to_offset(frequency)
    if not _fixed(step) or len(frame) < 2:
        return False
    delta = pd.Timedelta(step).value
    stamps = frame[time_column].to_numpy().astype("datetime64[ns]").astype(np.int64)
    if not (np.diff(stamps) == delta).all() or (stamps[0] % delta and delta <= pd.Timedelta(days=1).value):
        return False
    return not frame[numeric].isna().to_numpy().any()


def regularise(frame: pd.DataFrame, time_column: str, label: str, frequency: str) -> pd.DataFrame:
    """One series, sorted, as a regular frame at `frequency`: duplicates averaged, gaps interpolated in time,
    unlabelled ends dropped; non-numeric columns (partition values) are constant within a series and kept."""
    if not frame[time_column].is_monotonic_increasing:
        frame = frame.sort_values(time_column, kind="stable")
    numeric = [c for c in frame.columns if c != time_column and pd.api.types.is_numeric_dtype(frame[c])]
    if _already_regular(frame, time_column, numeric, frequency):
        return frame.reset_index(drop=True)
    others = [c for c in frame.columns if c not in numeric and c != time_column]
    times = frame[time_column]
    step = pd.tseries.frequencies.to_offset(frequency)
    on_grid = (times.dt.floor(frequency) == times).all() if _fixed(step) else True
    regular = (
        times.is_unique
        and on_grid
        and (times.iloc[1:].reset_index(drop=True) == (times.iloc[:-1] + step).reset_index(drop=True)).all()
    )
    indexed = frame.set_index(time_column)[numeric]
    if not regular:
        indexed = indexed.resample(frequency).mean()
    indexed = drop_unlabelled_ends(indexed, label)
    if indexed[numeric].isna().any().any():
        indexed[numeric] = indexed[numeric].interpolate(method="time", limit_direction="both")
    out = indexed.reset_index()
    for column in others:
        out[column] = frame[column].iloc[0]
    return out.loc[:, list(frame.columns)].reset_index(drop=True)


def _fixed(offset) -> bool:
    try:
        pd.Timedelta(offset)
    except ValueError:
        return False
    return True
