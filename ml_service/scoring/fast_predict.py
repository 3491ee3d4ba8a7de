"""Exact fast paths for models whose own ``predict`` spends most of a call on per-call overhead.

Why: a scikit-learn forest predicts tree by tree through joblib, and scikit-learn wraps every tree's task to
re-apply the caller's configuration and every warnings filter of the process (``sklearn.utils.parallel``). Measured
on this 2-core machine: ~35 µs of that per tree against ~2 µs for walking the tree, so a 127-tree ExtraTrees
forest cost ~5 ms a call for 1 row or 32, and the trees themselves ~0.3 ms of it.

``fast_predict(model)`` returns a function computing what ``model.predict`` computes — the same input check, the
same per-tree arrays summed into the same float64 array in the same (tree) order, the same division — so the
same bits, without the per-tree wrapper; or None when it knows no such path. Known: scikit-learn's
``RandomForestRegressor`` / ``ExtraTreesRegressor`` (any number of outputs) and ``RandomForestClassifier`` /
``ExtraTreesClassifier`` (one output) whose ``n_jobs`` makes scikit-learn predict on one thread (with several
threads it sums the trees in the order they finish, so its own answer varies in the last bits: those keep their
own ``predict``); XGBoost's ``XGBRegressor`` given a frame of float columns (XGBoost inspects every column's
pandas dtype on every call, parsing version strings as it goes: ~3.5 ms of a 3.7 ms call for 1,477 small trees;
the same values as one float array predict in ~0.3 ms — XGBoost casts each value to float32 either way); and a
``Pipeline`` of transformers ending in one of them. Exact types only: a subclass may predict differently.

``verified_fast_predict(model, features)`` is what the service uses: the fast path only if, on the model's sample
rows in batches of several sizes, it gives exactly (bit for bit, same dtype) what ``model.predict`` gives — a
guard against a scikit-learn release changing how a forest predicts. Tested against scikit-learn's own predict.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Predict = Callable[[Any], np.ndarray]


def _sequential(forest: Any) -> bool:
    """Whether scikit-learn's predict of ``forest`` runs its trees one after another on the calling thread."""
    from joblib import effective_n_jobs

    return effective_n_jobs(forest.n_jobs) == 1 or len(forest.estimators_) == 1


def _forest(model: Any) -> Predict | None:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, ExtraTreeClassifier, ExtraTreeRegressor

    kind = type(model)
    if kind not in (RandomForestRegressor, ExtraTreesRegressor, RandomForestClassifier, ExtraTreesClassifier):
        return None
    trees = getattr(model, "estimators_", None)
    if not trees or not _sequential(model):
        return None
    regressor = kind in (RandomForestRegressor, ExtraTreesRegressor)
    tree_kinds = (
        (DecisionTreeRegressor, ExtraTreeRegressor) if regressor else (DecisionTreeClassifier, ExtraTreeClassifier)
    )
    if any(type(tree) not in tree_kinds for tree in trees):
        return None
    structures = [tree.tree_ for tree in trees]
    count = len(trees)
    if regressor:
        outputs = model.n_outputs_

        def predict_regression(x: Any) -> np.ndarray:
            x = model._validate_X_predict(x)
            total = np.zeros((x.shape[0], outputs) if outputs > 1 else x.shape[0], dtype=np.float64)
            for structure in structures:
                values = structure.predict(x)
                total += values[:, 0] if outputs == 1 else values[:, :, 0]
            total /= count
            return total

        return predict_regression
    if model.n_outputs_ != 1:
        return None
    classes, n_classes = model.classes_, model.n_classes_

    def predict_class(x: Any) -> np.ndarray:
        x = model._validate_X_predict(x)
        total = np.zeros((x.shape[0], n_classes), dtype=np.float64)
        for structure in structures:
            total += structure.predict(x)[:, :n_classes]
        total /= count
        return classes.take(np.argmax(total, axis=1), axis=0)

    return predict_class


def _pipeline(model: Any) -> Predict | None:
    from sklearn import get_config
    from sklearn.pipeline import Pipeline

    if type(model) is not Pipeline or not model.steps or get_config().get("enable_metadata_routing"):
        return None
    final = fast_predict(model.steps[-1][1])
    if final is None:
        return None
    transforms = [step for _, step in model.steps[:-1] if step is not None and not _is_passthrough(step)]

    def predict_pipeline(x: Any) -> np.ndarray:
        for transform in transforms:
            x = transform.transform(x)
        return final(x)

    return predict_pipeline


def _is_passthrough(step: Any) -> bool:
    return isinstance(step, str) and step == "passthrough"


def _xgboost(model: Any) -> Predict | None:
    from xgboost import XGBRegressor

    if type(model) is not XGBRegressor or not model._can_use_inplace_predict():
        return None
    booster = model.get_booster()
    names = booster.feature_names
    iterations = model._get_iteration_range(None)  # best_iteration when trained with early stopping
    missing, own = model.missing, model.predict

    def predict_xgboost(x: Any) -> np.ndarray:
        # a frame of float columns named as in training: the same values as one array, so XGBoost skips its
        # per-call pandas inspection; anything else (other dtypes, names, arrays) goes to the model's own predict
        frame = getattr(x, "dtypes", None) is not None and hasattr(x, "columns")
        if not frame or names is None or list(x.columns) != names or any(d.kind != "f" for d in x.dtypes):
            return own(x)
        values = x.to_numpy()
        return booster.inplace_predict(
            data=values, iteration_range=iterations, predict_type="value", missing=missing, validate_features=False
        )

    return predict_xgboost


def fast_predict(model: Any) -> Predict | None:
    """A function computing exactly ``model.predict`` with less overhead, or None (see the module docstring)."""
    library = type(model).__module__.split(".")[0]
    try:
        if library == "sklearn":
            return _pipeline(model) or _forest(model)
        if library == "xgboost":
            return _xgboost(model)
    except (AttributeError, TypeError, ValueError):  # an unexpected layout: no fast path, the model's own predict
        return None
    return None


def verified_fast_predict(model: Any, batches: Sequence[Any]) -> Predict | None:
    """``fast_predict(model)`` if it gives bit for bit what ``model.predict`` gives on every input of ``batches``
    (the model's sample rows in several batch sizes, converted as the service converts them), else None."""
    fast = fast_predict(model)
    if fast is None or not batches:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "X does not have valid feature names": both paths would warn
            for features in batches:
                expected, actual = np.asarray(model.predict(features)), np.asarray(fast(features))
                same = expected.dtype == actual.dtype and np.array_equal(
                    expected, actual, equal_nan=expected.dtype.kind == "f"
                )
                if not same:
                    return None
    except Exception:  # noqa: BLE001 - a path that fails where the model does not is simply not used
        return None
    return fast
