"""Fail in seconds, not minutes, when the MLflow tracking server cannot be reached.

MLflow retries a refused connection 7 times with exponential backoff (about 4 minutes) and then ends in a
traceback. Before the registry connects, a remote (http/https) tracking URI is probed once with short timeouts,
and MLflow's own retries are bounded for the rest of the process.
"""

from __future__ import annotations

import os
import re

from ml_service.util.env_variables import Settings, SettingsError

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
# For this process only, and only when the user has not chosen them: a server that goes away after the probe
# costs seconds of retries, not minutes. 30 s per socket operation still lets large artifacts upload.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _reason(exc: Exception) -> str:
    """The OS's words for a failed connection ("Connection refused"), not urllib3's nested repr."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return found[-1].strip() if found else type(exc).__name__


def check_tracking_uri(
    settings: Settings, connect_timeout_s: float = CONNECT_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S
) -> None:
    """Raise SettingsError (one line naming MLFLOW_TRACKING_URI and the URL tried) if an http(s) tracking server
    does not answer within the timeouts. Any HTTP answer counts, even 401 or 404: the server is there, and
    what it says is MLflow's to report. Other schemes are local or need credentials, and are not probed.
    """
    uri = settings.tracking_uri
    if not uri.lower().startswith(("http://", "https://")):
        return
    for name, value in BOUNDED_HTTP.items():
        os.environ.setdefault(name, value)
    import requests  # MLflow's own HTTP client; imported here so loading settings stays light

    url = uri.rstrip("/") + "/health"
    try:
        requests.get(url, timeout=(connect_timeout_s, read_timeout_s), allow_redirects=False)
        return
    except requests.exceptions.SSLError:
        return  # a TLS handshake took place: reachable; certificate settings are MLflow's (MLFLOW_TRACKING_*)
    except requests.exceptions.ConnectTimeout:
        reason = f"no connection within {connect_timeout_s:g} s"
    except requests.exceptions.ReadTimeout:
        reason = f"connected, but no answer within {read_timeout_s:g} s"
    except requests.exceptions.RequestException as exc:
        reason = _reason(exc)
    raise SettingsError(f"MLFLOW_TRACKING_URI={uri!r}: no tracking server reachable (tried GET {url}: {reason})")
