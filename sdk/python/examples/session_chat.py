"""A chat with an agent session, a human in the loop for risky calls.

    python session_chat.py          # asks before each `rm` (auto-allows without a TTY)
    python session_chat.py --deny   # refuses them

The spec uses the mock model, so no API key is needed: its scripted turns
play one after the other across the session's turns. It reads VOIDBOX_URL
and VOIDBOX_TOKEN (else the default Unix socket).
"""

import sys

from voidbox import (
    Client,
    ConfirmationAnsweredEvent,
    ConfirmationRequiredEvent,
    DoneEvent,
    ErrorEvent,
    TextDeltaEvent,
    ToolCallEvent,
    ToolResultEvent,
)

SPEC = """\
api_version: v1
kind: agent
name: janitor
sandbox: {memory_mb: 256}
llm:
  provider: mock
  mock:
    turns:
      - {text: 'Let me look.', tool_calls: [{name: bash, input: {command: 'mkdir -p /tmp/junk && touch /tmp/junk/a /tmp/junk/b && ls /tmp/junk'}}]}
      - {text: 'There are two files in /tmp/junk.'}
      - {text: 'Removing them.', tool_calls: [{name: bash, input: {command: 'rm -rf /tmp/junk && echo gone'}}]}
      - {text: 'Done.'}
      - {text: '{"removed": 2, "directory": "/tmp/junk"}'}
agent:
  prompt: You keep /tmp tidy.
"""

REPORT_SCHEMA = {
    "type": "object",
    "properties": {"removed": {"type": "integer"}, "directory": {"type": "string"}},
    "required": ["removed", "directory"],
}


def decide(event: ConfirmationRequiredEvent, deny: bool) -> str:
    """Asks the human (when there is one) whether the call may run."""
    if deny:
        return "deny"
    if not sys.stdin.isatty():
        print(f"  (no TTY: allowing {event.tool} {event.arguments})")
        return "allow"
    answer = input(f"  allow {event.tool} {event.arguments}? [y/N] ")
    return "allow" if answer.strip().lower() in ("y", "yes") else "deny"


def main() -> None:
    deny = "--deny" in sys.argv
    with Client() as client, client.sessions.create(
        SPEC, permissions={"ask": ["bash(rm *)"]}, confirm_timeout_secs=120
    ) as session:
        for message in ("What is in /tmp/junk?", "Please delete it."):
            print(f"you> {message}")
            print("agent> ", end="", flush=True)
            with session.stream(message) as stream:
                for event in stream:
                    if isinstance(event, TextDeltaEvent):
                        print(event.text, end="", flush=True)
                    elif isinstance(event, ToolCallEvent):
                        print(f"\n  [{event.name}] {event.arguments}")
                    elif isinstance(event, ToolResultEvent):
                        print(f"  [{event.name}] -> {event.summary}{' (error)' if event.is_error else ''}")
                    elif isinstance(event, ConfirmationRequiredEvent):
                        print(f"\n  confirmation {event.id} (answer within {event.timeout_secs} s)")
                        session.confirm(event.id, decide(event, deny))
                    elif isinstance(event, ConfirmationAnsweredEvent):
                        print(f"  {event.decision} (by {event.by})")
                    elif isinstance(event, DoneEvent):
                        print()
                    elif isinstance(event, ErrorEvent):
                        print(f"\n  the turn failed: {event.message}")
        report = session.generate_object("Report what you removed, as JSON.", REPORT_SCHEMA)
        print("report:", report.output)
        context = session.context()
        print(f"{context.messages} messages, ~{context.estimated_tokens} tokens, {context.totals.turns} turns")


if __name__ == "__main__":
    main()
