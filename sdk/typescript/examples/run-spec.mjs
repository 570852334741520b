// Runs: a mock-LLM agent spec submitted, its events followed live, its
// result read; then a command spec with input.
//
//   VOIDBOX_URL=http://127.0.0.1:8080 VOIDBOX_TOKEN=... node examples/run-spec.mjs

import { VoidboxClient } from '../dist/index.js';

const client = new VoidboxClient();

const agent = `
api_version: v1
kind: agent
name: helper
sandbox: {memory_mb: 256}
llm:
  provider: mock
  mock:
    turns:
      - {text: 'Looking. ', tool_calls: [{name: bash, input: {command: 'uname -s'}}]}
      - {text: It is Linux.}
agent:
  prompt: Which OS is this?
`;

const run = await client.runs.submit(agent);
console.log(`run ${run.id}: ${run.status}`);
for await (const event of client.runs.events(run.id)) {
  switch (event.event) {
    case 'sandbox_ready':
      console.log(`[${event.seq}] sandbox up in ${event.boot} ms (${event.accel})`);
      break;
    case 'text_delta':
      console.log(`[${event.seq}] model: ${event.text}`);
      break;
    case 'tool_call_started':
      console.log(`[${event.seq}] ${event.name} ${JSON.stringify(event.arguments)}`);
      break;
    case 'tool_call_finished':
      console.log(`[${event.seq}] -> ${event.summary}`);
      break;
    case 'end':
      console.log(`end: ${event.run?.status}`);
      break;
  }
}
const done = await client.runs.get(run.id);
console.log('output:', done.output);

const command = `
api_version: v1
kind: sandbox
name: upper
sandbox: {memory_mb: 256}
run: {program: tr, args: [a-z, A-Z]}
`;
const upper = await client.runs.wait((await client.runs.submit(command, { input: 'shout this\n' })).id);
console.log(`${upper.name}: ${upper.status}:`, upper.output);
