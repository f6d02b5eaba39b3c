"""A funnel over HTTP: MLflow's own scoring server (``mlflow models serve``) on a registered funnel.

The registered funnel is a ``python_function`` model (:mod:`rankpipe.ranking.funnel_model`), so the
server MLflow users already run answers ``POST /invocations`` with the ranked lists::

    rankpipe serve --port 5001                     # the dataset's champion, from ./rankpipe-work
    curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d '{
      "dataframe_split": {"columns": ["request_id", "user_id", "ts", "query"],
                          "data": [["r1", "u42", "2026-12-08T09:00:00Z", null]]}}'

The answer is ``{"predictions": [...]}``, one record per listed item (``LIST_COLUMNS``), the lists
``rankpipe score`` writes for the same requests. ``params: {"allow_past": true}`` scores requests
timed before the funnel's cutoff. A saved funnel directory (a run's ``promote/funnel``) is served by
wrapping it as an MLflow model first (:func:`mlflow_model_of`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from rankpipe.pipeline.schema import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def mlflow_model_of(funnel_directory: str | Path, into: str | Path) -> Path:
    """``funnel_directory`` (as :meth:`~rankpipe.ranking.funnel.Funnel.save` wrote it) saved as an
    MLflow ``python_function`` model under ``into`` (the form the registry holds), for the server."""
    import warnings

    import mlflow

    from rankpipe.ranking.funnel_model import funnel_requirements, funnel_signature

    into = Path(into)
    with warnings.catch_warnings():  # "no input example": the funnel checks its requests itself (signature: params only)
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(str(into), loader_module="rankpipe.ranking.funnel_model", data_path=str(funnel_directory),
                                 pip_requirements=funnel_requirements(funnel_directory), signature=funnel_signature())
    return into


def server_command(model_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow models serve`` command line for ``model_uri``, in this environment (no new one built)."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", host, "--port", str(port)]


def server_environment(tracking_uri: str | None) -> dict[str, str]:
    """This process's environment for the server, with ``tracking_uri`` and this interpreter's scripts
    first on PATH: MLflow starts ``uvicorn`` by name, which an unactivated virtual environment lacks."""
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else env


@contextlib.contextmanager
def http_server(model_uri: str, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                timeout_s: float = 180) -> Iterator[str]:
    """Run ``mlflow models serve`` on ``model_uri`` (``models:/…``, ``runs:/…`` or an MLflow model
    directory), wait until it answers ``/ping``, yield its base URL, and stop it on the way out.

    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout_s`` (with its last output).
    """
    port = port or free_port(host)
    with tempfile.TemporaryFile() as output:
        server = subprocess.Popen(server_command(model_uri, host, port), env=server_environment(tracking_uri), stdout=output,
                                  stderr=subprocess.STDOUT)

        def said() -> str:
            output.seek(0)
            return output.read().decode(errors="replace")[-3000:]

        try:
            base, deadline = f"http://{host}:{port}", time.monotonic() + timeout_s
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited with {server.returncode}:\n{said()}")
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mlflow models serve did not answer /ping within {timeout_s:.0f} s:\n{said()}") from None
                    time.sleep(0.25)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def ask(base_url: str, requests: pd.DataFrame, allow_past: bool = False, timeout_s: float = 60) -> pd.DataFrame:
    """POST ``requests`` (request_id, user_id, ts[, query]) to a served funnel; its lists as a frame."""
    frame = requests.copy()
    if "ts" in frame and pd.api.types.is_datetime64_any_dtype(frame["ts"]):
        frame["ts"] = frame["ts"].map(pd.Timestamp.isoformat)  # JSON has no time type: ISO-8601, as the funnel reads it
    body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False)), "params": {"allow_past": bool(allow_past)}}
    request = urllib.request.Request(f"{base_url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as reply:
        return pd.DataFrame(json.loads(reply.read())["predictions"])


def serve(model_uri: str | None, workdir: str | Path, dataset: str, host: str, port: int) -> int:
    """``rankpipe serve``: the funnel ``model_uri`` names (default: the dataset's champion in
    ``workdir``'s MLflow) behind ``mlflow models serve`` until interrupted; returns its exit code."""
    from rankpipe.pipeline.scoring import champion_uri, funnel_directory

    with tempfile.TemporaryDirectory(prefix="rankpipe-serve-") as tmp:
        tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"
        if model_uri and "://" not in model_uri and not model_uri.startswith("models:/"):
            uri = str(mlflow_model_of(funnel_directory(model_uri, workdir, dataset), Path(tmp) / "model"))  # a saved funnel directory
        else:
            if model_uri is None:
                if not Path(workdir, "mlflow.db").exists() and "MLFLOW_TRACKING_URI" not in os.environ:
                    raise ConfigError(f"no MLflow store in {workdir}: run `rankpipe run` first, or pass --model-uri")
                import mlflow

                mlflow.set_tracking_uri(tracking)
                mlflow.set_registry_uri(tracking)
                uri = champion_uri(mlflow.MlflowClient(), dataset)
            else:
                uri = model_uri
        print(f"serving {uri} at http://{host}:{port}/invocations (Ctrl-C stops it)", file=sys.stderr)
        return subprocess.run(server_command(uri, host, port), env=server_environment(tracking), check=False).returncode
