"""The async client end to end, against the same daemon: each test runs
its own event loop (``asyncio.run``), so it needs no pytest plugin."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

import pytest

import voidbox
from specs import AGENT_RUN, ASK_RM, LONG_RUN, OS_SCHEMA, SANDBOX_RUN, SESSION
from voidbox import (
    AsyncClient,
    Conflict,
    ConfirmationAnsweredEvent,
    ConfirmationRequiredEvent,
    DoneEvent,
    NotFound,
    TextDeltaEvent,
    ToolResultEvent,
    Unauthorized,
)


def run(daemon, body: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
    """Runs ``body`` with an async client of the test daemon."""

    async def main() -> Any:
        async with AsyncClient(daemon.url, token=daemon.token) as client:
            return await body(client)

    return asyncio.run(main())


def test_async_errors(daemon) -> None:
    async def body(client: AsyncClient) -> None:
        assert (await client.health()).status == "ok"
        async with AsyncClient(daemon.url, token="not-the-token-0123456789") as other:
            with pytest.raises(Unauthorized):
                await other.sessions.list()
        with pytest.raises(NotFound):
            await client.sessions.get("no-such-session")
        with pytest.raises(NotFound):
            await client.runs.get("no-such-run")

    run(daemon, body)


def test_async_sandbox(daemon) -> None:
    async def body(client: AsyncClient) -> None:
        async with await client.sandboxes.create({"memory_mb": 256}) as sb:
            assert (await sb.exec(["uname", "-s"])).stdout.strip() == "Linux"
            # stdin fed by pid while the command is followed
            async with sb.exec_stream(["cat"], stdin_open=True) as stream:
                await sb.write_stdin(stream.pid, b"one ")
                await stream.write_stdin(b"\xfetwo", eof=True)
                events = [e async for e in stream]
            assert events[0].event == "started"
            assert b"".join(e.data for e in events if e.event == "stdout") == b"one \xfetwo"
            assert events[-1].event == "exit" and events[-1].exit_code == 0
            # killed by pid
            sleeper = sb.exec_stream(["sleep", "600"])
            await sleeper.open()
            await sb.kill_process(sleeper.pid)
            ended = await sleeper.wait()
            assert ended is not None and ended.signal == 9
            # files
            blob = b"\x00\xff\xfe" + bytes(range(256))
            await sb.write("/tmp/sdk/blob", blob, mode=0o640)
            assert await sb.read("/tmp/sdk/blob") == blob
            assert (await sb.stat("/tmp/sdk/blob")).mode & 0o777 == 0o640
            await sb.mkdir("/tmp/sdk/d")
            await sb.rename("/tmp/sdk/blob", "/tmp/sdk/d/blob")
            assert [e.name for e in await sb.list("/tmp/sdk/d")] == ["blob"]
            await sb.remove("/tmp/sdk")
            with pytest.raises(NotFound):
                await sb.read("/tmp/sdk/d/blob")
            assert sb.id in [s.id for s in await client.sandboxes.list()]
            await sb.set_timeout(600)
            assert (await sb.refresh()).expires_unix_ms is not None
        with pytest.raises(NotFound):
            await client.sandboxes.get(sb.id)

    run(daemon, body)


def test_async_runs(daemon) -> None:
    async def body(client: AsyncClient) -> None:
        quick = await client.runs.submit(SANDBOX_RUN, input="async input\n")
        stream = client.runs.events(quick.id)
        events = [e async for e in stream]
        assert stream.end is not None and stream.end.status == "succeeded"
        printed = "".join(e.get("text", "") for e in events if e.event == "output")
        assert "Linux" in printed and "async input" in printed
        assert (await client.runs.wait(quick.id, timeout=60)).status == "succeeded"
        assert "Linux" in json.dumps(await client.runs.stage_output(quick.id, "hello"))

        agent = await client.runs.submit(AGENT_RUN)
        stream = client.runs.events(agent.id)
        events = [e async for e in stream]
        assert stream.end is not None and stream.end.status == "succeeded"
        assert [e.get("name") for e in events if e.event == "tool_call_started"] == ["bash"]
        assert "It is Linux." in json.dumps((await client.runs.get(agent.id)).output)

        long = await client.runs.submit(LONG_RUN)
        follow = client.runs.events(long.id)
        async for event in follow:
            if event.event == "sandbox_ready":
                break
        await client.runs.cancel(long.id)
        assert (await client.runs.wait(long.id, timeout=30)).status == "cancelled"
        with pytest.raises(Conflict):
            await client.runs.cancel(long.id)

    run(daemon, body)


def test_async_session(daemon) -> None:
    async def body(client: AsyncClient) -> None:
        session = await client.sessions.create(SESSION, permissions=voidbox.Permissions(ask=ASK_RM["ask"]))
        async with session:
            first = await session.generate("What OS is this?")
            assert "It is Linux." in first.text and first.tool_calls[0].name == "bash"
            assert "Linux" in first.tool_calls[0].summary

            stream = session.stream("Say hello.")
            events = [e async for e in stream]
            assert "".join(e.text for e in events if isinstance(e, TextDeltaEvent)) == "Hello there."
            assert isinstance(events[-1], DoneEvent)

            obj = await session.generate_object("Describe the OS as JSON.", OS_SCHEMA)
            assert obj.output == {"os": "Linux", "cpus": 1}

            events = []
            async with session.stream("Clean up /tmp/scratch.") as stream:
                async for event in stream:
                    events.append(event)
                    if isinstance(event, ConfirmationRequiredEvent):
                        await stream.confirm(event.id, "allow")
            answered = next(e for e in events if isinstance(e, ConfirmationAnsweredEvent))
            assert (answered.decision, answered.by) == ("allow", "client")
            assert "removed" in next(e for e in events if isinstance(e, ToolResultEvent)).summary
            assert stream.result is not None and "Removed." in stream.result.text

            history = await session.history()
            context = await session.context()
            assert context.messages == len(history) > 0 and context.totals.turns == 4
            await session.clear()
            assert await session.history() == []
        with pytest.raises(NotFound):
            await client.sessions.get(session.id)

    run(daemon, body)
