"""Local server processes (mlflow server, bentoml serve, Label Studio): a free loopback port, waiting for a
health URL, stopping. One copy for the package, its tests and its benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ok(
    url: str,
    proc: subprocess.Popen,
    log_file: Path,
    *,
    what: str,
    timeout_s: float,
    poll_s: float = 0.5,
) -> None:
    """Return once GET ``url`` answers 200; RuntimeError with the log's tail if ``proc`` exits or
    ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.is_file() else ""
            raise RuntimeError(f"{what} did not become ready at {url}:\n{tail}")
        time.sleep(poll_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
