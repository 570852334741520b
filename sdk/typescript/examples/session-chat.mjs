// An agent session with the scripted mock model (no API key needed): a
// generate turn with a tool call, then a streamed turn whose `rm` call
// waits for a confirmation that this script gives, then an object turn.
//
//   VOIDBOX_URL=http://127.0.0.1:8080 VOIDBOX_TOKEN=... node examples/session-chat.mjs
//
// With a real model, replace the `llm` section (`provider: anthropic` and
// ANTHROPIC_API_KEY in the daemon's environment).

import { VoidboxClient } from '../dist/index.js';

const spec = `
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
      - {text: Cleaning up., tool_calls: [{name: bash, input: {command: 'rm -rf /tmp/cache'}}]}
      - {text: Done.}
      - {text: '{"os": "Linux", "cleaned": true}'}
agent:
  prompt: You help.
`;

const client = new VoidboxClient();
const session = await client.sessions.create(spec, {
  permissions: { ask: ['bash(rm *)'] }, // every `rm` waits for us
  confirmTimeoutSecs: 60,
});
try {
  const first = await session.generate('Which OS is this?');
  console.log(`> ${first.text}  (${first.tool_calls.length} tool call, ${first.model_calls} model calls)`);

  for await (const event of session.stream('Clean the cache.')) {
    switch (event.event) {
      case 'text_delta':
        process.stdout.write(event.text);
        break;
      case 'confirmation_required': {
        console.log(`\n? ${event.tool} ${JSON.stringify(event.arguments)}: allowing`);
        await session.confirm(event.id, 'allow');
        break;
      }
      case 'tool_result':
        console.log(`\n[${event.name}] ${event.is_error ? 'failed' : 'ok'}: ${event.summary}`);
        break;
      case 'done':
        console.log(`\n(done: ${event.result.usage.input_tokens} tokens in)`);
        break;
      case 'error':
        console.error(`\nturn failed: ${event.message}`);
        break;
    }
  }

  const { output } = await session.generateObject('Report as JSON.', {
    type: 'object',
    properties: { os: { type: 'string' }, cleaned: { type: 'boolean' } },
    required: ['os', 'cleaned'],
  });
  console.log('object:', output);
  console.log('context:', await session.context());
} finally {
  await session.destroy();
}
