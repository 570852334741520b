"""The synchronous client: :class:`Client` and its runs, sandboxes and
sessions."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _calls as calls
from ._config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LONG_TIMEOUT,
    DEFAULT_TIMEOUT,
    Endpoint,
    Timeouts,
    TimeoutKind,
    resolve,
)
from ._sse import SSEEvent, iter_sse
from .errors import ConnectionFailed, NotFound, TimedOut, error_from_response
from .models import (
    CompactResult,
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
    TurnResult,
    session_event,
)

__all__ = [
    "Client",
    "Runs",
    "RunEventStream",
    "Sandboxes",
    "Sandbox",
    "ExecStream",
    "Sessions",
    "Session",
    "SessionStream",
]

Data = Union[bytes, bytearray, memoryview, str]


class Client:
    """A client of ``voidbox serve``.

    ``base_url`` (``http://host:port``, also ``tcp:HOST:PORT`` or
    ``unix:PATH``) or ``socket`` (a Unix socket's path) say where the
    daemon is; by default ``$VOIDBOX_URL``, else the default socket
    (``$XDG_RUNTIME_DIR/voidbox.sock``). ``token`` (default
    ``$VOIDBOX_TOKEN``, or the file ``$VOIDBOX_TOKEN_FILE``) is sent as
    ``Authorization: Bearer``.

    ``timeout`` bounds ordinary requests, ``connect_timeout`` connecting,
    ``long_timeout`` the requests that last as long as work does (a sandbox
    boot, a command without ``timeout_secs``, a model turn); streams have
    no read timeout. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        socket: Union[str, os.PathLike, None] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        long_timeout: Optional[float] = DEFAULT_LONG_TIMEOUT,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        self.endpoint: Endpoint = resolve(base_url, socket, token)
        self._timeouts = Timeouts(timeout, connect_timeout, long_timeout)
        if transport is None and self.endpoint.socket is not None:
            transport = httpx.HTTPTransport(uds=self.endpoint.socket)
        self._http = httpx.Client(
            base_url=self.endpoint.base_url,
            headers=self.endpoint.headers(),
            transport=transport,
            timeout=self._timeouts.of("default"),
        )
        self.runs = Runs(self)
        self.sandboxes = Sandboxes(self)
        self.sessions = Sessions(self)

    def health(self) -> Health:
        """``GET /v1/health`` (needs no token)."""
        return self._call(calls.health())

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"socket={self.endpoint.socket!r}" if self.endpoint.socket else self.endpoint.base_url
        return f"Client({where})"

    # --- I/O ------------------------------------------------------------

    def _send(self, call: calls.Call, stream: bool = False) -> httpx.Response:
        """Sends a call; raises the daemon's error for a failed answer."""
        request = call.request(self._http, self._timeouts.of(call.timeout))
        try:
            response = self._http.send(request, stream=stream)
        except httpx.TimeoutException as e:
            raise TimedOut(f"{call.method} {call.path}: timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{call.method} {call.path}: {self._where()}: {e}") from e
        if response.status_code >= 400:
            try:
                body = response.read()
            finally:
                response.close()
            raise error_from_response(response.status_code, response.headers, body)
        return response

    def _call(self, call: calls.Call) -> Any:
        """Sends a call and reads its answer."""
        return call.parse(self._send(call))

    def _where(self) -> str:
        return f"socket {self.endpoint.socket}" if self.endpoint.socket else self.endpoint.base_url


class _Stream:
    """An SSE answer: opened by :meth:`open` (or its first use), closed at
    its end, by :meth:`close` or on leaving a ``with`` block."""

    def __init__(self, client: Client, call: calls.Call) -> None:
        self._client = client
        self._call = call
        self._response: Optional[httpx.Response] = None
        self._events: Optional[Iterator[SSEEvent]] = None

    def _open(self) -> None:
        if self._response is None:
            self._response = self._client._send(self._call, stream=True)
            self._events = iter_sse(self._response.iter_lines())

    def _next_sse(self) -> Optional[SSEEvent]:
        """The next SSE event, ``None`` at the stream's end."""
        self._open()
        assert self._events is not None
        try:
            return next(self._events, None)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._call.path}: the stream broke: {e}") from e

    def close(self) -> None:
        """Closes the stream."""
        if self._response is not None:
            self._response.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ExecStream(_Stream):
    """A followed command. Iterate it for :class:`ExecEvent` (``started``,
    ``stdout``, ``stderr``, then ``exit`` or ``error``); ``pid`` is known
    once it is open. Closing the stream before the end kills the command.

    ``with sandbox.exec_stream(["cat"], stdin_open=True) as s:
    s.write_stdin(b"hi", eof=True); for event in s: ...``
    """

    def __init__(self, sandbox: "Sandbox", call: calls.Call) -> None:
        super().__init__(sandbox._client, call)
        self._sandbox = sandbox
        self._first: Optional[ExecEvent] = None
        self.pid: Optional[int] = None
        #: The ``exit`` or ``error`` event, once read.
        self.exit: Optional[ExecEvent] = None

    def open(self) -> "ExecStream":
        """Starts the command and reads its ``started`` event (its pid)."""
        if self._response is None:
            self._open()
            first = self._read()
            if first is not None and first.event == "started":
                self.pid = first.pid
            self._first = first
        return self

    def _read(self) -> Optional[ExecEvent]:
        sse = self._next_sse()
        return None if sse is None else ExecEvent.from_sse(sse, self.pid)

    def __enter__(self) -> "ExecStream":
        return self.open()

    def __iter__(self) -> Iterator[ExecEvent]:
        self.open()
        try:
            while True:
                event: Optional[ExecEvent]
                if self._first is not None:
                    event, self._first = self._first, None
                else:
                    event = self._read()
                if event is None:
                    return
                yield event
                if event.final:
                    self.exit = event
                    return
        finally:
            self.close()

    def wait(self) -> Optional[ExecEvent]:
        """Reads the rest; the ``exit`` (or ``error``) event."""
        for _ in self:
            pass
        return self.exit

    def write_stdin(self, data: Data, eof: bool = False) -> None:
        """Writes to its stdin (it must run with ``stdin_open=True``);
        ``eof`` closes stdin after."""
        self.open()
        self._sandbox.write_stdin(self._pid(), data, eof=eof)

    def kill(self) -> None:
        """Kills it and everything it started."""
        self.open()
        self._sandbox.kill_process(self._pid())

    def _pid(self) -> int:
        if self.pid is None:
            raise ConnectionFailed("the command has no pid: it did not start")
        return self.pid


