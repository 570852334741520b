"""Run a spec on the daemon and follow its events.

    python run_spec.py                 # a built-in agent spec (mock model)
    python run_spec.py path/spec.yaml  # a local spec file

It reads VOIDBOX_URL and VOIDBOX_TOKEN (else the default Unix socket).
"""

import sys

from voidbox import Client

SPEC = """\
api_version: v1
kind: agent
name: helper
sandbox: {memory_mb: 256}
llm:
  provider: mock
  mock:
    turns:
      - {text: Looking., tool_calls: [{name: bash, input: {command: 'uname -s'}}]}
      - {text: It is Linux.}
agent:
  prompt: Which OS runs here?
"""


def main() -> int:
    with Client() as client:
        if len(sys.argv) > 1:
            run = client.runs.submit_file(sys.argv[1])
        else:
            run = client.runs.submit(SPEC)
        print(f"run {run.id} ({run.kind} {run.name}): {run.status}")
        events = client.runs.events(run.id)
        for event in events:
            if event.event == "text_delta":
                print(event.get("text"), end="", flush=True)
            elif event.event == "output":
                print(event.get("text"), end="", flush=True)
            elif event.event == "tool_call_started":
                print(f"\n[{event.box_name}] {event.get('name')} {event.get('arguments')}")
            elif event.event == "tool_call_finished":
                print(f"[{event.box_name}] -> {event.get('summary')}")
            else:
                print(f"\n#{event.id} {event.event}")
        run = client.runs.get(run.id)
        print(f"\n{run.status}: output {run.output!r}" + (f", error {run.error}" if run.error else ""))
        return 0 if run.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
