// Runs against a real daemon, one VM at a time: a `kind: sandbox` run and
// its events (resumed after a number), a mock-LLM agent run followed live,
// a long run cancelled, specs refused.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ConflictError, NotFoundError, VoidboxError } from '../dist/index.js';
import { agentSpec, startDaemon } from '../testing/daemon.mjs';

describe('runs', () => {
  let daemon;
  let client;

  before(async () => {
    daemon = await startDaemon();
    client = daemon.client();
  });

  after(async () => {
    await daemon?.stop();
  });

  test('a kind: sandbox run, its events, resumed after a number', async () => {
    const spec = 'api_version: v1\nkind: sandbox\nname: hello\nsandbox: {memory_mb: 256}\nrun: {program: sh, args: [-c, "uname -s; cat"]}\n';
    const run = await client.runs.submit(spec, { input: 'from stdin\n' });
    assert.equal(run.kind, 'sandbox');
    assert.equal(run.name, 'hello');
    assert.ok(['queued', 'running'].includes(run.status), run.status);

    const done = await client.runs.wait(run.id);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.ok(done.ended_unix_ms >= done.created_unix_ms);
    assert.ok(done.result && typeof done.result === 'object');
    assert.match(JSON.stringify(done.output), /Linux\\nfrom stdin/);

    const all = [];
    for await (const e of client.runs.events(run.id, { follow: false })) all.push(e);
    const kinds = all.map((e) => e.event);
    assert.equal(kinds.at(-1), 'end');
    assert.equal(all.at(-1).run.status, 'succeeded');
    for (const k of ['stage_started', 'sandbox_ready', 'output', 'stage_finished']) assert.ok(kinds.includes(k), `${k} in ${kinds}`);
    const numbered = all.slice(0, -1);
    assert.deepEqual(
      numbered.map((e) => e.seq),
      numbered.map((_, i) => i + 1),
    );
    const output = numbered.filter((e) => e.event === 'output').map((e) => e.text).join('');
    assert.equal(output, 'Linux\nfrom stdin\n');

    // Resumed after event N: the rest, none lost or repeated.
    const n = numbered.length - 2;
    const rest = [];
    for await (const e of client.runs.events(run.id, { after: n })) rest.push(e);
    assert.deepEqual(
      rest.map((e) => e.seq ?? 'end'),
      [n + 1, n + 2, 'end'],
    );

    assert.ok((await client.runs.list()).some((r) => r.id === run.id));
  });

  test('a mock-LLM agent run followed live', async () => {
    const spec = agentSpec('helper', [
      { text: 'Looking.', tool_calls: [{ name: 'bash', input: { command: 'uname -s' } }] },
      { text: 'It is Linux.' },
    ]);
    const run = await client.runs.submit(spec);
    assert.equal(run.kind, 'agent');
    const events = [];
    for await (const e of client.runs.events(run.id)) events.push(e);
    const kinds = events.map((e) => e.event);
    for (const k of ['stage_started', 'sandbox_ready', 'turn_started', 'text_delta', 'tool_call_started', 'tool_call_finished', 'usage', 'stage_finished', 'end']) {
      assert.ok(kinds.includes(k), `${k} in ${kinds}`);
    }
    const call = events.find((e) => e.event === 'tool_call_started');
    assert.equal(call.name, 'bash');
    assert.deepEqual(call.arguments, { command: 'uname -s' });
    const finished = events.find((e) => e.event === 'tool_call_finished');
    assert.equal(finished.is_error, false);
    assert.match(finished.summary, /Linux/);
    assert.equal(
      events.filter((e) => e.event === 'text_delta').map((e) => e.text).join(''),
      'Looking.It is Linux.',
    );
    const end = events.at(-1);
    assert.equal(end.run.status, 'succeeded', JSON.stringify(end.run));

    const got = await client.runs.get(run.id);
    assert.equal(got.status, 'succeeded');
    assert.match(JSON.stringify(got.output), /It is Linux\./);
    assert.ok(got.result, 'get returns the whole result');
    assert.match(JSON.stringify(await client.runs.stageOutput(run.id, 'helper')), /It is Linux\./);
    await assert.rejects(client.runs.stageOutput(run.id, 'nope'), NotFoundError);
  });

  test('a long run cancelled', async () => {
    const spec = 'api_version: v1\nkind: sandbox\nname: long\nsandbox: {memory_mb: 256}\nrun: {program: sleep, args: ["600"]}\n';
    const run = await client.runs.submit(spec);
    // Cancelled once its VM runs (a sandbox_ready event).
    for await (const e of client.runs.events(run.id)) {
      if (e.event === 'sandbox_ready') break;
    }
    const started = Date.now();
    const cancelled = await client.runs.cancel(run.id);
    assert.ok(['cancelled', 'running'].includes(cancelled.status), cancelled.status);
    const ended = await client.runs.wait(run.id);
    assert.equal(ended.status, 'cancelled');
    assert.ok(Date.now() - started < 30_000);
    await assert.rejects(client.runs.cancel(run.id), ConflictError);
  });

  test('refused specs and unknown runs', async () => {
    await assert.rejects(client.runs.submit('kind: agent\nname: [\n'), (e) => e instanceof VoidboxError && e.status === 422 && e.message.length > 0);
    await assert.rejects(client.runs.submit('x', { format: 'toml' }), (e) => e instanceof VoidboxError && e.status === 400);
    await assert.rejects(client.runs.get('run-does-not-exist'), NotFoundError);
    await assert.rejects(
      (async () => {
        for await (const _ of client.runs.events('run-does-not-exist')) {
          // none
        }
      })(),
      NotFoundError,
    );
  });
});
