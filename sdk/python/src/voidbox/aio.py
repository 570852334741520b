"""The asynchronous client: :class:`AsyncClient`, the mirror of
:class:`voidbox.Client` with ``await`` and ``async for``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence, Union

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
from ._sse import SSEEvent, aiter_sse
from .client import _backoff, _run_of
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
    "AsyncClient",
    "AsyncRuns",
    "AsyncRunEventStream",
    "AsyncSandboxes",
    "AsyncSandbox",
    "AsyncExecStream",
    "AsyncSessions",
    "AsyncSession",
    "AsyncSessionStream",
]

Data = Union[bytes, bytearray, memoryview, str]


class AsyncClient:
    """The async client of ``voidbox serve``; the same arguments as
    :class:`voidbox.Client`. Use ``async with``, or ``await aclose()``."""

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        socket: Union[str, os.PathLike, None] = None,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        long_timeout: Optional[float] = DEFAULT_LONG_TIMEOUT,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        self.endpoint: Endpoint = resolve(base_url, socket, token)
        self._timeouts = Timeouts(timeout, connect_timeout, long_timeout)
        if transport is None and self.endpoint.socket is not None:
            transport = httpx.AsyncHTTPTransport(uds=self.endpoint.socket)
        self._http = httpx.AsyncClient(
            base_url=self.endpoint.base_url,
            headers=self.endpoint.headers(),
            transport=transport,
            timeout=self._timeouts.of("default"),
        )
        self.runs = AsyncRuns(self)
        self.sandboxes = AsyncSandboxes(self)
        self.sessions = AsyncSessions(self)

    async def health(self) -> Health:
        """``GET /v1/health`` (needs no token)."""
        return await self._call(calls.health())

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = f"socket={self.endpoint.socket!r}" if self.endpoint.socket else self.endpoint.base_url
        return f"AsyncClient({where})"

    async def _send(self, call: calls.Call, stream: bool = False) -> httpx.Response:
        """Sends a call; raises the daemon's error for a failed answer."""
        request = call.request(self._http, self._timeouts.of(call.timeout))
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TimeoutException as e:
            raise TimedOut(f"{call.method} {call.path}: timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            where = f"socket {self.endpoint.socket}" if self.endpoint.socket else self.endpoint.base_url
            raise ConnectionFailed(f"{call.method} {call.path}: {where}: {e}") from e
        if response.status_code >= 400:
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            raise error_from_response(response.status_code, response.headers, body)
        return response

    async def _call(self, call: calls.Call) -> Any:
        """Sends a call and reads its answer."""
        return call.parse(await self._send(call))


class _AsyncStream:
    """An SSE answer: opened by ``open()``, ``async with`` or its first use;
    closed at its end, by ``aclose()`` or on leaving the block."""

    def __init__(self, client: AsyncClient, call: calls.Call) -> None:
        self._client = client
        self._call = call
        self._response: Optional[httpx.Response] = None
        self._events: Optional[AsyncIterator[SSEEvent]] = None

    async def _open(self) -> None:
        if self._response is None:
            self._response = await self._client._send(self._call, stream=True)
            self._events = aiter_sse(self._response.aiter_lines())

    async def _next_sse(self) -> Optional[SSEEvent]:
        await self._open()
        assert self._events is not None
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._call.path}: the stream broke: {e}") from e

    async def aclose(self) -> None:
        """Closes the stream."""
        if self._response is not None:
            await self._response.aclose()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class AsyncExecStream(_AsyncStream):
    """A followed command (see :class:`voidbox.ExecStream`):
    ``async with sandbox.exec_stream([...], stdin_open=True) as s:
    await s.write_stdin(b"hi", eof=True); async for event in s: ...``"""

    def __init__(self, sandbox: "AsyncSandbox", call: calls.Call) -> None:
        super().__init__(sandbox._client, call)
        self._sandbox = sandbox
        self._first: Optional[ExecEvent] = None
        self.pid: Optional[int] = None
        self.exit: Optional[ExecEvent] = None

    async def open(self) -> "AsyncExecStream":
        """Starts the command and reads its ``started`` event (its pid)."""
        if self._response is None:
            await self._open()
            first = await self._read()
            if first is not None and first.event == "started":
                self.pid = first.pid
            self._first = first
        return self

    async def _read(self) -> Optional[ExecEvent]:
        sse = await self._next_sse()
        return None if sse is None else ExecEvent.from_sse(sse, self.pid)

    async def __aenter__(self) -> "AsyncExecStream":
        return await self.open()

    def __aiter__(self) -> AsyncIterator[ExecEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ExecEvent]:
        await self.open()
        try:
            while True:
                event: Optional[ExecEvent]
                if self._first is not None:
                    event, self._first = self._first, None
                else:
                    event = await self._read()
                if event is None:
                    return
                yield event
                if event.final:
                    self.exit = event
                    return
        finally:
            await self.aclose()

    async def wait(self) -> Optional[ExecEvent]:
        """Reads the rest; the ``exit`` (or ``error``) event."""
        async for _ in self:
            pass
        return self.exit

    async def write_stdin(self, data: Data, eof: bool = False) -> None:
        """Writes to its stdin (``stdin_open=True``); ``eof`` closes it after."""
        await self.open()
        await self._sandbox.write_stdin(self._pid(), data, eof=eof)

    async def kill(self) -> None:
        """Kills it and everything it started."""
        await self.open()
        await self._sandbox.kill_process(self._pid())

    def _pid(self) -> int:
        if self.pid is None:
            raise ConnectionFailed("the command has no pid: it did not start")
        return self.pid


