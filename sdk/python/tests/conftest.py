"""A real daemon for the tests: ``target/release/voidbox serve`` on a free
loopback port with a token, its state in a temporary directory, stopped
with SIGTERM at the end (it ends its VMs)."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import voidbox

REPO = Path(__file__).resolve().parents[3]
BINARY = REPO / "target" / "release" / "voidbox"


@dataclass(frozen=True)
class Daemon:
    url: str
    token: str
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not BINARY.is_file():
        pytest.exit(
            f"{BINARY} is missing: build it with scripts/setup.sh (from the repository root)",
            returncode=1,
        )
    home = tmp_path_factory.mktemp("daemon")
    token = secrets.token_hex(16)
    token_file = home / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = _free_port()
    log = home / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(BINARY),
                "serve",
                "--listen",
                f"tcp:127.0.0.1:{port}",
                "--token-file",
                str(token_file),
                "--state-dir",
                str(home / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.exit(f"voidbox serve exited with {process.returncode}:\n{_tail(log)}", returncode=1)
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.exit(f"voidbox serve did not answer /v1/health in 30 s:\n{_tail(log)}", returncode=1)
        time.sleep(0.1)
    try:
        yield Daemon(url=url, token=token, log=log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"voidbox serve did not stop in 60 s after SIGTERM:\n{_tail(log)}")
        assert code == 0, f"voidbox serve exited with {code}:\n{_tail(log)}"


@pytest.fixture(scope="session")
def client(daemon: Daemon) -> Iterator[voidbox.Client]:
    with voidbox.Client(daemon.url, token=daemon.token) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests pass the address and token; the environment's must not leak in."""
    for name in ("VOIDBOX_URL", "VOIDBOX_TOKEN", "VOIDBOX_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
