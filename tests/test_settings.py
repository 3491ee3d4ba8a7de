from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ml_service.util.env_variables import (
    Settings,
    SettingsError,
    load_settings,
    parse_bool,
    settings_variables,
)
from tests.conftest import REPO_ROOT


def test_defaults_without_environment():
    settings = load_settings(environ={}, env_file=None)
    assert settings == Settings()
    assert settings.run_evaluation is True
    assert settings.scoring_port == 5001
    assert settings.tracking_uri.startswith("sqlite:///") and settings.tracking_uri.endswith("local/mlflow.db")


@pytest.mark.parametrize("raw,expected", [("true", True), ("FALSE", False), ("1", True), ("no", False), (" on ", True)])
def test_booleans_are_real_booleans(raw, expected):
    assert load_settings(environ={"RUN_EVALUATION": raw}, env_file=None).run_evaluation is expected


def test_invalid_boolean_names_variable_and_accepted_values():
    with pytest.raises(SettingsError) as error:
        load_settings(environ={"RUN_EVALUATION": "maybe"}, env_file=None)
    message = str(error.value)
    assert "\n" not in message
    assert "RUN_EVALUATION" in message and "'maybe'" in message
    assert "true" in message and "false" in message


def test_invalid_port_and_number():
    with pytest.raises(SettingsError, match="SCORING_PORT"):
        load_settings(environ={"SCORING_PORT": "70000"}, env_file=None)
    with pytest.raises(SettingsError, match="MAX_WORKERS='many' is not a whole number"):
        load_settings(environ={"MAX_WORKERS": "many"}, env_file=None)


def test_env_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SCORING_PORT=6000\nBUILD_ID=from-file\nRUN_EVALUATION=false\n")
    from_file = load_settings(environ={}, env_file=env_file)
    assert (from_file.scoring_port, from_file.build_id, from_file.run_evaluation) == (
        6000,
        "from-file",
        False,
    )
    overridden = load_settings(environ={"BUILD_ID": "from-env"}, env_file=env_file)
    assert overridden.build_id == "from-env"


def test_tracking_uri_override_is_used_verbatim():
    uri = "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/x/resourceGroups/y/providers/z/workspaces/w"
    assert load_settings(environ={"MLFLOW_TRACKING_URI": uri}, env_file=None).tracking_uri == uri


def test_parse_bool_rejects_empty():
    with pytest.raises(SettingsError):
        parse_bool("X", "")


def test_env_example_documents_every_variable_with_its_default():
    text = (REPO_ROOT / ".env.example").read_text()
    documented = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    expected = {
        name: str(default).lower() if isinstance(default, bool) else str(default)
        for name, default, _ in settings_variables()
    }
    assert documented == expected


def test_import_does_no_work(tmp_path):
    """Bad values only fail when settings are loaded, never at import (a fresh process: reloading the module
    here would leave other tests holding a stale SettingsError class)."""
    code = (
        "import ml_service.util.env_variables as m\n"
        "try:\n    m.load_settings()\nexcept m.SettingsError as e:\n    print('raised:', e)\n"
    )
    env = {**os.environ, "RUN_EVALUATION": "maybe", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("raised: RUN_EVALUATION='maybe'")
