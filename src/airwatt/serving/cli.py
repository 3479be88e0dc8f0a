"""`airwatt serve`: start the BentoML service (serving/service.py) with `bentoml serve` underneath."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    port: Annotated[int | None, typer.Option(help="Port [params: serve.port].")] = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address [params: serve.host, loopback]; 0.0.0.0 exposes it.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model URI or bundle directory [params: serve.model_uri; env AIRWATT_MODEL_URI]."),
    ] = None,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read tunables from.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Serve real-time detection and prediction over HTTP (BentoML); exits if the model cannot load."""
    from airwatt.config import load_params
    from airwatt.errors import ConfigError
    from airwatt.lineage import repo_root
    from airwatt.serving.loading import MODEL_URI_ENV, PARAMS_ENV

    cfg = load_params(params).serve
    service_dir = repo_root() / "serving"
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml")
    if not (service_dir / "service.py").is_file() or bentoml is None:
        raise ConfigError(f"{service_dir / 'service.py'} or the bentoml command not found")
    env = {**os.environ, PARAMS_ENV: str(params.resolve())}
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    if model:
        env[MODEL_URI_ENV] = model
    args = [
        bentoml,
        "serve",
        "service:AirWatt",
        "--working-dir",
        str(service_dir),
        "--host",
        host or cfg.host,
        "--port",
        str(port or cfg.port),
    ]
    os.execve(bentoml, args, env)  # the server takes this process over: signals and exit code are its own
