// The SSE parser and the error mapping, without a daemon.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  ConflictError,
  NotFoundError,
  RateLimitedError,
  SseParser,
  UnauthorizedError,
  VoidboxClient,
  VoidboxError,
  readSse,
} from '../dist/index.js';

describe('SseParser', () => {
  test('fields, comments, multi-line data and ids', () => {
    const p = new SseParser();
    const events = p.push(': keep-alive\n\nid: 7\nevent: text_delta\ndata: {"a":\ndata:  1}\n\ndata: plain\n\n');
    assert.deepEqual(events, [
      { event: 'text_delta', data: '{"a":\n 1}', id: '7', retry: undefined },
      // The last id carries over to an event that sets none.
      { event: 'message', data: 'plain', id: '7', retry: undefined },
    ]);
  });

  test('lines split anywhere, CRLF and CR endings', () => {
    const p = new SseParser();
    const text = 'event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r';
    const events = [];
    for (const ch of text) events.push(...p.push(ch));
    events.push(...p.end());
    assert.deepEqual(
      events.map((e) => [e.event, e.data]),
      [
        ['a', '1'],
        ['b', '2'],
      ],
    );
  });

  test('an event without data, or not closed by a blank line, is not sent', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('event: nothing\n\nretry: 5\ndata: x'), []);
    assert.deepEqual(p.end(), []);
  });

  test('readSse decodes UTF-8 split across chunks', async () => {
    const bytes = new TextEncoder().encode('event: t\ndata: héllo ✓\n\n');
    const body = new ReadableStream({
      start(c) {
        for (const b of bytes) c.enqueue(new Uint8Array([b]));
        c.close();
      },
    });
    const got = [];
    for await (const e of readSse(body)) got.push(e);
    assert.deepEqual(got, [{ event: 't', data: 'héllo ✓', id: undefined, retry: undefined }]);
  });
});

describe('errors', () => {
  const answering = (status, body, headers = {}) =>
    new VoidboxClient({
      baseUrl: 'http://daemon.invalid',
      token: 't',
      fetch: async () => new Response(body, { status, headers: { 'content-type': 'application/json', ...headers } }),
    });

  test('statuses map to classes with the daemon message', async () => {
    const cases = [
      [401, UnauthorizedError],
      [404, NotFoundError],
      [409, ConflictError],
      [422, VoidboxError],
    ];
    for (const [status, cls] of cases) {
      const client = answering(status, JSON.stringify({ code: status, message: `m${status}` }));
      await assert.rejects(client.runs.get('x'), (e) => {
        assert.ok(e instanceof cls, `${status}: ${e}`);
        assert.ok(e instanceof VoidboxError);
        assert.equal(e.status, status);
        assert.equal(e.message, `m${status}`);
        assert.equal(e.request, 'GET /v1/runs/x');
        return true;
      });
    }
  });

  test('429 carries Retry-After', async () => {
    const client = answering(429, '{"code":429,"message":"the generate lane is full"}', { 'retry-after': '1' });
    await assert.rejects(client.sessions.list(), (e) => e instanceof RateLimitedError && e.retryAfter === 1 && e.status === 429);
  });

  test('a body that is not JSON keeps its text', async () => {
    const client = answering(502, 'bad gateway');
    await assert.rejects(client.sandboxes.list(), (e) => e instanceof VoidboxError && e.status === 502 && e.message === 'bad gateway');
  });

  test('no daemon: status 0 and the address', async () => {
    const client = new VoidboxClient({ baseUrl: 'http://127.0.0.1:1', token: 't', timeoutMs: 5000 });
    await assert.rejects(client.health(), (e) => e instanceof VoidboxError && e.status === 0 && e.message.includes('127.0.0.1:1'));
  });

  test('the token goes as a bearer header, query parameters encoded', async () => {
    let seen;
    const client = new VoidboxClient({
      baseUrl: 'http://daemon.invalid/',
      token: 'sekrit-token-123456',
      fetch: async (url, init) => {
        seen = { url, init };
        return new Response('[]', { status: 200 });
      },
    });
    const sandbox = new (await import('../dist/index.js')).Sandbox(
      // A handle made by hand: only its transport matters here.
      client.sandboxes['http'],
      { id: 'sb-1', accel: 'tcg', boot_ms: 0, created_unix_ms: 0, memory_mb: 256, vcpus: 1, metadata: {} },
    );
    await sandbox.list('/workspace/a b&c');
    assert.equal(seen.url, 'http://daemon.invalid/v1/sandboxes/sb-1/files/list?path=%2Fworkspace%2Fa+b%26c');
    assert.equal(seen.init.headers.authorization, 'Bearer sekrit-token-123456');
  });
});

describe('streams', () => {
  test('leaving the loop closes the connection', async () => {
    const { createServer } = await import('node:http');
    let closed;
    const gone = new Promise((ok) => (closed = ok));
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: started\ndata: {"event":"started","pid":7}\n\n');
      res.write('event: stdout\ndata: {"event":"stdout","data":"aGk="}\n\n');
      res.on('close', () => closed(Date.now()));
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const client = new VoidboxClient({ baseUrl: `http://127.0.0.1:${server.address().port}`, token: 't' });
      const { Sandbox } = await import('../dist/index.js');
      const sandbox = new Sandbox(client.sandboxes['http'], { id: 'sb', accel: 'kvm', boot_ms: 0, created_unix_ms: 0, memory_mb: 1, vcpus: 1, metadata: {} });
      const seen = [];
      for await (const e of sandbox.execStream('sleep 600')) {
        seen.push(e);
        if (e.event === 'stdout') break;
      }
      assert.deepEqual(seen, [
        { event: 'started', pid: 7 },
        { event: 'stdout', data: new Uint8Array([0x68, 0x69]) },
      ]);
      const left = Date.now();
      const at = await Promise.race([gone, new Promise((ok) => setTimeout(() => ok(undefined), 5000))]);
      assert.ok(at !== undefined && at - left < 2000, 'the server saw the connection close');
    } finally {
      server.closeAllConnections?.();
      await new Promise((ok) => server.close(ok));
    }
  });

  test('an aborted signal ends a stream', async () => {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': hello\n\n');
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const client = new VoidboxClient({ baseUrl: `http://127.0.0.1:${server.address().port}`, token: 't' });
      const signal = AbortSignal.timeout(300);
      await assert.rejects(
        (async () => {
          for await (const _ of client.runs.events('run-1', { signal })) {
            // nothing comes
          }
        })(),
        (e) => e.name === 'TimeoutError' || e.name === 'AbortError',
      );
    } finally {
      server.closeAllConnections?.();
      await new Promise((ok) => server.close(ok));
    }
  });
});
