// An agent session against a real daemon and one real VM, its model the
// scripted mock (turn N is played when the conversation holds N
// assistant answers, so each call below goes on with the script):
// generate with a tool call, a stream, generate_object, `ask` rules
// answered allow and deny during a stream, history, context, compact,
// clear; and the errors.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ConflictError, NotFoundError, UnauthorizedError, VoidboxError } from '../dist/index.js';
import { agentSpec, startDaemon } from '../testing/daemon.mjs';

const SCRIPT = [
  /* 0 */ { text: 'Looking.', tool_calls: [{ name: 'bash', input: { command: 'uname -s' } }] },
  /* 1 */ { text: 'It is Linux.' },
  /* 2 */ { text: 'Streaming, word by word.' },
  /* 3 */ { text: '{"os": "Linux", "bits": 64}' },
  /* 4 */ { text: 'Cleaning up.', tool_calls: [{ name: 'bash', input: { command: 'rm -f /tmp/scratch.txt' } }] },
  /* 5 */ { text: 'Removed.' },
  /* 6 */ { text: 'Again.', tool_calls: [{ name: 'bash', input: { command: 'rm -f /tmp/keep.txt' } }] },
  /* 7 */ { text: 'Not removed.' },
  /* 8 */ { text: 'We checked the OS (Linux) and removed one scratch file.' },
];

/** A streamed turn where each `confirmation_required` gets `decision`. */
async function streamAnswering(session, message, decision, onWaiting = async () => {}) {
  const events = [];
  for await (const e of session.stream(message)) {
    events.push(e);
    if (e.event === 'confirmation_required') {
      await onWaiting(e);
      await session.confirm(e.id, decision);
    }
  }
  return events;
}

