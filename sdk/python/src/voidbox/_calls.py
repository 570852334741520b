"""Every route as a request description (:class:`Call`) and how its answer
is read, so the sync and async clients share all but the I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union
from urllib.parse import quote

import httpx

from ._config import TimeoutKind
from .models import (
    CompactResult,
    ExecResult,
    FileStat,
    Health,
    Permissions,
    RunInfo,
    SandboxInfo,
    SessionContext,
    SessionInfo,
    TurnResult,
)


def _nothing(_: httpx.Response) -> None:
    return None


@dataclass(frozen=True)
class Call:
    """One request and the reading of its answer."""

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    content: Optional[bytes] = None
    headers: Optional[Dict[str, str]] = None
    timeout: TimeoutKind = "default"
    parse: Callable[[httpx.Response], Any] = field(default=_nothing)

    def request(self, http: Union[httpx.Client, httpx.AsyncClient], timeout: httpx.Timeout) -> httpx.Request:
        """The httpx request of this call."""
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            content=self.content,
            headers=self.headers,
            timeout=timeout,
        )


def _seg(value: Union[str, int]) -> str:
    """A path segment, escaped."""
    return quote(str(value), safe="")


def _json(r: httpx.Response) -> Any:
    return r.json()


def _model(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.from_dict(r.json())


def _models(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda r: [cls.from_dict(item) for item in r.json()]


Data = Union[bytes, bytearray, memoryview, str]


def _bytes(data: Data) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


# --- health ---------------------------------------------------------------


def health() -> Call:
    return Call("GET", "/v1/health", parse=_model(Health))


# --- runs -----------------------------------------------------------------


def _format_of(path: Union[str, Path]) -> str:
    return "json" if str(path).lower().endswith(".json") else "yaml"


def run_submit(spec: str, format: str, input: Optional[str]) -> Call:
    body: Dict[str, Any] = {"spec": spec, "format": format}
    if input is not None:
        body["input"] = input
    return Call("POST", "/v1/runs", json=body, parse=_model(RunInfo))


def run_submit_file(path: Union[str, Path], input: Optional[str]) -> Call:
    return run_submit(Path(path).read_text(), _format_of(path), input)


def run_submit_path(path: str, input: Optional[str]) -> Call:
    body: Dict[str, Any] = {"path": path}
    if input is not None:
        body["input"] = input
    return Call("POST", "/v1/runs", json=body, parse=_model(RunInfo))


def run_list() -> Call:
    return Call("GET", "/v1/runs", parse=_models(RunInfo))


def run_get(id: str) -> Call:
    return Call("GET", f"/v1/runs/{_seg(id)}", parse=_model(RunInfo))


def run_cancel(id: str) -> Call:
    return Call("POST", f"/v1/runs/{_seg(id)}/cancel", parse=_model(RunInfo))


def run_events(id: str, after: Optional[int], follow: bool) -> Call:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    params = None if follow else {"follow": "false"}
    return Call("GET", f"/v1/runs/{_seg(id)}/events", params=params, headers=headers, timeout="stream")


def run_stage_output(id: str, stage: str) -> Call:
    return Call("GET", f"/v1/runs/{_seg(id)}/stages/{_seg(stage)}/output", parse=_json)


# --- sandboxes -------------------------------------------------------------


def sandbox_create(
    config: Optional[Mapping[str, Any]],
    timeout_secs: Optional[int],
    metadata: Optional[Mapping[str, str]],
) -> Call:
    body: Dict[str, Any] = {"config": dict(config or {})}
    if timeout_secs is not None:
        body["timeout_secs"] = timeout_secs
    if metadata:
        body["metadata"] = dict(metadata)
    return Call("POST", "/v1/sandboxes", json=body, timeout="long", parse=_model(SandboxInfo))


def sandbox_list() -> Call:
    return Call("GET", "/v1/sandboxes", parse=_models(SandboxInfo))


def _sb(id: str) -> str:
    return f"/v1/sandboxes/{_seg(id)}"


def sandbox_get(id: str) -> Call:
    return Call("GET", _sb(id), parse=_model(SandboxInfo))


def sandbox_kill(id: str) -> Call:
    return Call("DELETE", _sb(id), timeout="long")


def sandbox_set_timeout(id: str, secs: int) -> Call:
    return Call("POST", f"{_sb(id)}/timeout", json={"timeout_secs": secs})


def exec_body(
    command: Union[str, Sequence[str], None],
    shell: Optional[str],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    user: Optional[str],
    timeout_secs: Optional[float],
    stdin: Union[str, bytes, None],
    stdin_open: bool = False,
) -> Dict[str, Any]:
    """The body of ``exec`` and ``exec/stream``: a command list (a string
    is one program without arguments) or a ``shell`` line."""
    if (command is None) == (shell is None):
        raise ValueError("give either command (a program and its arguments) or shell")
    body: Dict[str, Any] = {}
    if command is not None:
        body["command"] = [command] if isinstance(command, str) else list(command)
    else:
        body["shell"] = shell
    if env:
        body["env"] = dict(env)
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = user
    if timeout_secs is not None:
        body["timeout_secs"] = timeout_secs
    if stdin is not None:
        body["stdin"] = stdin.decode() if isinstance(stdin, bytes) else stdin
    if stdin_open:
        body["stdin_open"] = True
    return body


def exec_run(id: str, body: Dict[str, Any], request_timeout: TimeoutKind) -> Call:
    if request_timeout == "default":
        # The answer comes when the command ends: its own timeout, and a margin.
        secs = body.get("timeout_secs")
        request_timeout = "long" if secs is None else float(secs) + 30.0
    return Call("POST", f"{_sb(id)}/exec", json=body, timeout=request_timeout, parse=_model(ExecResult))


def exec_stream(id: str, body: Dict[str, Any]) -> Call:
    return Call(
        "POST",
        f"{_sb(id)}/exec/stream",
        json=body,
        headers={"Accept": "text/event-stream"},
        timeout="stream",
    )


def process_stdin(id: str, pid: int, data: Data, eof: bool) -> Call:
    return Call(
        "POST",
        f"{_sb(id)}/processes/{int(pid)}/stdin",
        params={"eof": "true"} if eof else None,
        content=_bytes(data),
        headers={"Content-Type": "application/octet-stream"},
        timeout="long",
    )


def process_kill(id: str, pid: int) -> Call:
    return Call("DELETE", f"{_sb(id)}/processes/{int(pid)}")


def file_read(id: str, path: str) -> Call:
    return Call("GET", f"{_sb(id)}/files", params={"path": path}, timeout="long", parse=lambda r: r.content)


def file_write(id: str, path: str, data: Data, mode: Optional[int]) -> Call:
    params: Dict[str, Any] = {"path": path}
    if mode is not None:
        params["mode"] = int(mode)
    return Call(
        "PUT",
        f"{_sb(id)}/files",
        params=params,
        content=_bytes(data),
        headers={"Content-Type": "application/octet-stream"},
        timeout="long",
    )


def file_stat(id: str, path: str) -> Call:
    return Call("GET", f"{_sb(id)}/files/stat", params={"path": path}, parse=_model(FileStat))


def file_list(id: str, path: str) -> Call:
    return Call("GET", f"{_sb(id)}/files/list", params={"path": path}, parse=_models(FileStat))


def file_mkdir(id: str, path: str) -> Call:
    return Call("POST", f"{_sb(id)}/files/mkdir", json={"path": path})


def file_remove(id: str, path: str) -> Call:
    return Call("DELETE", f"{_sb(id)}/files", params={"path": path}, timeout="long")


def file_rename(id: str, src: str, dst: str) -> Call:
    return Call("POST", f"{_sb(id)}/files/rename", json={"from": src, "to": dst})


# --- sessions --------------------------------------------------------------


def _ss(id: str) -> str:
    return f"/v1/sessions/{_seg(id)}"


def session_create(
    spec: str,
    format: str,
    permissions: Union[Permissions, Mapping[str, Any], None],
    confirm_timeout_secs: Optional[int],
) -> Call:
    body: Dict[str, Any] = {"spec": spec, "format": format}
    if permissions is not None:
        body["permissions"] = (
            permissions.to_dict() if isinstance(permissions, Permissions) else dict(permissions)
        )
    if confirm_timeout_secs is not None:
        body["confirm_timeout_secs"] = confirm_timeout_secs
    return Call("POST", "/v1/sessions", json=body, parse=_model(SessionInfo))


def session_list() -> Call:
    return Call("GET", "/v1/sessions", parse=_models(SessionInfo))


def session_get(id: str) -> Call:
    return Call("GET", _ss(id), parse=_model(SessionInfo))


def session_destroy(id: str) -> Call:
    return Call("DELETE", _ss(id), timeout="long")


def session_generate(id: str, message: str, schema: Optional[Mapping[str, Any]], request_timeout: TimeoutKind) -> Call:
    route = "generate" if schema is None else "generate_object"
    body: Dict[str, Any] = {"message": message}
    if schema is not None:
        body["schema"] = dict(schema)
    if request_timeout == "default":
        request_timeout = "long"
    return Call("POST", f"{_ss(id)}/{route}", json=body, timeout=request_timeout, parse=_model(TurnResult))


def session_stream(id: str, message: str, schema: Optional[Mapping[str, Any]]) -> Call:
    body: Dict[str, Any] = {"message": message}
    if schema is not None:
        body["schema"] = dict(schema)
    return Call(
        "POST",
        f"{_ss(id)}/stream",
        json=body,
        headers={"Accept": "text/event-stream"},
        timeout="stream",
    )


def session_confirm(id: str, confirmation: str, decision: str) -> Call:
    if decision not in ("allow", "deny"):
        raise ValueError(f"decision must be 'allow' or 'deny', not {decision!r}")
    return Call("POST", f"{_ss(id)}/confirmations/{_seg(confirmation)}", json={"decision": decision})


def session_history(id: str) -> Call:
    return Call("GET", f"{_ss(id)}/history", parse=_json)


def session_context(id: str) -> Call:
    return Call("GET", f"{_ss(id)}/context", parse=_model(SessionContext))


def session_clear(id: str) -> Call:
    return Call("POST", f"{_ss(id)}/clear")


def session_compact(id: str) -> Call:
    return Call("POST", f"{_ss(id)}/compact", timeout="long", parse=_model(CompactResult))


def session_cancel(id: str) -> Call:
    return Call("POST", f"{_ss(id)}/cancel")
