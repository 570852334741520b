"""Typed answers of the daemon. Every model's ``from_dict`` ignores keys it
does not know (a newer daemon may add some) and keeps the whole dict in
``raw``."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Type, TypeVar

from ._sse import SSEEvent

__all__ = [
    "Health",
    "RunInfo",
    "RunEvent",
    "RUN_ENDED",
    "SandboxInfo",
    "ExecResult",
    "ExecEvent",
    "FileStat",
    "Totals",
    "TokenUsage",
    "SessionInfo",
    "SessionContext",
    "CompactResult",
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
    "session_event",
]

M = TypeVar("M", bound="Model")


@dataclass
class Model:
    """Base of the models: ``from_dict`` and the raw dict."""

    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    #: Converters of nested fields, by field name.
    _nested: ClassVar[Dict[str, Callable[[Any], Any]]] = {}

    @classmethod
    def from_dict(cls: Type[M], data: Mapping[str, Any]) -> M:
        """The model of ``data``; unknown keys are ignored, missing ones
        take their defaults."""
        known = {f.name for f in fields(cls) if f.init and f.name != "raw"}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                continue
            convert = cls._nested.get(key)
            kwargs[key] = convert(value) if convert is not None and value is not None else value
        return cls(**kwargs, raw=dict(data))


@dataclass
class Health(Model):
    """``GET /v1/health``."""

    status: str = ""
    version: str = ""
    sandboxes: int = 0


#: The statuses a run ends in.
RUN_ENDED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class RunInfo(Model):
    """A run, and how it ended when it did (``result`` only from ``get``)."""

    id: str = ""
    name: str = ""
    kind: str = ""
    status: str = ""
    created_unix_ms: int = 0
    ended_unix_ms: Optional[int] = None
    output: Any = None
    error: Optional[str] = None
    result: Optional[Dict[str, Any]] = None
    events: int = 0
    events_dropped: int = 0

    @property
    def ended(self) -> bool:
        """Whether it succeeded, failed or was cancelled."""
        return self.status in RUN_ENDED


@dataclass
class RunEvent:
    """One event of a run: ``event`` is its kind (``stage_started``,
    ``sandbox_ready``, ``text_delta``, ``tool_call_started``,
    ``tool_call_finished``, ``usage``, ``output``, ``network``,
    ``stage_finished``...), ``id`` its number, ``data`` the whole event as
    ``voidbox run --output json`` prints it."""

    event: str
    id: Optional[int] = None
    data: Dict[str, Any] = field(default_factory=dict)

    @property
    def box_name(self) -> Optional[str]:
        """The box, step or sandbox spec it happened in."""
        return self.data.get("box_name")

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the event."""
        return self.data.get(key, default)

    @classmethod
    def from_sse(cls, sse: SSEEvent) -> "RunEvent":
        data = _json_object(sse.data)
        number = int(sse.id) if sse.id and sse.id.isdigit() else None
        return cls(event=data.get("event", sse.event), id=number, data=data)


@dataclass
class SandboxInfo(Model):
    """A sandbox the daemon holds."""

    id: str = ""
    accel: str = ""
    boot_ms: int = 0
    created_unix_ms: int = 0
    expires_unix_ms: Optional[int] = None
    memory_mb: int = 0
    vcpus: int = 0
    image: Optional[str] = None
    snapshot: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass
class ExecResult(Model):
    """How a command ended, and what it wrote (UTF-8, lossy)."""

    exit_code: Optional[int] = None
    signal: Optional[int] = None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """Whether it exited 0."""
        return self.exit_code == 0


@dataclass
class ExecEvent:
    """One event of a followed command: ``started``, ``stdout``,
    ``stderr`` (``data``: the bytes, base64-decoded), ``exit`` or
    ``error`` (``message``). ``pid`` is the command's on every event."""

    event: str
    pid: Optional[int] = None
    data: bytes = b""
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    timed_out: bool = False
    message: Optional[str] = None

    @property
    def text(self) -> str:
        """``data`` decoded as UTF-8 (lossy)."""
        return self.data.decode("utf-8", "replace")

    @property
    def final(self) -> bool:
        """Whether nothing follows (``exit`` or ``error``)."""
        return self.event in ("exit", "error")

    @classmethod
    def from_sse(cls, sse: SSEEvent, pid: Optional[int]) -> "ExecEvent":
        data = _json_object(sse.data)
        kind = data.get("event", sse.event)
        raw = data.get("data")
        return cls(
            event=kind,
            pid=data.get("pid", pid),
            data=base64.b64decode(raw) if isinstance(raw, str) else b"",
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            timed_out=bool(data.get("timed_out", False)),
            message=data.get("message"),
        )


@dataclass
class FileStat(Model):
    """What a guest path is: ``kind`` is ``file``, ``dir``, ``symlink`` or
    ``other``."""

    name: str = ""
    kind: str = ""
    size: int = 0
    mode: int = 0
    modified_unix_ms: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


@dataclass
class Totals(Model):
    """Tokens, cost and turns of a session so far."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0
    last_input_tokens: int = 0


@dataclass
class TokenUsage(Model):
    """Token counts."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class SessionInfo(Model):
    """A session: its agent's name, messages, whether a turn is under way."""

    id: str = ""
    name: str = ""
    created_unix_ms: int = 0
    messages: int = 0
    busy: bool = False
    totals: Totals = field(default_factory=Totals)

    _nested: ClassVar[Dict[str, Callable[[Any], Any]]] = {"totals": Totals.from_dict}