class SessionStream(_Stream):
    """A turn followed as it goes: iterate it for :class:`SessionEvent`s
    until ``done`` (then :attr:`result` is set) or ``error`` (then
    :attr:`error`). The turn starts at the first iteration (or
    :meth:`open`); closing the stream does not stop it."""

    def __init__(self, session: "Session", call: calls.Call) -> None:
        super().__init__(session._client, call)
        self.session = session
        #: The turn's result, once ``done`` was read.
        self.result: Optional[TurnResult] = None
        #: Why the turn failed, once ``error`` was read.
        self.error: Optional[str] = None

    def open(self) -> "SessionStream":
        """Starts the turn."""
        self._open()
        return self

    def __enter__(self) -> "SessionStream":
        return self.open()

    def __iter__(self) -> Iterator[SessionEvent]:
        try:
            while True:
                sse = self._next_sse()
                if sse is None:
                    return
                event = session_event(sse)
                if event.event == "done":
                    self.result = event.result  # type: ignore[attr-defined]
                elif event.event == "error":
                    self.error = event.message  # type: ignore[attr-defined]
                yield event
                if event.final:
                    return
        finally:
            self.close()

    def confirm(self, confirmation_id: str, decision: str = "allow") -> None:
        """Answers a ``confirmation_required`` event of this turn."""
        self.session.confirm(confirmation_id, decision)


