/**
 * The client of one `voidbox serve` daemon.
 *
 * @module
 */

import { Transport } from './http.js';
import { Runs } from './runs.js';
import { Sandboxes } from './sandboxes.js';
import { Sessions } from './sessions.js';
import type { Health } from './types.js';

/** Where the daemon is and how to talk to it. */
export interface ClientOptions {
  /**
   * The daemon's address, `http://127.0.0.1:8080` (it listens on TCP with
   * `voidbox serve --listen tcp:ADDR:PORT`). Default: `$VOIDBOX_URL`, else
   * `http://127.0.0.1:8080`.
   */
  baseUrl?: string;
  /** Its token (`--token-file`'s content). Default: `$VOIDBOX_TOKEN`. */
  token?: string;
  /** Each request's timeout (ms), but streams' bodies and turns. Default 120 000. */
  timeoutMs?: number;
  /** The timeout of `generate`, `generateObject` and `compact` (ms). Default 300 000. */
  turnTimeoutMs?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/** A variable of the environment, where there is one (Node, Deno, Bun). */
function env(name: string): string | undefined {
  const process = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const value = process?.env?.[name];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * A daemon's client: `runs`, `sandboxes`, `sessions`.
 *
 * ```ts
 * const client = new VoidboxClient({ baseUrl: 'http://127.0.0.1:8080', token });
 * const sandbox = await client.sandboxes.create();
 * console.log((await sandbox.exec('uname -s')).stdout);
 * await sandbox.kill();
 * ```
 */
export class VoidboxClient {
  /** The daemon's address, without a trailing slash. */
  readonly baseUrl: string;
  /** Runs of specs. */
  readonly runs: Runs;
  /** Sandboxes, their commands and files. */
  readonly sandboxes: Sandboxes;
  /** Agent sessions. */
  readonly sessions: Sessions;
  private readonly http: Transport;

  constructor(options: ClientOptions = {}) {
    this.http = new Transport({
      baseUrl: options.baseUrl ?? env('VOIDBOX_URL') ?? 'http://127.0.0.1:8080',
      token: options.token ?? env('VOIDBOX_TOKEN'),
      timeoutMs: options.timeoutMs ?? 120_000,
      fetch: options.fetch,
    });
    this.baseUrl = this.http.baseUrl;
    this.runs = new Runs(this.http);
    this.sandboxes = new Sandboxes(this.http);
    this.sessions = new Sessions(this.http, options.turnTimeoutMs ?? 300_000);
  }

  /** `GET /v1/health` (needs no token): the daemon's version and live sandboxes. */
  async health(): Promise<Health> {
    return this.http.json<Health>('/v1/health');
  }

  /** `GET /metrics`: Prometheus text. */
  async metrics(): Promise<string> {
    const response = await this.http.send('/metrics');
    return response.text();
  }
}
