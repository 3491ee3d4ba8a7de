"""A wrong tracking URI or a misspelt variable is reported in seconds, in one line, by the real commands."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import ml_service.util.env_variables as env_variables
from ml_service.util.env_variables import Settings, SettingsError, load_settings, settings_variables
from ml_service.util.tracking_uri import BOUNDED_HTTP, check_tracking_uri
from tests.conftest import run_module

# generous: proves there is no multi-minute hang (MLflow's own retries take about 4 minutes), not a speed target
NO_HANG_S = 30


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test starts as a new process would: nothing warned about yet."""
    monkeypatch.setattr(env_variables, "_warned", set())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def uri_settings(uri: str) -> Settings:
    return load_settings(environ={"MLFLOW_TRACKING_URI": uri}, env_file=None)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- the form of the tracking URI, checked when settings load ---


@pytest.mark.parametrize(
    "uri,expected",
    [
        ("sqllite:///tmp/x.db", "unknown scheme 'sqllite:' (did you mean sqlite:///"),
        ("htp://127.0.0.1:5000", "unknown scheme 'htp:'"),
        ("sqlite://x.db", "three slashes"),
        ("http://", "names no host"),
        ("azureml://", "names no host"),
        ("file:", "names no folder"),
        ("mlruns", "has no scheme"),
    ],
)
def test_malformed_tracking_uri_fails_in_one_line_naming_the_variable(uri, expected):
    with pytest.raises(SettingsError) as error:
        uri_settings(uri)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"MLFLOW_TRACKING_URI={uri!r} ")
    assert expected in message


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////tmp/mlflow.db",
        "sqlite:///relative/mlflow.db",
        "file:///tmp/mlruns",
        "http://127.0.0.1:5000",
        "https://mlflow.example.com/prefix/",
        "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/r/providers/"
        "Microsoft.MachineLearningServices/workspaces/w",
        "databricks",
        "databricks://profile",
        "postgresql+psycopg2://user@db.example.com/mlflow",
    ],
)
def test_well_formed_tracking_uris_are_accepted(uri):
    assert uri_settings(uri).tracking_uri == uri


def test_several_bad_variables_are_reported_together_on_one_line():
    with pytest.raises(SettingsError) as error:
        load_settings(environ={"SCORING_PORT": "0", "MAX_WORKERS": "-1", "SCORING_WORKERS": "two"}, env_file=None)
    message = str(error.value)
    assert "\n" not in message
    assert "MAX_WORKERS='-1' must be at least 0" in message
    assert "SCORING_PORT='0' must be at least 1" in message
    assert "SCORING_WORKERS='two' is not a whole number" in message


@pytest.mark.parametrize("raw", ["t", "y", "2", "enabled"])
def test_only_the_documented_boolean_words_are_booleans(raw):
    # pydantic alone would take "t" and "y"; .env.example promises true/false, 1/0, yes/no, on/off
    with pytest.raises(SettingsError, match=f"RUN_EVALUATION='{raw}' is not a boolean"):
        load_settings(environ={"RUN_EVALUATION": raw}, env_file=None)


def test_constructing_settings_validates_too():
    with pytest.raises(ValueError, match="unknown scheme"):
        Settings(mlflow_tracking_uri="sqllite:///x")


# --- reachability of an http(s) tracking server, checked when the registry connects ---


def test_closed_port_fails_at_once_naming_variable_and_url(monkeypatch):
    for name in BOUNDED_HTTP:
        monkeypatch.delenv(name, raising=False)
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(SettingsError) as error:
        check_tracking_uri(uri_settings(uri))
    assert time.monotonic() - started < NO_HANG_S
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"MLFLOW_TRACKING_URI={uri!r}")
    assert f"GET {uri}/health" in message and "refused" in message.lower()
    # MLflow's own retries are bounded for the rest of the process
    assert {name: os.environ[name] for name in BOUNDED_HTTP} == BOUNDED_HTTP


def test_users_own_mlflow_http_settings_are_kept(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    with pytest.raises(SettingsError):
        check_tracking_uri(uri_settings(f"http://127.0.0.1:{closed_port()}"))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"


def test_server_that_accepts_but_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SettingsError, match="connected, but no answer within 0.5 s"):
            check_tracking_uri(uri_settings(uri), connect_timeout_s=0.5, read_timeout_s=0.5)


def test_any_http_answer_means_reachable():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_tracking_uri(uri_settings(f"http://127.0.0.1:{server.server_address[1]}/"))
    finally:
        server.shutdown()
        server.server_close()


def test_local_store_is_not_probed(tmp_path):
    check_tracking_uri(uri_settings(f"sqlite:///{tmp_path / 'mlflow.db'}"))  # no server involved: returns


def test_registry_connect_checks_reachability():
    from ml_service.registry.mlflow_registry import connect

    with pytest.raises(SettingsError, match="no tracking server reachable"):
        connect(uri_settings(f"http://127.0.0.1:{closed_port()}"))


# --- real commands: exit code 2, one line on stderr, within seconds ---


def timed_run(module: str, *args: str, **kwargs):
    started = time.monotonic()
    result = run_module(module, *args, timeout=120, **kwargs)
    return result, time.monotonic() - started


