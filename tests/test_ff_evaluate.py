import pytest

from ff.evaluate import decide, is_better


def test_first_model_and_failures():
    assert decide({"mape": 0.1}, None, "mape", "minimize") == (True, "new model, mape=0.1")
    assert decide(None, {"mape": 0.1}, "mape", "minimize") == (False, "training failed")


def test_strictly_better_by_direction():
    assert decide({"mape": 0.09}, {"mape": 0.1}, "mape", "minimize")[0]
    assert not decide({"mape": 0.1}, {"mape": 0.1}, "mape", "minimize")[0]
    assert decide({"r2": 0.8}, {"r2": 0.7}, "r2", "maximize")[0]
    assert decide({"r2": 0.6}, {"r2": 0.7}, "r2", "maximize") == (False, "r2=0.6 vs production 0.7: not better")
    with pytest.raises(ValueError, match="direction"):
        is_better(1.0, 2.0, "down")