describe('sessions', () => {
  let daemon;
  let client;
  let session;

  before(async () => {
    daemon = await startDaemon();
    client = daemon.client();
    session = await client.sessions.create(agentSpec('helper', SCRIPT), {
      permissions: { ask: ['bash(rm *)'] },
      confirmTimeoutSecs: 120,
    });
  });

  after(async () => {
    await session?.destroy().catch(() => undefined);
    await daemon?.stop();
  });

  test('create, get, list', async () => {
    assert.match(session.id, /^session-/);
    assert.equal(session.info.name, 'helper');
    assert.equal(session.info.busy, false);
    assert.equal(session.info.messages, 0);
    assert.equal((await client.sessions.get(session.id)).id, session.id);
    assert.ok((await client.sessions.list()).some((s) => s.id === session.id));
  });

  test('generate: a turn with a tool call', async () => {
    const result = await session.generate('Which OS is this?');
    assert.match(result.text, /It is Linux\./);
    assert.equal(result.tool_calls.length, 1);
    const [call] = result.tool_calls;
    assert.equal(call.name, 'bash');
    assert.deepEqual(call.arguments, { command: 'uname -s' });
    assert.equal(call.is_error, false);
    assert.equal(result.model_calls, 2);
    assert.ok(result.usage.input_tokens > 0 && result.usage.output_tokens > 0);
  });

  test('stream: text deltas, usage, done', async () => {
    const events = [];
    for await (const e of session.stream('Say something.')) events.push(e);
    const kinds = events.map((e) => e.event);
    assert.ok(kinds.includes('text_delta'), kinds.join());
    assert.ok(kinds.includes('usage'), kinds.join());
    assert.equal(kinds.at(-1), 'done');
    const text = events.filter((e) => e.event === 'text_delta').map((e) => e.text).join('');
    assert.equal(text, 'Streaming, word by word.');
    assert.equal(events.at(-1).result.text, 'Streaming, word by word.');
  });

  test('generateObject: a value valid against the schema', async () => {
    const schema = {
      type: 'object',
      properties: { os: { type: 'string' }, bits: { type: 'integer' } },
      required: ['os', 'bits'],
      additionalProperties: false,
    };
    const result = await session.generateObject('Describe the OS as JSON.', schema);
    assert.deepEqual(result.output, { os: 'Linux', bits: 64 });
    await assert.rejects(session.generateObject('x', { type: 12 }), (e) => e instanceof VoidboxError && e.status === 400);
  });

  test('an ask rule answered allow during a stream; a second turn meanwhile is refused', async () => {
    const events = await streamAnswering(session, 'Remove the scratch file.', 'allow', async (waiting) => {
      assert.equal(waiting.tool, 'bash');
      assert.deepEqual(waiting.arguments, { command: 'rm -f /tmp/scratch.txt' });
      assert.equal(waiting.timeout_secs, 120);
      assert.equal((await session.refresh()).busy, true);
      await assert.rejects(session.generate('meanwhile'), ConflictError);
      await assert.rejects(session.clear(), ConflictError);
    });
    const kinds = events.map((e) => e.event);
    const at = (k) => kinds.indexOf(k);
    for (const k of ['tool_call', 'confirmation_required', 'confirmation_answered', 'tool_result']) {
      assert.equal(kinds.filter((x) => x === k).length, 1, `one ${k} in ${kinds}`);
    }
    assert.ok(at('confirmation_required') < at('confirmation_answered'), kinds.join());
    assert.ok(at('confirmation_answered') < at('tool_result') && at('tool_call') < at('tool_result'), kinds.join());
    const answered = events.find((e) => e.event === 'confirmation_answered');
    assert.equal(answered.decision, 'allow');
    assert.equal(answered.by, 'client');
    assert.equal(events.find((e) => e.event === 'tool_result').is_error, false);
    assert.equal(events.at(-1).event, 'done');
    assert.match(events.at(-1).result.text, /Removed\./);
    // Answered once: not waiting any more.
    await assert.rejects(session.confirm(answered.id, 'deny'), NotFoundError);
  });

  test('an ask rule answered deny: the model is told and goes on', async () => {
    const events = await streamAnswering(session, 'Remove the other file.', 'deny');
    const answered = events.find((e) => e.event === 'confirmation_answered');
    assert.equal(answered.decision, 'deny');
    const result = events.at(-1).result;
    assert.match(result.text, /Not removed\./);
    assert.equal(result.tool_calls.length, 1);
    assert.equal(result.tool_calls[0].is_error, true);
  });

  test('history, context, compact, clear', async () => {
    const history = await session.history();
    assert.equal(history.filter((m) => m.role === 'assistant').length, 8);
    assert.ok(history.some((m) => m.content.some((b) => b.type === 'tool_use' && b.name === 'bash')));
    assert.ok(history.some((m) => m.content.some((b) => b.type === 'tool_result')));

    const context = await session.context();
    assert.equal(context.messages, history.length);
    assert.ok(context.estimated_tokens > 0);
    assert.ok(context.last_input_tokens > 0);
    assert.equal(context.totals.turns, 5);

    const compacted = await session.compact();
    assert.deepEqual(compacted, { messages_before: history.length, messages_after: 2 });
    const summary = await session.history();
    assert.match(JSON.stringify(summary[0]), /removed one scratch file/);

    await session.clear();
    assert.deepEqual(await session.history(), []);
    assert.equal((await session.refresh()).messages, 0);
    await assert.rejects(session.cancel(), ConflictError);
  });

  test('errors: an unknown session, a wrong token, a spec that is not an agent', async () => {
    await assert.rejects(client.sessions.get('session-0000000000000000'), NotFoundError);
    const ghost = await client.sessions.get(session.id);
    await session.destroy();
    await assert.rejects(ghost.generate('hello?'), NotFoundError);
    await assert.rejects(client.sessions.get(session.id), NotFoundError);
    session = undefined;

    const intruder = daemon.client({ token: 'not-the-token-at-all' });
    await assert.rejects(intruder.sessions.list(), UnauthorizedError);
    await assert.rejects(intruder.sandboxes.create(), UnauthorizedError);
    assert.equal((await intruder.health()).status, 'ok'); // health needs no token

    await assert.rejects(
      client.sessions.create('api_version: v1\nkind: sandbox\nname: s\nrun: {program: true}\n'),
      (e) => e instanceof VoidboxError && e.status === 422 && /agent/.test(e.message),
    );
    await assert.rejects(
      client.sessions.create(agentSpec('x', SCRIPT), { permissions: { default: 'maybe' } }),
      (e) => e instanceof VoidboxError && e.status >= 400 && e.status < 500,
    );
  });
});