class AsyncSessionStream(_AsyncStream):
    """A turn followed as it goes (see :class:`voidbox.SessionStream`)."""

    def __init__(self, session: "AsyncSession", call: calls.Call) -> None:
        super().__init__(session._client, call)
        self.session = session
        self.result: Optional[TurnResult] = None
        self.error: Optional[str] = None

    async def open(self) -> "AsyncSessionStream":
        """Starts the turn."""
        await self._open()
        return self

    async def __aenter__(self) -> "AsyncSessionStream":
        return await self.open()

    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SessionEvent]:
        try:
            while True:
                sse = await self._next_sse()
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
            await self.aclose()

    async def confirm(self, confirmation_id: str, decision: str = "allow") -> None:
        """Answers a ``confirmation_required`` event of this turn."""
        await self.session.confirm(confirmation_id, decision)


class AsyncRunEventStream:
    """A run's events (see :class:`voidbox.RunEventStream`)."""

    def __init__(self, client: AsyncClient, run_id: str, after: Optional[int], follow: bool, reconnects: int = 5) -> None:
        self._client = client
        self.run_id = run_id
        self.follow = follow
        self.reconnects = reconnects
        self.last_event_id: Optional[int] = after
        self.end: Optional[RunInfo] = None

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RunEvent]:
        failures = 0
        while True:
            call = calls.run_events(self.run_id, self.last_event_id, self.follow)
            try:
                response = await self._client._send(call, stream=True)
            except ConnectionFailed:
                failures += 1
                if failures > self.reconnects:
                    raise
                await asyncio.sleep(_backoff(failures))
                continue
            try:
                async for sse in aiter_sse(response.aiter_lines()):
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
                await response.aclose()
            failures += 1
            if failures > self.reconnects:
                raise ConnectionFailed(f"{call.path}: the stream ended without `end`")
            await asyncio.sleep(_backoff(failures))