class RunEventStream:
    """A run's events, read as Server-Sent Events; a broken stream is
    resumed after the last event seen (``Last-Event-ID``). The iteration
    ends at the ``end`` event, whose run is then :attr:`end`."""

    def __init__(self, client: Client, run_id: str, after: Optional[int], follow: bool, reconnects: int = 5) -> None:
        self._client = client
        self.run_id = run_id
        self.follow = follow
        self.reconnects = reconnects
        #: The number of the last event read (resumes after it).
        self.last_event_id: Optional[int] = after
        #: The run as the ``end`` event gave it.
        self.end: Optional[RunInfo] = None

    def __iter__(self) -> Iterator[RunEvent]:
        failures = 0
        while True:
            call = calls.run_events(self.run_id, self.last_event_id, self.follow)
            try:
                response = self._client._send(call, stream=True)
            except ConnectionFailed:
                failures += 1
                if failures > self.reconnects:
                    raise
                time.sleep(_backoff(failures))
                continue
            try:
                for sse in iter_sse(response.iter_lines()):
                    if sse.event == "end":
                        self.end = _run_of(sse.data)
                        return
                    event = RunEvent.from_sse(sse)
                    if event.id is not None:
                        self.last_event_id = event.id
                    failures = 0
                    yield event
            except httpx.TransportError as e:
                if failures >= self.reconnects:
                    raise ConnectionFailed(f"{call.path}: the stream broke: {e}") from e
            finally:
                response.close()
            # The stream ended without `end`: resume after the last event.
            failures += 1
            if failures > self.reconnects:
                raise ConnectionFailed(f"{call.path}: the stream ended without `end`")
            time.sleep(_backoff(failures))


def _backoff(failures: int) -> float:
    return min(0.2 * 2 ** failures, 5.0)


def _run_of(data: str) -> Optional[RunInfo]:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return RunInfo.from_dict(value) if isinstance(value, dict) else None


class Runs:
    """Runs of specs: ``client.runs``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(self, spec_text: str, format: str = "yaml", input: Optional[str] = None) -> RunInfo:
        """Submits a spec's text (YAML, or JSON with ``format="json"``);
        the run is ``queued`` until the generate lane has a turn for it.
        Its ``file:`` skills resolve in an empty directory of its own."""
        return self._client._call(calls.run_submit(spec_text, format, input))

    def submit_file(self, path: Union[str, Path], input: Optional[str] = None) -> RunInfo:
        """Submits a local spec file's text (JSON when it ends in ``.json``)."""
        return self._client._call(calls.run_submit_file(path, input))

    def submit_path(self, path: str, input: Optional[str] = None) -> RunInfo:
        """Submits the spec file at ``path`` on the daemon's host (absolute)."""
        return self._client._call(calls.run_submit_path(path, input))

    def list(self) -> List[RunInfo]:
        """Every run the daemon keeps, newest first."""
        return self._client._call(calls.run_list())

    def get(self, id: str) -> RunInfo:
        """One run, with its whole ``result`` once it ended."""
        return self._client._call(calls.run_get(id))

    def cancel(self, id: str) -> RunInfo:
        """Cancels a queued or running run (``Conflict`` once it ended)."""
        return self._client._call(calls.run_cancel(id))

    def events(self, id: str, after: Optional[int] = None, follow: bool = True) -> RunEventStream:
        """The run's events after event number ``after``; with ``follow``
        until the run ends, else until the events kept so far are sent."""
        return RunEventStream(self._client, id, after, follow)

    def wait(self, id: str, timeout: Optional[float] = None, poll_interval: float = 0.25) -> RunInfo:
        """Waits for the run to end; the run with its result.
        Raises ``TimeoutError`` past ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get(id)
            if run.ended:
                return run
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"run {id} is still {run.status} after {timeout} s")
                time.sleep(min(poll_interval, left))
            else:
                time.sleep(poll_interval)

    def stage_output(self, id: str, stage: str) -> Any:
        """An ended run's box's or step's output (its file, else output,
        text or stdout), as JSON."""
        return self._client._call(calls.run_stage_output(id, stage))


class Sandboxes:
    """Sandboxes: ``client.sandboxes``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        config: Optional[Mapping[str, Any]] = None,
        timeout_secs: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> "Sandbox":
        """Boots a sandbox. ``config`` is a ``SandboxConfig`` as JSON
        (``{"memory_mb": 256}``, ``{"image": "python:3.12-slim"}``,
        ``{"snapshot": "py"}``); ``timeout_secs`` ends it that long from
        now; ``metadata`` are labels returned as given."""
        info = self._client._call(calls.sandbox_create(config, timeout_secs, metadata))
        return Sandbox(self._client, info)

    def list(self) -> List[SandboxInfo]:
        """The sandboxes the daemon holds."""
        return self._client._call(calls.sandbox_list())

    def get(self, id: str) -> "Sandbox":
        """A handle on sandbox ``id`` (``NotFound`` when there is none)."""
        return Sandbox(self._client, self._client._call(calls.sandbox_get(id)))