@dataclass
class SessionContext(Model):
    """How full a session's conversation is."""

    messages: int = 0
    estimated_tokens: int = 0
    last_input_tokens: int = 0
    totals: Totals = field(default_factory=Totals)

    _nested: ClassVar[Dict[str, Callable[[Any], Any]]] = {"totals": Totals.from_dict}


@dataclass
class CompactResult(Model):
    """Messages before and after a compaction."""

    messages_before: int = 0
    messages_after: int = 0


@dataclass
class ToolCall(Model):
    """A tool call of a turn, and how it went."""

    id: str = ""
    name: str = ""
    arguments: Any = None
    summary: str = ""
    is_error: bool = False


@dataclass
class TurnResult(Model):
    """A turn's result: the answer's ``text``, ``output`` (the JSON value
    of ``generate_object``), its tool calls, usage and cost."""

    text: str = ""
    output: Any = None
    tool_calls: List[ToolCall] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: Optional[float] = None
    model_calls: int = 0

    _nested: ClassVar[Dict[str, Callable[[Any], Any]]] = {
        "tool_calls": lambda calls: [ToolCall.from_dict(c) for c in calls],
        "usage": TokenUsage.from_dict,
    }


@dataclass
class Permissions:
    """A session's permission rules, replacing its spec's: ``allow``,
    ``deny`` and ``ask`` rules (``bash``, ``bash(rm *)``, ``write``,
    ``mcp__*``), ``default`` (``allow``/``deny``) and ``unattended`` (what
    an unanswered ``ask`` gets)."""

    allow: List[str] = field(default_factory=list)
    deny: List[str] = field(default_factory=list)
    ask: List[str] = field(default_factory=list)
    default: Optional[str] = None
    unattended: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"allow": self.allow, "deny": self.deny, "ask": self.ask}
        if self.default is not None:
            out["default"] = self.default
        if self.unattended is not None:
            out["unattended"] = self.unattended
        return out


# --- a session turn's stream events -------------------------------------


@dataclass
class SessionEvent(Model):
    """Base of a session stream's events; ``event`` names the kind."""

    event: ClassVar[str] = ""

    @property
    def final(self) -> bool:
        """Whether nothing follows (``done`` or ``error``)."""
        return False


@dataclass
class TextDeltaEvent(SessionEvent):
    """Text the model streamed."""

    event: ClassVar[str] = "text_delta"
    text: str = ""


@dataclass
class ToolCallEvent(SessionEvent):
    """A tool call about to run (after permissions and confirmation)."""

    event: ClassVar[str] = "tool_call"
    id: str = ""
    name: str = ""
    arguments: Any = None


@dataclass
class ToolResultEvent(SessionEvent):
    """A tool call ended, or was refused."""

    event: ClassVar[str] = "tool_result"
    id: str = ""
    name: str = ""
    summary: str = ""
    is_error: bool = False


@dataclass
class ConfirmationRequiredEvent(SessionEvent):
    """An ``ask`` rule stopped the turn: answer with ``Session.confirm(id,
    "allow"|"deny")`` within ``timeout_secs``."""

    event: ClassVar[str] = "confirmation_required"
    id: str = ""
    tool: str = ""
    arguments: Any = None
    timeout_secs: int = 0


@dataclass
class ConfirmationAnsweredEvent(SessionEvent):
    """A confirmation was answered: ``by`` is ``client`` or ``deadline``."""

    event: ClassVar[str] = "confirmation_answered"
    id: str = ""
    decision: str = ""
    by: str = ""


@dataclass
class UsageEvent(SessionEvent):
    """Token counts of the turn so far."""

    event: ClassVar[str] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Optional[float] = None


@dataclass
class DoneEvent(SessionEvent):
    """The turn ended; ``result`` is its :class:`TurnResult`."""

    event: ClassVar[str] = "done"
    result: TurnResult = field(default_factory=TurnResult)

    _nested: ClassVar[Dict[str, Callable[[Any], Any]]] = {"result": TurnResult.from_dict}

    @property
    def final(self) -> bool:
        return True


@dataclass
class ErrorEvent(SessionEvent):
    """The turn failed or was cancelled."""

    event: ClassVar[str] = "error"
    message: str = ""

    @property
    def final(self) -> bool:
        return True


@dataclass
class UnknownEvent(SessionEvent):
    """An event this SDK does not know (a newer daemon's); see ``raw``."""

    name: str = ""


_SESSION_EVENTS: Dict[str, Type[SessionEvent]] = {
    cls.event: cls
    for cls in (
        TextDeltaEvent,
        ToolCallEvent,
        ToolResultEvent,
        ConfirmationRequiredEvent,
        ConfirmationAnsweredEvent,
        UsageEvent,
        DoneEvent,
        ErrorEvent,
    )
}


def session_event(sse: SSEEvent) -> SessionEvent:
    """The typed event of one SSE event of a session's stream."""
    data = _json_object(sse.data)
    kind = data.get("event", sse.event)
    cls = _SESSION_EVENTS.get(kind)
    if cls is None:
        return UnknownEvent(name=kind, raw=data)
    return cls.from_dict(data)


def _json_object(text: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}
