"""The Python SDK of void-box's daemon, ``voidbox serve``.

>>> from voidbox import Client
>>> with Client() as client:                       # $VOIDBOX_URL, else the socket
...     with client.sandboxes.create({"memory_mb": 256}) as sb:
...         print(sb.exec(["uname", "-s"]).stdout)

:class:`Client` is synchronous, :class:`AsyncClient` its ``asyncio``
mirror. Runs (``client.runs``), sandboxes (``client.sandboxes``) and agent
sessions (``client.sessions``); errors are :class:`VoidboxError`s.
"""

from ._sse import SSEEvent, SSEParser, aiter_sse, iter_sse
from .aio import (
    AsyncClient,
    AsyncExecStream,
    AsyncRunEventStream,
    AsyncSandbox,
    AsyncSession,
    AsyncSessionStream,
)
from .client import Client, ExecStream, RunEventStream, Sandbox, Session, SessionStream
from .errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    NotFound,
    RateLimited,
    TimedOut,
    Unauthorized,
    Unavailable,
    Unprocessable,
    VoidboxError,
)
from .models import (
    CompactResult,
    ConfirmationAnsweredEvent,
    ConfirmationRequiredEvent,
    DoneEvent,
    ErrorEvent,
    ExecEvent,
    ExecResult,
    FileStat,
    Health,
    Permissions,
    RunEvent,
    RunInfo,
    SandboxInfo,
    SessionContext,
    SessionEvent,
    SessionInfo,
    TextDeltaEvent,
    TokenUsage,
    ToolCall,
    ToolCallEvent,
    ToolResultEvent,
    Totals,
    TurnResult,
    UnknownEvent,
    UsageEvent,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "Sandbox",
    "AsyncSandbox",
    "Session",
    "AsyncSession",
    "ExecStream",
    "AsyncExecStream",
    "SessionStream",
    "AsyncSessionStream",
    "RunEventStream",
    "AsyncRunEventStream",
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
    "Health",
    "RunInfo",
    "RunEvent",
    "SandboxInfo",
    "ExecResult",
    "ExecEvent",
    "FileStat",
    "SessionInfo",
    "SessionContext",
    "CompactResult",
    "Totals",
    "TokenUsage",
    "ToolCall",
    "TurnResult",
    "Permissions",
    "SessionEvent",
    "TextDeltaEvent",
    "ToolCallEvent",
    "ToolResultEvent",
    "ConfirmationRequiredEvent",
    "ConfirmationAnsweredEvent",
    "UsageEvent",
    "DoneEvent",
    "ErrorEvent",
    "UnknownEvent",
    "SSEEvent",
    "SSEParser",
    "iter_sse",
    "aiter_sse",
    "__version__",
]
