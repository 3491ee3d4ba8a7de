"""Write data/diabetes.csv from scikit-learn's bundled raw diabetes data (no network needed).

The columns and values match Azure's "Sample: Diabetes" open dataset: unscaled, upper-case names, target `Y`.
Run: python data/create_diabetes_csv.py [--output data/diabetes.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_diabetes

COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6", "Y"]


def diabetes_frame() -> pd.DataFrame:
    bunch = load_diabetes(scaled=False, as_frame=True)
    frame = bunch.frame.rename(columns=str.upper).rename(columns={"TARGET": "Y"})
    return frame[COLUMNS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("diabetes.csv"))
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    diabetes_frame().to_csv(args.output, index=False)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
