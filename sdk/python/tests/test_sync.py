"""The sync client end to end, against a real daemon booting real VMs."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

import voidbox
from specs import AGENT_RUN, ASK_RM, LONG_RUN, OS_SCHEMA, SANDBOX_RUN, SESSION
from voidbox import (
    Conflict,
    ConfirmationAnsweredEvent,
    ConfirmationRequiredEvent,
    DoneEvent,
    Forbidden,
    NotFound,
    TextDeltaEvent,
    ToolCallEvent,
    ToolResultEvent,
    Unauthorized,
    Unprocessable,
    UsageEvent,
)

# --- the daemon -------------------------------------------------------------


def test_health(client: voidbox.Client) -> None:
    health = client.health()
    assert health.status == "ok" and health.version


def test_wrong_or_no_token_is_unauthorized(daemon) -> None:
    for token in ("not-the-token-0123456789", None):
        with voidbox.Client(daemon.url, token=token) as other:
            assert other.health().status == "ok"  # needs none
            with pytest.raises(Unauthorized) as refused:
                other.sandboxes.list()
            assert refused.value.status == 401


# --- a sandbox --------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(client: voidbox.Client) -> Iterator[voidbox.Sandbox]:
    sb = client.sandboxes.create({"memory_mb": 256}, metadata={"suite": "sdk-python"})
    with sb:
        yield sb


def test_exec(sandbox: voidbox.Sandbox) -> None:
    result = sandbox.exec(["uname", "-s"])
    assert result.ok and result.stdout.strip() == "Linux", result
    shell = sandbox.exec(
        shell='echo "$GREETING from $(pwd)"; cat; echo oops >&2; exit 3',
        env={"GREETING": "hello"},
        cwd="/tmp",
        stdin="piped in\n",
    )
    assert shell.exit_code == 3 and not shell.ok
    assert shell.stdout == "hello from /tmp\npiped in\n"
    assert shell.stderr == "oops\n"
    slow = sandbox.exec(["sleep", "30"], timeout_secs=1)
    assert slow.timed_out


def test_exec_stream_stdin_by_pid(sandbox: voidbox.Sandbox) -> None:
    with sandbox.exec_stream(["cat"], stdin_open=True) as stream:
        assert stream.pid and stream.pid > 0
        sandbox.write_stdin(stream.pid, b"hello ")
        stream.write_stdin(b"\xffworld\n", eof=True)
        events = list(stream)
    assert events[0].event == "started" and events[0].pid == stream.pid
    assert b"".join(e.data for e in events if e.event == "stdout") == b"hello \xffworld\n"
    assert events[-1].event == "exit" and events[-1].exit_code == 0
    assert stream.exit is events[-1]


def test_exec_stream_stderr_and_kill_by_pid(sandbox: voidbox.Sandbox) -> None:
    both = list(sandbox.exec_stream(shell="echo out; echo err >&2"))
    assert b"".join(e.data for e in both if e.event == "stdout") == b"out\n"
    assert b"".join(e.data for e in both if e.event == "stderr") == b"err\n"
    events = iter(sandbox.exec_stream(["sleep", "600"]))
    started = next(events)
    assert started.event == "started"
    sandbox.kill_process(started.pid)
    rest = list(events)
    assert rest[-1].event == "exit" and rest[-1].signal == 9, rest
    with pytest.raises(NotFound):
        sandbox.kill_process(started.pid)


def test_files(sandbox: voidbox.Sandbox) -> None:
    blob = bytes(range(256)) * 8 + b"\xff\xfe\x00 not UTF-8"
    sandbox.write("/workspace/sdk/blob.bin", blob, mode=0o600)
    assert sandbox.read("/workspace/sdk/blob.bin") == blob
    stat = sandbox.stat("/workspace/sdk/blob.bin")
    assert (stat.name, stat.kind, stat.size, stat.mode & 0o777) == ("blob.bin", "file", len(blob), 0o600)
    sandbox.write("/workspace/sdk/note.txt", "héllo")
    assert sandbox.exec(["cat", "/workspace/sdk/note.txt"]).stdout == "héllo"
    sandbox.mkdir("/workspace/sdk/dir/deeper")
    assert sorted(e.name for e in sandbox.list("/workspace/sdk")) == ["blob.bin", "dir", "note.txt"]
    assert sandbox.stat("/workspace/sdk/dir").is_dir
    sandbox.rename("/workspace/sdk/blob.bin", "/workspace/sdk/dir/moved.bin")
    assert sandbox.read("/workspace/sdk/dir/moved.bin") == blob
    with pytest.raises(NotFound):
        sandbox.read("/workspace/sdk/blob.bin")
    sandbox.remove("/workspace/sdk")
    with pytest.raises(NotFound):
        sandbox.stat("/workspace/sdk")
    with pytest.raises(Forbidden):
        sandbox.write("/etc/evil", b"x")


def test_sandbox_info_list_and_timeout(client: voidbox.Client, sandbox: voidbox.Sandbox) -> None:
    got = client.sandboxes.get(sandbox.id)
    assert got.info.memory_mb == 256 and got.info.metadata == {"suite": "sdk-python"}
    assert got.info.accel in ("kvm", "tcg")
    assert sandbox.id in [s.id for s in client.sandboxes.list()]
    assert got.info.expires_unix_ms is None
    sandbox.set_timeout(3600)
    assert sandbox.refresh().expires_unix_ms is not None
    with pytest.raises(NotFound):
        client.sandboxes.get("no-such-sandbox")


def test_with_block_kills_the_sandbox(client: voidbox.Client, sandbox: voidbox.Sandbox) -> None:
    with sandbox:
        pass
    with pytest.raises(NotFound):
        client.sandboxes.get(sandbox.id)


# --- runs -------------------------------------------------------------------


def test_run_of_a_sandbox_spec(client: voidbox.Client) -> None:
    run = client.runs.submit(SANDBOX_RUN, input="from input\n")
    assert (run.kind, run.name) == ("sandbox", "hello") and run.status in ("queued", "running")
    stream = client.runs.events(run.id)
    events = list(stream)
    assert stream.end is not None and stream.end.status == "succeeded", stream.end
    kinds = [e.event for e in events]
    assert kinds[0] == "stage_started" and "sandbox_ready" in kinds and "stage_finished" in kinds, kinds
    printed = "".join(e.get("text", "") for e in events if e.event == "output")
    assert "Linux" in printed and "from input" in printed, printed
    ids = [e.id for e in events]
    assert ids == sorted(ids) and None not in ids
    # Resumed after the second event: the rest, none lost or repeated.
    after = events[1].id
    resumed = list(client.runs.events(run.id, after=after, follow=False))
    assert [e.id for e in resumed] == [i for i in ids if i > after]
    done = client.runs.wait(run.id, timeout=60)
    assert done.status == "succeeded" and done.result is not None
    assert "Linux" in json.dumps(done.output)
    assert "Linux" in json.dumps(client.runs.stage_output(run.id, "hello"))
    assert run.id in [r.id for r in client.runs.list()]


def test_run_of_a_mock_agent(client: voidbox.Client) -> None:
    run = client.runs.submit(AGENT_RUN)
    stream = client.runs.events(run.id)
    events = list(stream)
    assert stream.end is not None and stream.end.status == "succeeded", stream.end
    calls = [e for e in events if e.event == "tool_call_started"]
    assert calls and calls[0].get("name") == "bash" and calls[0].get("arguments") == {"command": "uname -s"}
    finished = [e for e in events if e.event == "tool_call_finished"]
    assert finished and "Linux" in finished[0].get("summary") and not finished[0].get("is_error")
    text = "".join(e.get("text", "") for e in events if e.event == "text_delta")
    assert "It is Linux." in text
    assert all(e.box_name == "helper" for e in events if e.box_name is not None)
    done = client.runs.get(run.id)
    assert done.status == "succeeded" and "It is Linux." in json.dumps(done.output)


def test_cancel_a_long_run(client: voidbox.Client) -> None:
    run = client.runs.submit(LONG_RUN)
    for event in client.runs.events(run.id):
        if event.event == "sandbox_ready":
            break
    cancelled = client.runs.cancel(run.id)
    assert cancelled.id == run.id
    assert client.runs.wait(run.id, timeout=30).status == "cancelled"
    with pytest.raises(Conflict):
        client.runs.cancel(run.id)
    with pytest.raises(NotFound):
        client.runs.get("no-such-run")
    with pytest.raises(Unprocessable):
        client.runs.submit("kind: agent\nname: broken\n")


# --- a session --------------------------------------------------------------


@pytest.fixture(scope="module")
def session(client: voidbox.Client) -> Iterator[voidbox.Session]:
    s = client.sessions.create(SESSION, permissions=ASK_RM, confirm_timeout_secs=60)
    with s:
        yield s


def test_generate_with_a_tool_call(session: voidbox.Session) -> None:
    assert session.info.name == "helper" and not session.info.busy
    result = session.generate("What OS is this?")
    assert "It is Linux." in result.text
    assert [c.name for c in result.tool_calls] == ["bash"]
    call = result.tool_calls[0]
    assert call.arguments == {"command": "uname -s"} and "Linux" in call.summary and not call.is_error
    assert result.model_calls == 2 and result.usage.input_tokens > 0
    info = session.refresh()
    assert info.totals.turns == 1 and info.messages >= 4


def test_stream_text_deltas_and_done(session: voidbox.Session) -> None:
    stream = session.stream("Say hello.")
    events = list(stream)
    text = "".join(e.text for e in events if isinstance(e, TextDeltaEvent))
    assert text == "Hello there."
    assert any(isinstance(e, UsageEvent) for e in events)
    assert isinstance(events[-1], DoneEvent) and events[-1].result.text == "Hello there."
    assert stream.result is not None and stream.error is None


def test_generate_object(session: voidbox.Session) -> None:
    result = session.generate_object("Describe the OS as JSON.", OS_SCHEMA)
    assert result.output == {"os": "Linux", "cpus": 1}


def test_ask_rule_confirmed_during_stream(session: voidbox.Session) -> None:
    events = []
    with session.stream("Clean up /tmp/scratch.") as stream:
        for event in stream:
            events.append(event)
            if isinstance(event, ConfirmationRequiredEvent):
                assert event.tool == "bash" and event.arguments["command"].startswith("rm ")
                assert event.timeout_secs == 60
                with pytest.raises(Conflict):  # one turn at a time
                    session.generate("meanwhile")
                stream.confirm(event.id, "allow")
                with pytest.raises(NotFound):  # answered already
                    session.confirm(event.id, "deny")
    kinds = [e.event for e in events]
    # (`tool_call` and `text_delta` may come before or after
    # `confirmation_required`: the daemon does not keep their order.)
    assert kinds.index("confirmation_required") < kinds.index("confirmation_answered") < kinds.index("tool_result")
    answered = next(e for e in events if isinstance(e, ConfirmationAnsweredEvent))
    assert (answered.decision, answered.by) == ("allow", "client")
    assert next(e for e in events if isinstance(e, ToolCallEvent)).name == "bash"
    outcome = next(e for e in events if isinstance(e, ToolResultEvent))
    assert "removed" in outcome.summary and not outcome.is_error
    assert stream.result is not None and "Removed." in stream.result.text


def test_history_context_compact_clear(client: voidbox.Client, session: voidbox.Session) -> None:
    history = session.history()
    assert history[0]["role"] == "user" and {m["role"] for m in history} == {"user", "assistant"}
    context = session.context()
    assert context.messages == len(history) == session.refresh().messages
    assert context.estimated_tokens > 0 and context.totals.turns == 4
    compacted = session.compact()
    assert compacted.messages_before == len(history) and compacted.messages_after == 2
    assert len(session.history()) == 2
    session.clear()
    assert session.history() == [] and session.context().messages == 0
    assert session.id in [s.id for s in client.sessions.list()]


def test_session_errors_and_destroy(client: voidbox.Client, session: voidbox.Session) -> None:
    with pytest.raises(NotFound):
        client.sessions.get("no-such-session")
    with pytest.raises(Conflict):
        session.cancel()  # no turn under way
    with pytest.raises(Unprocessable):
        client.sessions.create(SANDBOX_RUN)  # not an agent
    with pytest.raises(ValueError):
        session.confirm("confirm-x", "maybe")
    assert client.sessions.get(session.id).info.messages == 0
    session.destroy()
    with pytest.raises(NotFound):
        client.sessions.get(session.id)
