"""Data generator, copy_data and prepare: determinism, realism, bad data, regularisation, partitions."""

import pandas as pd
import pytest

from ff.config import load_pipeline_config
from ff.copy_data import copy_raw_data, materialize_raw_data
from ff.data_generator import generate_energy, main, write_csv
from ff.prepare import (
    DataValidationError,
    check_frame,
    model_id,
    parse_partition_key,
    partition_key,
    prepare_file,
    prepare_frame,
    read_csv,
    read_prepared,
    schema_for,
    split_partitions,
)

CONFIG = load_pipeline_config()
ENERGY = CONFIG.get("nyc_energy_model")
REGIONS = CONFIG.get("nyc_energy_regions_model")
DIABETES = CONFIG.get("diabetes_model")


def test_same_seed_gives_byte_identical_csv(tmp_path):
    assert main(["--output", str(tmp_path / "a.csv"), "--partitions", "3", "--days", "5", "--seed", "3"]) == 0
    assert main(["--output", str(tmp_path / "b.csv"), "--partitions", "3", "--days", "5", "--seed", "3"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    write_csv(generate_energy(3, days=5, seed=4), tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "timeStamp,region,demand,precip,temp"
    assert lines[1].startswith("2016-08-01 00:00:00,r0000,")
    assert len(lines) == 1 + 3 * 5 * 24


def test_single_series_is_nyc_like():
    df = generate_energy()
    assert list(df.columns) == ["timeStamp", "demand", "precip", "temp"]
    assert len(df) == 365 * 24 and df.notna().all().all()
    assert 5000 < df.demand.mean() < 7000 and 2500 < df.demand.min() and df.demand.max() < 12000
    assert df.demand.quantile(0.05) > 3000 and df.demand.quantile(0.95) < 9500
    assert 45 < df.temp.mean() < 65 and -5 < df.temp.min() and df.temp.max() < 105
    assert 0.05 < (df.precip > 0).mean() < 0.2 and df.precip.min() == 0 and df.precip.max() < 3
    hourly = df.groupby(df.timeStamp.dt.hour).demand.mean()
    assert hourly.idxmin() in range(2, 7) and hourly.idxmax() in range(12, 20)
    weekly = df.groupby(df.timeStamp.dt.day_of_week).demand.mean()
    assert weekly[[5, 6]].max() < weekly[[0, 1, 2, 3, 4]].min()
    by_temp = df.groupby(pd.cut(df.temp, [-50, 30, 60, 85, 150])).demand.mean().to_numpy()
    assert by_temp[1] < by_temp[0] and by_temp[1] < by_temp[2] < by_temp[3]  # U shape, cooling steeper


def test_many_partitions_vectorised():
    df = generate_energy(10_000, days=2, seed=1)
    assert len(df) == 10_000 * 48 and df.region.nunique() == 10_000
    assert df.region.iloc[0] == "r0000" and df.region.iloc[-1] == "r9999"
    scales = df.groupby("region", observed=True).demand.mean()
    assert scales.std() > 0.1 * scales.mean()  # regions differ


def test_copy_and_materialize(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    assert copy_raw_data(source, tmp_path / "store").read_text() == "a,b\n1,2\n"
    path = materialize_raw_data(REGIONS, tmp_path / "store")
    assert path == tmp_path / "store" / "nyc_energy_regions_model" / "raw.csv"
    assert read_csv(path).region.nunique() == REGIONS.data.generator.partitions
    with pytest.raises(FileNotFoundError):
        copy_raw_data(tmp_path / "absent.csv", tmp_path / "store")


def _energy_csv(tmp_path, mutate=None, name="raw.csv"):
    df = generate_energy(days=30)
    df["timeStamp"] = df.timeStamp.dt.strftime("%Y-%m-%d %H:%M:%S")
    if mutate:
        df = mutate(df)
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _problems(tmp_path, mutate) -> str:
    path = _energy_csv(tmp_path, mutate)
    with pytest.raises(DataValidationError) as info:
        prepare_file(path, tmp_path / "out", ENERGY)
    assert str(path) in str(info.value)
    return str(info.value)


def test_prepare_rejects_bad_data(tmp_path):
    assert "column 'temp': missing" in _problems(tmp_path, lambda d: d.drop(columns="temp"))

    def text_in_demand(d):
        d["demand"] = d.demand.astype(object)
        d.loc[5, "demand"] = "lots"
        return d

    assert "column 'demand': 1 values are not numbers (e.g. 'lots')" in _problems(tmp_path, text_in_demand)

    def hot(d):
        d.loc[3, "temp"] = 500.0
        return d

    assert "column 'temp': 1 values outside [-60, 130] (e.g. 500.0)" in _problems(tmp_path, hot)

    def bad_time(d):
        d.loc[2, "timeStamp"] = "yesterday"
        return d

    assert "column 'timeStamp': 1 values are not date/times" in _problems(tmp_path, bad_time)
    assert "no rows" in _problems(tmp_path, lambda d: d.iloc[0:0])
    assert "only 100 rows, need at least 336" in _problems(tmp_path, lambda d: d.head(100))


def test_read_csv_rejects_empty_and_non_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="empty.csv: file is empty"):
        read_csv(empty)
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DataValidationError, match="not a CSV"):
        read_csv(binary)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text('a,b\n1,2\n3,"4\n')
    with pytest.raises(DataValidationError, match="not a CSV"):
        read_csv(ragged)
    with pytest.raises(DataValidationError, match="file not found"):
        read_csv(tmp_path / "absent.csv")


def test_check_frame_returns_every_problem():
    df = pd.DataFrame({"AGE": [30, 200], "SEX": [1, 2], "BMI": [20, 30], "BP": [80, 90]})
    for column in ("S1", "S2", "S3", "S4", "S5", "S6"):
        df[column] = 1.0
    df["Y"] = [-5.0, 100.0]
    problems = check_frame(df, schema_for(DIABETES))
    assert any("'AGE': 1 values outside [0, 120]" in p for p in problems)
    assert any("'Y': 1 values outside [0, inf]" in p for p in problems)
    assert any("only 2 rows" in p for p in problems)


def test_prepare_regularises_hours_and_drops_unlabelled_tail(tmp_path):
    def gaps_and_tail(d):
        d = d.drop(index=[10, 11, 400]).copy()  # three missing hours
        d.loc[d.index[-5:], "demand"] = None  # future hours without a label yet
        d.loc[d.index[-5:-2], "temp"] = None
        d.loc[50, "precip"] = None  # one interior gap in a feature
        d["unused"] = "dropped by prepare"
        return d.sample(frac=1, random_state=0)  # unsorted

    paths = prepare_file(_energy_csv(tmp_path, gaps_and_tail), tmp_path / "out", ENERGY)
    df = read_prepared(paths[""], ENERGY)
    assert list(df.columns) == ["timeStamp", "demand", "precip", "temp"]
    assert len(df) == 30 * 24 - 5
    assert (df.timeStamp.diff().dropna() == pd.Timedelta(hours=1)).all()
    assert df.notna().all().all()
    original = generate_energy(days=30)
    assert df.demand.iloc[10] == pytest.approx((original.demand.iloc[9] * 2 + original.demand.iloc[12]) / 3)


def test_public_style_csv_works_unchanged(tmp_path):
    """The public nyc_energy.csv layout: irregular hours and NaNs in every column near the end."""
    df = generate_energy(days=20)
    df["timeStamp"] = df.timeStamp.dt.strftime("%Y-%m-%d %H:%M:%S")
    df = df.drop(index=[100, 200]).reset_index(drop=True)
    df.loc[len(df) - 30 :, ["demand", "precip", "temp"]] = None
    path = tmp_path / "nyc_energy.csv"
    df.to_csv(path, index=False)
    parts = prepare_file(path, tmp_path / "out", ENERGY)
    prepared = read_prepared(parts[""], ENERGY)
    assert len(prepared) == 20 * 24 - 30 and prepared.notna().all().all()


def test_split_partitions_and_keys(tmp_path):
    df = generate_energy(4, days=10, seed=5)
    parts = prepare_frame(df.sample(frac=1, random_state=1), REGIONS)
    assert list(parts) == ["region=r0000", "region=r0001", "region=r0002", "region=r0003"]
    for key, part in parts.items():
        assert len(part) == 240 and part.region.astype(str).eq(parse_partition_key(key)["region"]).all()
        assert part.timeStamp.is_monotonic_increasing
    raw = pd.DataFrame({"shop": ["a/b", "a/b", "c d"], "kind": ["x", "y", "x"], "v": [1, 2, 3]})
    split = split_partitions(raw, ["shop", "kind"])
    assert list(split) == ["shop=a%2Fb,kind=x", "shop=a%2Fb,kind=y", "shop=c%20d,kind=x"]
    assert parse_partition_key("shop=a%2Fb,kind=x") == {"shop": "a/b", "kind": "x"}
    assert partition_key(["region"], ["r0001"]) == "region=r0001"
    assert model_id("nyc_energy_regions_model", "region=r0001") == "nyc_energy_regions_model/region=r0001"
    assert model_id("nyc_energy_model") == "nyc_energy_model"
    assert split_partitions(raw, []) == {"": raw}


def test_partitioned_prepare_writes_one_file_each(tmp_path):
    raw = write_csv(generate_energy(3, days=10, seed=2), tmp_path / "raw.csv")
    paths = prepare_file(raw, tmp_path / "prepared", REGIONS)
    assert sorted(p.relative_to(tmp_path / "prepared").as_posix() for p in paths.values()) == [
        "region=r0000.csv",
        "region=r0001.csv",
        "region=r0002.csv",
    ]
    one = read_prepared(paths["region=r0001"], REGIONS)
    assert len(one) == 240 and set(one.region) == {"r0001"}


def test_partition_too_small_is_reported():
    df = generate_energy(2, days=10)
    df = df[~((df.region == "r0001") & (df.timeStamp > df.timeStamp.min() + pd.Timedelta(days=3)))]
    with pytest.raises(DataValidationError, match=r"1 partitions have fewer than 168 rows \(e.g. r0001"):
        prepare_frame(df, REGIONS, "regions.csv")