class AsyncRuns:
    """Runs of specs: ``client.runs`` (see :class:`voidbox.client.Runs`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def submit(self, spec_text: str, format: str = "yaml", input: Optional[str] = None) -> RunInfo:
        """Submits a spec's text."""
        return await self._client._call(calls.run_submit(spec_text, format, input))

    async def submit_file(self, path: Union[str, Path], input: Optional[str] = None) -> RunInfo:
        """Submits a local spec file's text (JSON when it ends in ``.json``)."""
        return await self._client._call(calls.run_submit_file(path, input))

    async def submit_path(self, path: str, input: Optional[str] = None) -> RunInfo:
        """Submits the spec file at ``path`` on the daemon's host."""
        return await self._client._call(calls.run_submit_path(path, input))

    async def list(self) -> List[RunInfo]:
        """Every run the daemon keeps, newest first."""
        return await self._client._call(calls.run_list())

    async def get(self, id: str) -> RunInfo:
        """One run, with its whole ``result`` once it ended."""
        return await self._client._call(calls.run_get(id))

    async def cancel(self, id: str) -> RunInfo:
        """Cancels a queued or running run."""
        return await self._client._call(calls.run_cancel(id))

    def events(self, id: str, after: Optional[int] = None, follow: bool = True) -> AsyncRunEventStream:
        """The run's events (``async for``), after event number ``after``."""
        return AsyncRunEventStream(self._client, id, after, follow)

    async def wait(self, id: str, timeout: Optional[float] = None, poll_interval: float = 0.25) -> RunInfo:
        """Waits for the run to end; ``TimeoutError`` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = await self.get(id)
            if run.ended:
                return run
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"run {id} is still {run.status} after {timeout} s")
                await asyncio.sleep(min(poll_interval, left))
            else:
                await asyncio.sleep(poll_interval)

    async def stage_output(self, id: str, stage: str) -> Any:
        """An ended run's box's or step's output, as JSON."""
        return await self._client._call(calls.run_stage_output(id, stage))


class AsyncSandboxes:
    """Sandboxes: ``client.sandboxes``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        config: Optional[Mapping[str, Any]] = None,
        timeout_secs: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> "AsyncSandbox":
        """Boots a sandbox (see :meth:`voidbox.client.Sandboxes.create`)."""
        info = await self._client._call(calls.sandbox_create(config, timeout_secs, metadata))
        return AsyncSandbox(self._client, info)

    async def list(self) -> List[SandboxInfo]:
        """The sandboxes the daemon holds."""
        return await self._client._call(calls.sandbox_list())

    async def get(self, id: str) -> "AsyncSandbox":
        """A handle on sandbox ``id``."""
        return AsyncSandbox(self._client, await self._client._call(calls.sandbox_get(id)))


class AsyncSandbox:
    """A sandbox (see :class:`voidbox.Sandbox`); ``async with`` kills it
    on leaving the block."""

    def __init__(self, client: AsyncClient, info: SandboxInfo) -> None:
        self._client = client
        self.id: str = info.id
        self.info: SandboxInfo = info

    def __repr__(self) -> str:
        return f"AsyncSandbox({self.id!r})"

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.kill()
        except NotFound:
            pass

    async def refresh(self) -> SandboxInfo:
        """Reads its info again."""
        self.info = await self._client._call(calls.sandbox_get(self.id))
        return self.info

    async def exec(
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
        """Runs a command to its end."""
        body = calls.exec_body(command, shell, env, cwd, user, timeout_secs, stdin)
        return await self._client._call(calls.exec_run(self.id, body, request_timeout))

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
    ) -> AsyncExecStream:
        """Starts a command and follows it (``async with`` / ``async for``)."""
        body = calls.exec_body(command, shell, env, cwd, user, timeout_secs, stdin, stdin_open)
        return AsyncExecStream(self, calls.exec_stream(self.id, body))

    async def write_stdin(self, pid: int, data: Data, eof: bool = False) -> None:
        """Writes to a followed command's stdin; ``eof`` closes it after."""
        await self._client._call(calls.process_stdin(self.id, pid, data, eof))

    async def kill_process(self, pid: int) -> None:
        """Kills a followed command and everything it started."""
        await self._client._call(calls.process_kill(self.id, pid))

    async def read(self, path: str) -> bytes:
        """A file's bytes."""
        return await self._client._call(calls.file_read(self.id, path))

    async def write(self, path: str, data: Data, mode: Optional[int] = None) -> None:
        """Writes a file (parents are made)."""
        await self._client._call(calls.file_write(self.id, path, data, mode))

    async def stat(self, path: str) -> FileStat:
        """What a path is."""
        return await self._client._call(calls.file_stat(self.id, path))

    async def list(self, path: str) -> List[FileStat]:
        """A directory's entries."""
        return await self._client._call(calls.file_list(self.id, path))

    async def mkdir(self, path: str) -> None:
        """Makes a directory and its parents."""
        await self._client._call(calls.file_mkdir(self.id, path))

    async def remove(self, path: str) -> None:
        """Removes a file, a symlink or a whole tree."""
        await self._client._call(calls.file_remove(self.id, path))

    async def rename(self, src: str, dst: str) -> None:
        """Moves ``src`` to ``dst``."""
        await self._client._call(calls.file_rename(self.id, src, dst))

    async def set_timeout(self, secs: int) -> None:
        """Ends the sandbox ``secs`` seconds from now."""
        await self._client._call(calls.sandbox_set_timeout(self.id, secs))

    async def kill(self) -> None:
        """Ends the sandbox now."""
        await self._client._call(calls.sandbox_kill(self.id))


