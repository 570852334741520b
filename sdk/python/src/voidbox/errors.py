"""Errors: the daemon answers every failure as ``{"code", "message"}``."""

from __future__ import annotations

import json
from typing import Mapping, Optional

__all__ = [
    "VoidboxError",
    "ConnectionFailed",
    "TimedOut",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Gone",
    "Unprocessable",
    "RateLimited",
    "Unavailable",
    "error_from_response",
]


class VoidboxError(Exception):
    """A request the daemon refused or failed.

    ``status`` is the HTTP status (``None`` when the daemon was not
    reached), ``message`` the daemon's reason, ``retry_after`` the
    ``Retry-After`` header in seconds when it sent one.
    """

    def __init__(
        self,
        status: Optional[int],
        message: str,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ConnectionFailed(VoidboxError):
    """The daemon could not be reached (no socket, refused, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class TimedOut(ConnectionFailed):
    """The daemon did not answer within the request's timeout."""


class BadRequest(VoidboxError):
    """400: malformed input."""


class Unauthorized(VoidboxError):
    """401: no token, or a wrong one."""


class Forbidden(VoidboxError):
    """403: a path outside the guest's writable roots, a command not allowed."""


class NotFound(VoidboxError):
    """404: no such run, sandbox, session, process, file or confirmation."""


class Conflict(VoidboxError):
    """409: the run has ended, a turn is under way, or was cancelled."""


class Gone(VoidboxError):
    """410: the sandbox's VM is gone."""


class Unprocessable(VoidboxError):
    """422: a spec or configuration that cannot run (with its place)."""


class RateLimited(VoidboxError):
    """429: a lane's queue is full, or too many sandboxes; see ``retry_after``."""


class Unavailable(VoidboxError):
    """503: a request waited too long for its lane; see ``retry_after``."""


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: the daemon never sends one


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> VoidboxError:
    """The error for a failed answer: its class by status, its message from
    the JSON body (else the body's text)."""
    message = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    except ValueError:
        pass
    cls = _BY_STATUS.get(status, VoidboxError)
    return cls(status, message or f"HTTP {status}", _retry_after(headers))
