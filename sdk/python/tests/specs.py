"""The specs the tests run: small VMs, the mock model (no API key)."""

#: A `kind: sandbox` run: `uname -s`, then its input back.
SANDBOX_RUN = """\
api_version: v1
kind: sandbox
name: hello
sandbox: {memory_mb: 256}
run: {program: sh, args: [-c, 'uname -s; cat']}
"""

#: A run that goes on until it is cancelled.
LONG_RUN = """\
api_version: v1
kind: sandbox
name: long
sandbox: {memory_mb: 256}
run: {program: sleep, args: ['600']}
"""

#: An agent run: the mock model calls bash, then answers.
AGENT_RUN = """\
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
  prompt: You help.
"""

#: A session's script: the model plays turn N = the assistant answers so
#: far, so each test turn continues it: generate with a tool call (0, 1),
#: a streamed answer (2), a JSON object (3), a call an `ask` rule stops
#: (4, 5), the summary `compact` asks for (6).
SESSION = """\
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
      - {text: Hello there.}
      - {text: '{"os": "Linux", "cpus": 1}'}
      - {text: Cleaning up., tool_calls: [{name: bash, input: {command: 'rm -f /tmp/scratch && echo removed'}}]}
      - {text: Removed.}
      - {text: 'Summary: the OS is Linux; /tmp/scratch was removed.'}
agent:
  prompt: You help.
"""

#: The permissions the session runs with: `rm` asks.
ASK_RM = {"ask": ["bash(rm *)"]}

#: The schema of turn 3's answer.
OS_SCHEMA = {
    "type": "object",
    "properties": {"os": {"type": "string"}, "cpus": {"type": "integer"}},
    "required": ["os", "cpus"],
}