class AsyncSessions:
    """Agent sessions: ``client.sessions``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        spec_text: str,
        format: str = "yaml",
        permissions: Union[Permissions, Mapping[str, Any], None] = None,
        confirm_timeout_secs: Optional[int] = None,
    ) -> "AsyncSession":
        """Makes a session of an agent spec (see
        :meth:`voidbox.client.Sessions.create`)."""
        info = await self._client._call(calls.session_create(spec_text, format, permissions, confirm_timeout_secs))
        return AsyncSession(self._client, info)

    async def list(self) -> List[SessionInfo]:
        """The open sessions."""
        return await self._client._call(calls.session_list())

    async def get(self, id: str) -> "AsyncSession":
        """A handle on session ``id``."""
        return AsyncSession(self._client, await self._client._call(calls.session_get(id)))


class AsyncSession:
    """A conversation with one agent (see :class:`voidbox.Session`);
    ``async with`` destroys it on leaving the block."""

    def __init__(self, client: AsyncClient, info: SessionInfo) -> None:
        self._client = client
        self.id: str = info.id
        self.info: SessionInfo = info

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.destroy()
        except NotFound:
            pass

    async def refresh(self) -> SessionInfo:
        """Reads its info again."""
        self.info = await self._client._call(calls.session_get(self.id))
        return self.info

    async def generate(self, message: str, request_timeout: TimeoutKind = "default") -> TurnResult:
        """One turn; returns once the model answers without tools."""
        return await self._client._call(calls.session_generate(self.id, message, None, request_timeout))

    async def generate_object(
        self, message: str, schema: Mapping[str, Any], request_timeout: TimeoutKind = "default"
    ) -> TurnResult:
        """A turn whose answer (``output``) is valid against ``schema``."""
        return await self._client._call(calls.session_generate(self.id, message, schema, request_timeout))

    def stream(self, message: str, schema: Optional[Mapping[str, Any]] = None) -> AsyncSessionStream:
        """The same turn, followed as it goes (``async for``)."""
        return AsyncSessionStream(self, calls.session_stream(self.id, message, schema))

    async def confirm(self, confirmation_id: str, decision: str = "allow") -> None:
        """Answers a ``confirmation_required`` event: ``allow`` or ``deny``."""
        await self._client._call(calls.session_confirm(self.id, confirmation_id, decision))

    async def history(self) -> List[Dict[str, Any]]:
        """The conversation's messages."""
        return await self._client._call(calls.session_history(self.id))

    async def context(self) -> SessionContext:
        """Messages, estimated tokens, the last call's input tokens, totals."""
        return await self._client._call(calls.session_context(self.id))

    async def clear(self) -> None:
        """Forgets the conversation."""
        await self._client._call(calls.session_clear(self.id))

    async def compact(self) -> CompactResult:
        """Replaces the conversation by the model's summary of it."""
        return await self._client._call(calls.session_compact(self.id))

    async def cancel(self) -> None:
        """Cancels the turn under way."""
        await self._client._call(calls.session_cancel(self.id))

    async def destroy(self) -> None:
        """Ends the session: its turn cancelled, its sandbox killed."""
        await self._client._call(calls.session_destroy(self.id))