def test_package_with_unreachable_tracking_server_exits_2_in_seconds(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    output = tmp_path / "ctx"
    result, elapsed = timed_run("ml_service.scoring.package", "--output", str(output), env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr
    assert elapsed < NO_HANG_S
    line = one_line(result.stderr)
    assert "MLFLOW_TRACKING_URI" in line and f"{uri}/health" in line
    assert not output.exists()


def test_package_with_misspelt_scheme_exits_2_with_one_line(tmp_path):
    result, elapsed = timed_run(
        "ml_service.scoring.package", "--output", str(tmp_path / "ctx"), env={"MLFLOW_TRACKING_URI": "sqllite:///x"}
    )
    assert result.returncode == 2, result.stderr
    assert elapsed < NO_HANG_S
    line = one_line(result.stderr)
    assert "MLFLOW_TRACKING_URI='sqllite:///x'" in line and "sqlite:///" in line


def test_serve_from_unreachable_registry_exits_2_with_one_line():
    uri = f"http://127.0.0.1:{closed_port()}"
    result, elapsed = timed_run("ml_service.scoring.serve", env={"MLFLOW_TRACKING_URI": uri})
    assert result.returncode == 2, result.stderr
    assert elapsed < NO_HANG_S
    assert "MLFLOW_TRACKING_URI" in one_line(result.stderr)


@pytest.mark.parametrize(
    "module,args",
    [
        ("ml_service.pipelines.azureml.run_pipeline", ("--use-case", "any", "--dry-run")),
        ("ml_service.scoring.deploy.aci", ("--name", "svc", "--package", "pkg", "--dry-run", "--plain-http")),
        ("ml_service.util.serve_and_smoke_test", ("--package", "pkg")),
    ],
)
def test_other_commands_report_bad_settings_in_one_line(module, args, tmp_path):
    result = run_module(module, *args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": "sqllite:///x"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "MLFLOW_TRACKING_URI='sqllite:///x'" in one_line(result.stderr)


# --- variables that look like the project's but are not its settings ---


def write_env(folder: Path, text: str) -> Path:
    path = folder / ".env"
    path.write_text(text)
    return path


def test_near_miss_in_env_file_warns_naming_the_closest_setting(tmp_path, capsys):
    env_file = write_env(tmp_path, "SCORING_PROT=5905\nPROJET_ROOT=.\n")
    settings = load_settings(environ={}, env_file=env_file)
    assert settings.scoring_port == 5001  # the misspelt one has no effect: that is what the warning is for
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "SCORING_PROT" in err[0] and "did you mean SCORING_PORT?" in err[0]
    assert "PROJET_ROOT" in err[1] and "did you mean PROJECT_ROOT?" in err[1]


def test_family_prefix_in_env_file_warns_even_without_a_near_miss(tmp_path, capsys):
    env_file = write_env(tmp_path, "SCORING_TIMEOUT_SECONDS=5\nMLFLOW_TRACKING_TOKEN=abc\n")
    load_settings(environ={}, env_file=env_file)
    err = capsys.readouterr().err
    assert "SCORING_TIMEOUT_SECONDS is not a setting" in err and "did you mean SCORING_" in err
    assert "MLFLOW_TRACKING_TOKEN is not a setting" in err and "did you mean MLFLOW_TRACKING_URI?" in err


def test_unrelated_and_known_entries_are_not_warned_about(tmp_path, capsys):
    lines = [f"{name}={default}" for name, default, _ in settings_variables()]
    env_file = write_env(tmp_path, "\n".join([*lines, "PYTHONUNBUFFERED=1", "MY_OWN_THING=x", "MLOPS_DEBUG=1"]))
    load_settings(environ={}, env_file=env_file)
    assert capsys.readouterr().err == ""


def test_warned_once_per_process(tmp_path, capsys):
    env_file = write_env(tmp_path, "SCORING_PROT=5905\n")
    for _ in range(3):
        load_settings(environ={}, env_file=env_file)
    assert capsys.readouterr().err.count("SCORING_PROT") == 1


def test_environment_near_miss_in_the_projects_own_family_warns(capsys):
    load_settings(environ={"SCORING_PROT": "5905", "AML_COMPUTE_CLUSTR_NAME": "x"}, env_file=None)
    err = capsys.readouterr().err
    assert "did you mean SCORING_PORT?" in err and "did you mean AML_COMPUTE_CLUSTER_NAME?" in err


def test_other_tools_environment_variables_are_left_alone(capsys):
    """MLflow's, Azure's, Azure DevOps' and Dask's own variables are not misspelt settings."""
    import mlflow.environment_variables as mlflow_variables

    settings = {name for name, _, _ in settings_variables()}
    defined = [getattr(v, "name", None) for v in vars(mlflow_variables).values()]
    mlflow_names = [n for n in defined if isinstance(n, str) and n.startswith("MLFLOW_") and n not in settings]
    assert len(mlflow_names) > 100  # the list is real: MLflow defines its variables there
    others = [
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "BUILD_BUILDID",
        "BUILD_BUILDURI",
        "DASK_SCHEDULER",
        "AML_PARAMETER_A",
    ]
    load_settings(environ=dict.fromkeys([*mlflow_names, *others, "SCORING_PACKAGE_DIR"], "1"), env_file=None)
    assert capsys.readouterr().err == ""


def test_a_command_warns_about_a_misspelt_env_file_entry(tmp_path):
    write_env(tmp_path, "SCORING_PROT=5905\n")
    result = run_module("ml_service.util.serve_and_smoke_test", "--package", "missing", cwd=tmp_path, timeout=120)
    assert result.returncode == 2  # no package: the command still runs after warning
    warning, error = result.stderr.strip().splitlines()
    assert warning.startswith("warning: .env: SCORING_PROT") and warning.endswith("did you mean SCORING_PORT?")
    assert "package folder" in error
