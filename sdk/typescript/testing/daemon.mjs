// A real `voidbox serve` for the tests: started on a free loopback port
// with a token and a state directory of its own, ready once
// GET /v1/health answers; stopped with SIGTERM (it ends its VMs).
//
// The binary is target/release/voidbox of this repository (built by
// scripts/setup.sh), or $VOIDBOX_BIN.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { VoidboxClient } from '../dist/index.js';

/** The repository's root (sdk/typescript/testing/ is three levels down). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The daemon's binary. */
export const binary = process.env.VOIDBOX_BIN || join(repoRoot, 'target', 'release', 'voidbox');

async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * Starts a daemon. Returns `{ url, token, client(options), stop(), log() }`.
 */
export async function startDaemon() {
  if (!existsSync(binary)) {
    throw new Error(
      `${binary} is missing: build it with scripts/setup.sh (cargo build --release -p voidbox-cli), or point VOIDBOX_BIN at a voidbox binary`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'voidbox-sdk-ts-'));
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const logPath = join(dir, 'daemon.log');
  const logFd = openSync(logPath, 'a');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    binary,
    ['serve', '--listen', `tcp:127.0.0.1:${port}`, '--token-file', tokenFile, '--state-dir', join(dir, 'state')],
    { stdio: ['ignore', logFd, logFd] },
  );
  let exited = null;
  const exit = new Promise((ok) =>
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      ok(exited);
    }),
  );
  const log = () => {
    try {
      return readFileSync(logPath, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      throw new Error(`voidbox serve exited (${JSON.stringify(exited)}) before answering:\n${log().slice(-4000)}`);
    }
    try {
      const r = await fetch(`${url}/v1/health`, { signal: AbortSignal.timeout(1000) });
      if (r.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`voidbox serve did not answer /v1/health in 30 s:\n${log().slice(-4000)}`);
    }
    await sleep(100);
  }
  return {
    url,
    token,
    log,
    client: (options = {}) => new VoidboxClient({ baseUrl: url, token, ...options }),
    /** SIGTERM, then waits for its exit (SIGKILL after 60 s). */
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        await exit;
        clearTimeout(killer);
      }
      if (process.env.VOIDBOX_KEEP_LOGS) {
        process.stderr.write(`daemon log kept in ${logPath}\n`);
      } else {
        rmSync(dir, { recursive: true, force: true });
      }
      return exited;
    },
  };
}

/** The mock-LLM agent spec the tests use (no API key needed). */
export function agentSpec(name, turns) {
  const lines = [
    'api_version: v1',
    'kind: agent',
    `name: ${name}`,
    'sandbox: {memory_mb: 256}',
    'llm:',
    '  provider: mock',
    '  mock:',
    '    turns:',
    ...turns.map((t) => `      - ${JSON.stringify(t)}`),
    'agent:',
    '  prompt: You help.',
  ];
  return lines.join('\n') + '\n';
}