class Sandbox:
    """A sandbox: commands, files, its timeout. As a context manager it is
    killed on leaving the block."""

    def __init__(self, client: Client, info: SandboxInfo) -> None:
        self._client = client
        self.id: str = info.id
        self.info: SandboxInfo = info

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        except NotFound:
            pass

    def refresh(self) -> SandboxInfo:
        """Reads its info again."""
        self.info = self._client._call(calls.sandbox_get(self.id))
        return self.info

    # --- commands --------------------------------------------------------

    def exec(
        self,
        command: Union[str, Sequence[str], None] = None,
        *,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
        request_timeout: TimeoutKind = "default",
    ) -> ExecResult:
        """Runs a command (``["uname", "-s"]``, or ``shell="ls | wc -l"``)
        to its end. ``stdin`` (text) is its input, then closed;
        ``timeout_secs`` kills everything it started past it. The request
        waits that long plus 30 s (``long_timeout`` without one)."""
        body = calls.exec_body(command, shell, env, cwd, user, timeout_secs, stdin)
        return self._client._call(calls.exec_run(self.id, body, request_timeout))

    def exec_stream(
        self,
        command: Union[str, Sequence[str], None] = None,
        *,
        shell: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout_secs: Optional[float] = None,
        stdin: Union[str, bytes, None] = None,
        stdin_open: bool = False,
    ) -> ExecStream:
        """Starts a command and follows it (see :class:`ExecStream`);
        ``stdin_open`` keeps its stdin open for :meth:`write_stdin`."""
        body = calls.exec_body(command, shell, env, cwd, user, timeout_secs, stdin, stdin_open)
        return ExecStream(self, calls.exec_stream(self.id, body))

    def write_stdin(self, pid: int, data: Data, eof: bool = False) -> None:
        """Writes to a followed command's stdin; ``eof`` closes it after."""
        self._client._call(calls.process_stdin(self.id, pid, data, eof))

    def kill_process(self, pid: int) -> None:
        """Kills a followed command and everything it started."""
        self._client._call(calls.process_kill(self.id, pid))

    # --- files (below /workspace or /tmp) ------------------------------------

    def read(self, path: str) -> bytes:
        """A file's bytes."""
        return self._client._call(calls.file_read(self.id, path))

    def write(self, path: str, data: Data, mode: Optional[int] = None) -> None:
        """Writes a file (parents are made); ``mode`` as ``0o755``."""
        self._client._call(calls.file_write(self.id, path, data, mode))

    def stat(self, path: str) -> FileStat:
        """What a path is."""
        return self._client._call(calls.file_stat(self.id, path))

    def list(self, path: str) -> List[FileStat]:
        """A directory's entries."""
        return self._client._call(calls.file_list(self.id, path))

    def mkdir(self, path: str) -> None:
        """Makes a directory and its parents."""
        self._client._call(calls.file_mkdir(self.id, path))

    def remove(self, path: str) -> None:
        """Removes a file, a symlink or a whole tree."""
        self._client._call(calls.file_remove(self.id, path))

    def rename(self, src: str, dst: str) -> None:
        """Moves ``src`` to ``dst`` (a file there is replaced)."""
        self._client._call(calls.file_rename(self.id, src, dst))

    # --- life ------------------------------------------------------------

    def set_timeout(self, secs: int) -> None:
        """Ends the sandbox ``secs`` seconds from now."""
        self._client._call(calls.sandbox_set_timeout(self.id, secs))

    def kill(self) -> None:
        """Ends the sandbox now."""
        self._client._call(calls.sandbox_kill(self.id))


