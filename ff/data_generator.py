"""Synthetic hourly electricity demand with weather, shaped like the public ``nyc_energy.csv``.

Why: the template must train and test without downloading data, and the many-models path needs
thousands of partitions on demand. Everything is vectorised over (region, hour) and seeded, so the same
seed gives the same CSV byte for byte.

Shape of the signal (NYC-like, MW and degrees Fahrenheit):
- temperature: yearly cycle (~33 F in January, ~78 F in July), a daily cycle peaking mid-afternoon,
  and multi-day weather swings (AR(1));
- precipitation: ~10 % of hours wet, clustered in events, amounts mostly below 0.05 inch/hour;
- demand: a weekday/weekend daily profile times a small yearly factor, plus a U-shaped temperature
  response (heating below ~58 F, much steeper cooling above ~65 F, stronger in the daytime), plus
  autocorrelated noise. Each region has its own scale, climate offset and sensitivities.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

COLUMNS = ("timeStamp", "demand", "precip", "temp")
PARTITION_COLUMN = "region"
DEFAULT_START = "2016-08-01"
DEFAULT_DAYS_SINGLE = 365
DEFAULT_DAYS_PARTITIONED = 60
_CHUNK = 500  # regions generated together: bounds memory; fixed so results never depend on N's split

# Relative demand by hour of day (weekday; weekend mornings start later and stay lower).
_WEEKDAY = np.array(
    [0.87, 0.83, 0.80, 0.79, 0.79, 0.82, 0.90, 0.98, 1.05, 1.09, 1.11, 1.12]
    + [1.13, 1.13, 1.13, 1.13, 1.14, 1.15, 1.13, 1.11, 1.09, 1.06, 1.01, 0.94]
)
_WEEKEND = np.array(
    [0.86, 0.81, 0.78, 0.76, 0.75, 0.75, 0.77, 0.81, 0.87, 0.93, 0.98, 1.01]
    + [1.03, 1.04, 1.04, 1.04, 1.05, 1.06, 1.06, 1.04, 1.02, 0.99, 0.95, 0.90]
)


def region_ids(n: int) -> list[str]:
    """Region names ``r0000`` ... zero-padded to sort in order (at least four digits)."""
    width = max(4, len(str(max(n - 1, 0))))
    return [f"r{i:0{width}d}" for i in range(n)]


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise along axis 1 with marginal standard deviation ``sd``."""
    shocks = rng.standard_normal(shape) * (sd * np.sqrt(1.0 - phi * phi))
    shocks[:, 0] = shocks[:, 0] / np.sqrt(1.0 - phi * phi)  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], shocks, axis=1)


def _chunk(rng: np.random.Generator, times: pd.DatetimeIndex, n: int, single: bool) -> dict[str, np.ndarray]:
    """Demand, temperature and precipitation for ``n`` regions over ``times`` (arrays shaped (n, hours))."""
    shape = (n, len(times))
    hour = times.hour.to_numpy()
    weekend = times.day_of_week.to_numpy() >= 5
    day_of_year = times.day_of_year.to_numpy().astype(float)

    if single:  # the single series is "New York" itself
        scale, climate = np.ones(n), np.zeros(n)
        heating, cooling = np.full(n, 18.0), np.full(n, 150.0)
    else:
        scale = rng.lognormal(0.0, 0.35, n)
        climate = rng.normal(0.0, 4.0, n)
        heating = 18.0 * rng.lognormal(0.0, 0.3, n)
        cooling = 150.0 * rng.lognormal(0.0, 0.2, n)

    yearly = np.cos(2 * np.pi * (day_of_year - 20.0) / 365.25)
    daily = np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    weather = _ar1(rng, shape, phi=0.985, sd=6.5)
    rain_latent = _ar1(rng, shape, phi=0.9, sd=1.0)
    wet = rain_latent > 1.2816  # ~10 % of hours
    amount = np.exp(rng.normal(np.log(0.012), 1.1, shape) + 0.6 * np.clip(rain_latent - 1.28, 0, None))
    precip = np.where(wet, np.round(np.minimum(amount, 2.0), 4), 0.0)
    temp = 55.5 + climate[:, None] - 22.0 * yearly + 6.5 * daily + weather - 2.0 * wet

    profile = np.where(weekend, _WEEKEND[hour], _WEEKDAY[hour])
    base = 5300.0 * profile * (1.0 + 0.03 * yearly)
    heat = heating[:, None] * np.clip(58.0 - temp, 0.0, None)
    cool = cooling[:, None] * np.clip(temp - 65.0, 0.0, None) * (0.55 + 0.45 * profile)
    noise = 1.0 + _ar1(rng, shape, phi=0.8, sd=0.025)
    demand = np.clip(scale[:, None] * (base + heat + cool) * noise, 1.0, None)
    return {"demand": np.round(demand, 3), "precip": precip, "temp": np.round(temp, 2)}


def generate_energy(
    partitions: int = 0, days: int | None = None, seed: int = 42, start: str = DEFAULT_START
) -> pd.DataFrame:
    """Hourly energy frame: ``timeStamp`` (datetime64), ``demand``, ``precip``, ``temp``.

    ``partitions`` 0 gives one series (default 365 days); N > 0 gives N regions stacked in long format with
    a categorical ``region`` column after ``timeStamp`` (default 60 days each), sorted by region then time.
    """
    if partitions < 0:
        raise ValueError(f"partitions must be >= 0, got {partitions}")
    days = days if days is not None else (DEFAULT_DAYS_PARTITIONED if partitions else DEFAULT_DAYS_SINGLE)
    if days <= 0:
        raise ValueError(f"days must be > 0, got {days}")
    times = pd.date_range(pd.Timestamp(start), periods=days * 24, freq="h")
    n = max(partitions, 1)
    parts: dict[str, list[np.ndarray]] = {"demand": [], "precip": [], "temp": []}
    for index, first in enumerate(range(0, n, _CHUNK)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))
        values = _chunk(rng, times, min(_CHUNK, n - first), single=partitions == 0)
        for key in parts:
            parts[key].append(values[key].ravel())
    frame = {"timeStamp": np.tile(times.to_numpy(), n)}
    if partitions:
        codes = np.repeat(np.arange(n, dtype=np.int32), len(times))
        frame[PARTITION_COLUMN] = pd.Categorical.from_codes(codes, categories=region_ids(n))
    frame.update({key: np.concatenate(arrays) for key, arrays in parts.items()})
    return pd.DataFrame(frame)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Like ``nyc_energy.csv``: ``YYYY-MM-DD HH:MM:SS``, no index; the same frame gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S", lineterminator="\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ff.data_generator", description="Write synthetic hourly energy demand as CSV."
    )
    parser.add_argument("--output", required=True, help="CSV file to write")
    parser.add_argument("--partitions", type=int, default=0, help="number of regions (0: one series)")
    parser.add_argument("--days", type=int, default=None, help="days per series (default 365, or 60 per region)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--start", default=DEFAULT_START, help="first time stamp (date)")
    args = parser.parse_args(argv)
    try:
        df = generate_energy(args.partitions, args.days, args.seed, args.start)
    except ValueError as exc:
        parser.error(str(exc))
    path = write_csv(df, Path(args.output))
    print(f"wrote {len(df)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
