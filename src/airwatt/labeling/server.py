"""A local Label Studio server in its own virtualenv (labeling/install-server.sh), for development, tests and
benchmarks: loopback only, its own data directory, a clean environment, a preset legacy token.

Pitfalls handled here (../shared/STACK.md): Label Studio reads bare variables such as HOST, PORT and USERNAME,
so the server gets a clean environment; a busy port makes it silently take port + 1, so the port is checked
free first and /health is polled on that exact port; since 1.23 a preset ``--user-token`` is refused unless
legacy tokens are enabled when the first organization is created; the first start runs migrations (~45 s).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from airwatt.errors import ConfigError
from airwatt.procs import free_port, wait_until_ok

VENV_VARIABLE = "LABEL_STUDIO_VENV"
INSTALL_SCRIPT = "labeling/install-server.sh"
START_TIMEOUT_S = 240.0


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def server_venv() -> Path:
    """The server's virtualenv: $LABEL_STUDIO_VENV, else .venv-labelstudio at the repository root."""
    return Path(os.environ.get(VENV_VARIABLE) or repo_root() / ".venv-labelstudio")


def server_executable(venv: Path | None = None) -> Path | None:
    """The ``label-studio`` command of a complete install (the marker install-server.sh writes last)."""
    venv = venv or server_venv()
    exe = venv / "bin" / "label-studio"
    return exe if exe.is_file() and (venv / ".label-studio-installed").is_file() else None


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class LocalServer:
    url: str
    token: str
    username: str
    data_dir: Path
    log_file: Path


def _clean_env(data_dir: Path, token_enabled: bool) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        HOME=str(data_dir),
        SECRET_KEY=secrets.token_hex(32),
        COLLECT_ANALYTICS="false",
        LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true" if token_enabled else "false",
        DJANGO_DB="sqlite",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def local_server(
    data_dir: Path, *, port: int | None = None, venv: Path | None = None, timeout_s: float = START_TIMEOUT_S
) -> Iterator[LocalServer]:
    """Start Label Studio on a free loopback port with a fresh admin and legacy token; stop it on exit."""
    exe = server_executable(venv)
    if exe is None:
        raise ConfigError(
            f"Label Studio server not installed in {venv or server_venv()}: run {INSTALL_SCRIPT}"
        )
    port = port or free_port()
    if _port_busy(port):
        raise ConfigError(f"port {port} is busy; Label Studio would silently take {port + 1}")
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(20)
    username, password = "airwatt-admin@example.com", secrets.token_urlsafe(16)
    log_file = data_dir / "server.log"
    args = [
        str(exe),
        "start",
        "--no-browser",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir / "ls-data"),
        "--username",
        username,
        "--password",
        password,
        "--user-token",
        token,
    ]
    url = f"http://127.0.0.1:{port}"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            args,
            cwd=data_dir,
            env=_clean_env(data_dir, True),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops any worker it forked
        )
        try:
            wait_until_ok(
                f"{url}/health", proc, log_file, what="Label Studio", timeout_s=timeout_s, poll_s=1.0
            )
            yield LocalServer(url, token, username, data_dir, log_file)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group, SIGKILL it after 20 s."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
