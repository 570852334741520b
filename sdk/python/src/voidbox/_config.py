"""Where the daemon is, the token, and the timeouts: shared by both clients."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import httpx

#: The base URL requests use over a Unix socket (the host is not looked at).
SOCKET_BASE_URL = "http://voidbox"

#: Default seconds of an ordinary request (each of connect, read, write, pool).
DEFAULT_TIMEOUT = 30.0
#: Default seconds to connect.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Default seconds of a request that lasts as long as work does: a sandbox
#: boot, a command without its own timeout, a model turn.
DEFAULT_LONG_TIMEOUT = 900.0


def default_socket() -> Path:
    """The daemon's default socket: ``$XDG_RUNTIME_DIR/voidbox.sock``, else
    ``voidbox.sock`` in the data directory (``$VOIDBOX_DATA_DIR``, else
    ``$XDG_DATA_HOME/voidbox``, else ``~/.local/share/voidbox``)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "voidbox.sock"
    data = os.environ.get("VOIDBOX_DATA_DIR")
    if data:
        return Path(data) / "voidbox.sock"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) / "voidbox" if xdg else Path.home() / ".local/share/voidbox"
    return base / "voidbox.sock"


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: a base URL, or a Unix socket (then ``base_url``
    is :data:`SOCKET_BASE_URL`)."""

    base_url: str
    socket: Optional[str]
    token: Optional[str]

    def headers(self) -> Dict[str, str]:
        headers = {"User-Agent": "voidbox-python"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def _address(address: str) -> tuple[str, Optional[str]]:
    """``http(s)://...``, ``tcp:HOST:PORT`` or ``unix:PATH`` (or a bare
    absolute path) as (base URL, socket)."""
    if address.startswith("unix:"):
        return SOCKET_BASE_URL, address[len("unix:"):]
    if address.startswith("/"):
        return SOCKET_BASE_URL, address
    if address.startswith("tcp:"):
        return "http://" + address[len("tcp:"):], None
    return address.rstrip("/"), None


def resolve(
    base_url: Optional[str],
    socket: Union[str, os.PathLike, None],
    token: Optional[str],
) -> Endpoint:
    """The endpoint from the arguments, else ``VOIDBOX_URL`` and
    ``VOIDBOX_TOKEN`` (or ``VOIDBOX_TOKEN_FILE``), else the default socket."""
    if base_url is not None and socket is not None:
        raise ValueError("give base_url or socket, not both")
    if socket is not None:
        url, uds = SOCKET_BASE_URL, os.fspath(socket)
    elif base_url is not None:
        url, uds = _address(base_url)
    elif os.environ.get("VOIDBOX_URL"):
        url, uds = _address(os.environ["VOIDBOX_URL"])
    else:
        url, uds = SOCKET_BASE_URL, str(default_socket())
    if token is None:
        token = os.environ.get("VOIDBOX_TOKEN") or None
    if token is None and os.environ.get("VOIDBOX_TOKEN_FILE"):
        token = Path(os.environ["VOIDBOX_TOKEN_FILE"]).read_text().strip() or None
    return Endpoint(base_url=url, socket=uds, token=token)


@dataclass(frozen=True)
class Timeouts:
    """The timeouts of each kind of request."""

    default: float = DEFAULT_TIMEOUT
    connect: float = DEFAULT_CONNECT_TIMEOUT
    long: Optional[float] = DEFAULT_LONG_TIMEOUT

    def of(self, kind: "TimeoutKind") -> httpx.Timeout:
        """``"default"``, ``"long"``, ``"stream"`` (no read timeout) or a
        number of seconds (``None``: none) for the read."""
        if kind == "default":
            return httpx.Timeout(self.default, connect=self.connect)
        if kind == "long":
            read = self.long
        elif kind == "stream":
            read = None
        else:
            read = kind  # type: ignore[assignment]
        return httpx.Timeout(self.default, connect=self.connect, read=read)


TimeoutKind = Union[str, float, None]
