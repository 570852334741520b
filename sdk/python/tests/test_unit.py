"""Parts that need no daemon: the SSE parser, models, errors, the endpoint
and a run's event stream resuming after a broken connection (httpx's mock
transport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import voidbox
from voidbox import SSEEvent, SSEParser, iter_sse
from voidbox._config import SOCKET_BASE_URL, resolve
from voidbox.models import ExecEvent, session_event


def test_sse_fields_comments_and_multiline_data() -> None:
    lines = [
        ": a comment",
        "event: stdout",
        "id: 7",
        "data: first",
        "data:second",
        "retry: 1000",
        "",
        "data: {\"x\": 1}",
        "",
        "event: lone",  # a block without data dispatches nothing
        "",
        "data: unterminated",
    ]
    events = list(iter_sse(lines))
    assert events == [
        SSEEvent(event="stdout", data="first\nsecond", id="7", retry=1000),
        SSEEvent(event="message", data='{"x": 1}', id=None),
    ]


def test_sse_parser_keeps_last_event_id_and_strips_one_space() -> None:
    parser = SSEParser()
    assert parser.feed("id: 3") is None
    assert parser.feed("data:  two spaces") is None
    event = parser.feed("")
    assert event == SSEEvent(data=" two spaces", id="3")
    parser.feed("data: x")
    assert parser.feed("").id is None
    assert parser.last_event_id == "3"


def test_models_ignore_unknown_keys() -> None:
    info = voidbox.SessionInfo.from_dict(
        {"id": "s1", "name": "helper", "busy": False, "totals": {"turns": 2, "new": 1}, "later": True}
    )
    assert info.id == "s1" and info.totals.turns == 2
    assert info.raw["later"] is True
    turn = voidbox.TurnResult.from_dict(
        {"text": "hi", "tool_calls": [{"id": "c", "name": "bash", "x": 0}], "usage": {"input_tokens": 3}}
    )
    assert turn.tool_calls[0].name == "bash" and turn.usage.input_tokens == 3


def test_events_are_typed() -> None:
    done = session_event(SSEEvent("done", json.dumps({"event": "done", "result": {"text": "ok"}})))
    assert isinstance(done, voidbox.DoneEvent) and done.result.text == "ok" and done.final
    ask = session_event(
        SSEEvent(
            "confirmation_required",
            json.dumps({"event": "confirmation_required", "id": "c1", "tool": "bash", "arguments": {}, "timeout_secs": 5}),
        )
    )
    assert isinstance(ask, voidbox.ConfirmationRequiredEvent) and ask.id == "c1"
    other = session_event(SSEEvent("novel", json.dumps({"event": "novel", "x": 1})))
    assert isinstance(other, voidbox.UnknownEvent) and other.name == "novel"
    out = ExecEvent.from_sse(SSEEvent("stdout", '{"event": "stdout", "data": "/w8="}'), 42)
    assert out.data == b"\xff\x0f" and out.pid == 42


def test_errors_by_status_with_retry_after() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sandboxes":
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"code": 429, "message": "full"})
        return httpx.Response(404, json={"code": 404, "message": "no run `x`"})

    with voidbox.Client("http://test", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(voidbox.RateLimited) as limited:
            client.sandboxes.list()
        assert limited.value.retry_after == 1.0 and limited.value.status == 429
        with pytest.raises(voidbox.NotFound, match="no run `x`"):
            client.runs.get("x")


def test_endpoint_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOIDBOX_URL", "VOIDBOX_TOKEN", "VOIDBOX_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert resolve(None, None, None).socket == "/run/user/1000/voidbox.sock"
    monkeypatch.setenv("VOIDBOX_URL", "tcp:127.0.0.1:9")
    monkeypatch.setenv("VOIDBOX_TOKEN", "secret")
    endpoint = resolve(None, None, None)
    assert (endpoint.base_url, endpoint.socket, endpoint.token) == ("http://127.0.0.1:9", None, "secret")
    assert endpoint.headers()["Authorization"] == "Bearer secret"
    assert resolve("unix:/tmp/v.sock", None, "t").base_url == SOCKET_BASE_URL
    with pytest.raises(ValueError):
        resolve("http://x", "/tmp/s", None)


def _broken_then_whole() -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """The first answer breaks off after event 2; the second must resume."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            body = "".join(
                f"id: {n}\nevent: output\ndata: {json.dumps({'event': 'output', 'text': str(n)})}\n\n"
                for n in (1, 2)
            )
        else:
            body = (
                f"id: 3\nevent: output\ndata: {json.dumps({'event': 'output', 'text': '3'})}\n\n"
                f"event: end\ndata: {json.dumps({'id': 'r', 'status': 'succeeded'})}\n\n"
            )
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body.encode())

    return httpx.MockTransport(answer), seen


def test_run_events_resume_with_last_event_id() -> None:
    transport, seen = _broken_then_whole()
    with voidbox.Client("http://test", transport=transport) as client:
        stream = client.runs.events("r")
        assert [e.id for e in stream] == [1, 2, 3]
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "2"
    assert stream.end is not None and stream.end.status == "succeeded"


def test_async_run_events_resume_with_last_event_id() -> None:
    transport, seen = _broken_then_whole()

    async def main() -> list:
        async with voidbox.AsyncClient("http://test", transport=transport) as client:
            return [e.id async for e in client.runs.events("r", after=0)]

    assert asyncio.run(main()) == [1, 2, 3]
    assert seen[0].headers["last-event-id"] == "0" and seen[1].headers["last-event-id"] == "2"