class Sessions:
    """Agent sessions: ``client.sessions``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        spec_text: str,
        format: str = "yaml",
        permissions: Union[Permissions, Mapping[str, Any], None] = None,
        confirm_timeout_secs: Optional[int] = None,
    ) -> "Session":
        """Makes a session of an agent spec (``kind: agent``); its sandbox
        boots at the first turn. ``permissions`` (``{"ask": ["bash"]}``)
        replace the spec's rules; an ``ask`` waits ``confirm_timeout_secs``
        (300) for :meth:`Session.confirm`."""
        info = self._client._call(calls.session_create(spec_text, format, permissions, confirm_timeout_secs))
        return Session(self._client, info)

    def list(self) -> List[SessionInfo]:
        """The open sessions."""
        return self._client._call(calls.session_list())

    def get(self, id: str) -> "Session":
        """A handle on session ``id`` (``NotFound`` when there is none)."""
        return Session(self._client, self._client._call(calls.session_get(id)))


class Session:
    """A conversation with one agent in a sandbox of its own. As a context
    manager it is destroyed on leaving the block."""

    def __init__(self, client: Client, info: SessionInfo) -> None:
        self._client = client
        self.id: str = info.id
        self.info: SessionInfo = info

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.destroy()
        except NotFound:
            pass

    def refresh(self) -> SessionInfo:
        """Reads its info again."""
        self.info = self._client._call(calls.session_get(self.id))
        return self.info

    def generate(self, message: str, request_timeout: TimeoutKind = "default") -> TurnResult:
        """One turn: the agent loop on the conversation and ``message``;
        returns once the model answers without tools. ``Conflict`` while
        another turn is under way."""
        return self._client._call(calls.session_generate(self.id, message, None, request_timeout))

    def generate_object(
        self, message: str, schema: Mapping[str, Any], request_timeout: TimeoutKind = "default"
    ) -> TurnResult:
        """A turn whose answer is a JSON value valid against ``schema``
        (a JSON Schema): the result's ``output``."""
        return self._client._call(calls.session_generate(self.id, message, schema, request_timeout))

    def stream(self, message: str, schema: Optional[Mapping[str, Any]] = None) -> SessionStream:
        """The same turn, followed as it goes (see :class:`SessionStream`)."""
        return SessionStream(self, calls.session_stream(self.id, message, schema))

    def confirm(self, confirmation_id: str, decision: str = "allow") -> None:
        """Answers a ``confirmation_required`` event: ``allow`` or ``deny``."""
        self._client._call(calls.session_confirm(self.id, confirmation_id, decision))

    def history(self) -> List[Dict[str, Any]]:
        """The conversation's messages (``role``, content blocks)."""
        return self._client._call(calls.session_history(self.id))

    def context(self) -> SessionContext:
        """Messages, estimated tokens, the last call's input tokens, totals."""
        return self._client._call(calls.session_context(self.id))

    def clear(self) -> None:
        """Forgets the conversation (the sandbox and its files stay)."""
        self._client._call(calls.session_clear(self.id))

    def compact(self) -> CompactResult:
        """Replaces the conversation by the model's summary of it."""
        return self._client._call(calls.session_compact(self.id))

    def cancel(self) -> None:
        """Cancels the turn under way (``Conflict`` when there is none)."""
        self._client._call(calls.session_cancel(self.id))

    def destroy(self) -> None:
        """Ends the session: its turn cancelled, its sandbox killed."""
        self._client._call(calls.session_destroy(self.id))
