// Sandboxes against a real daemon and one real VM: commands (collected and
// followed, stdin by pid, a kill), files with non-UTF-8 bytes, timeouts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { NotFoundError, VoidboxError } from '../dist/index.js';
import { startDaemon } from '../testing/daemon.mjs';

const text = (bytes) => new TextDecoder().decode(bytes);

describe('sandboxes', () => {
  let daemon;
  let client;
  let sandbox;

  before(async () => {
    daemon = await startDaemon();
    client = daemon.client();
    sandbox = await client.sandboxes.create({
      config: { memory_mb: 256 },
      timeoutSecs: 600,
      metadata: { suite: 'sdk-typescript' },
    });
  });

  after(async () => {
    await sandbox?.kill().catch(() => undefined);
    await daemon?.stop();
  });

  test('create, get, list', async () => {
    assert.match(sandbox.id, /\S/);
    assert.equal(sandbox.info.memory_mb, 256);
    assert.deepEqual(sandbox.info.metadata, { suite: 'sdk-typescript' });
    assert.ok(['kvm', 'tcg'].includes(sandbox.info.accel));
    assert.ok(sandbox.info.expires_unix_ms > Date.now());
    const again = await client.sandboxes.get(sandbox.id);
    assert.equal(again.info.created_unix_ms, sandbox.info.created_unix_ms);
    assert.ok((await client.sandboxes.list()).some((s) => s.id === sandbox.id));
    assert.equal((await client.health()).sandboxes, 1);
  });

  test('exec: a shell line, an argument list, env, cwd, stdin, exit codes', async () => {
    const uname = await sandbox.exec('uname -s');
    assert.deepEqual(uname, { exit_code: 0, signal: null, timed_out: false, stdout: 'Linux\n', stderr: '' });

    const r = await sandbox.exec({ command: ['sh', '-c', 'echo "$X"; pwd; cat; echo oops >&2; exit 3'], env: { X: 'from-sdk' }, cwd: '/tmp', stdin: 'fed\n' });
    assert.equal(r.exit_code, 3);
    assert.equal(r.stdout, 'from-sdk\n/tmp\nfed\n');
    assert.equal(r.stderr, 'oops\n');

    const slow = await sandbox.exec({ shell: 'sleep 30', timeoutSecs: 1 });
    assert.equal(slow.timed_out, true);

    await assert.rejects(sandbox.exec({}), (e) => e instanceof VoidboxError && e.status === 400);
  });

  test('execStream: stdin written by pid, output as bytes', async () => {
    const out = [];
    let pid;
    let exit;
    for await (const e of sandbox.execStream({ command: ['cat'], stdinOpen: true })) {
      if (e.event === 'started') {
        pid = e.pid;
        await sandbox.writeStdin(pid, 'ping\n');
      } else if (e.event === 'stdout') {
        out.push(text(e.data));
        if (out.join('') === 'ping\n') await sandbox.writeStdin(pid, new Uint8Array([0x62, 0x79, 0x65, 0x0a]), { eof: true });
      } else if (e.event === 'exit') {
        exit = e;
      }
    }
    assert.ok(pid > 0);
    assert.equal(out.join(''), 'ping\nbye\n');
    assert.deepEqual(exit, { event: 'exit', exit_code: 0, signal: null, timed_out: false });

    // Bytes that are not UTF-8 arrive as they are.
    const err = [];
    for await (const e of sandbox.execStream("printf '\\377\\000x' >&2")) {
      if (e.event === 'stderr') err.push(...e.data);
    }
    assert.deepEqual(err, [0xff, 0x00, 0x78]);
  });

  test('execStream: a command killed by pid', async () => {
    let exit;
    const events = [];
    for await (const e of sandbox.execStream(['sleep', '600'])) {
      events.push(e.event);
      if (e.event === 'started') await sandbox.killProcess(e.pid);
      if (e.event === 'exit') exit = e;
    }
    assert.equal(events[0], 'started');
    assert.equal(exit.signal, 9, JSON.stringify(exit));
    await assert.rejects(sandbox.killProcess(999_999), NotFoundError);
  });

  test('execStream: leaving the loop kills the command', async () => {
    for await (const e of sandbox.execStream({ shell: 'echo up; exec sleep 600' })) {
      if (e.event === 'stdout') break;
    }
    // The sleep is gone (the daemon kills a command whose stream closed).
    let left = '';
    for (let i = 0; i < 50; i++) {
      left = (await sandbox.exec("cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$' || true")).stdout.trim();
      if (left === '0') break;
      await new Promise((ok) => setTimeout(ok, 200));
    }
    assert.equal(left, '0');
  });

  test('files: bytes round trip, stat, list, mkdir, rename, remove', async () => {
    const bytes = new Uint8Array(256 + 4);
    for (let i = 0; i < 256; i++) bytes[i] = i;
    bytes.set([0xc3, 0x28, 0xff, 0xfe], 256); // not UTF-8
    await sandbox.write('/workspace/sdk/data.bin', bytes);
    assert.deepEqual(await sandbox.read('/workspace/sdk/data.bin'), bytes);

    const stat = await sandbox.stat('/workspace/sdk/data.bin');
    assert.equal(stat.name, 'data.bin');
    assert.equal(stat.kind, 'file');
    assert.equal(stat.size, 260);
    assert.ok(stat.modified_unix_ms > 0);

    await sandbox.write('/workspace/sdk/run.sh', '#!/bin/sh\necho ran\n', { mode: 0o755 });
    assert.equal((await sandbox.stat('/workspace/sdk/run.sh')).mode & 0o777, 0o755);
    assert.equal((await sandbox.exec('/workspace/sdk/run.sh')).stdout, 'ran\n');
    assert.equal(await sandbox.readText('/workspace/sdk/run.sh'), '#!/bin/sh\necho ran\n');

    await sandbox.mkdir('/workspace/sdk/a/b');
    assert.equal((await sandbox.stat('/workspace/sdk/a/b')).kind, 'dir');
    await sandbox.rename('/workspace/sdk/data.bin', '/workspace/sdk/a/b/moved.bin');
    assert.deepEqual(
      (await sandbox.list('/workspace/sdk')).map((e) => [e.name, e.kind]),
      [
        ['a', 'dir'],
        ['run.sh', 'file'],
      ],
    );
    assert.deepEqual(await sandbox.read('/workspace/sdk/a/b/moved.bin'), bytes);

    await sandbox.remove('/workspace/sdk/a');
    await assert.rejects(sandbox.read('/workspace/sdk/a/b/moved.bin'), NotFoundError);
    await assert.rejects(sandbox.write('/etc/passwd-sdk', 'x'), (e) => e instanceof VoidboxError && e.status === 403);
  });

  test('setTimeout, then kill', async () => {
    const before = sandbox.info.expires_unix_ms;
    await sandbox.setTimeout(120);
    const info = await sandbox.refresh();
    assert.ok(info.expires_unix_ms < before && info.expires_unix_ms > Date.now(), JSON.stringify(info));
    await assert.rejects(sandbox.setTimeout(0), (e) => e instanceof VoidboxError && e.status === 400);

    await sandbox.kill();
    await assert.rejects(client.sandboxes.get(sandbox.id), NotFoundError);
    await assert.rejects(sandbox.exec('true'), NotFoundError);
    sandbox = undefined;
  });
});
