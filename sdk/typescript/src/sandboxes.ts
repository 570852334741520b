/**
 * Sandboxes: create one (a VM booted, or restored from a snapshot), run
 * commands in it (to their end, or followed as events with stdin written
 * by pid), read and write its files, set its timeout, end it.
 *
 * @module
 */

import { parseData, type Transport } from './http.js';
import type { ExecEvent, ExecResult, FileStat, SandboxConfig, SandboxInfo } from './types.js';

/** Options of {@link Sandboxes.create}. */
export interface CreateSandboxOptions {
  /** Its configuration (`{}` or none: the default sandbox). */
  config?: SandboxConfig;
  /** Seconds until the daemon ends it (1 s to a day); none: until `kill()` or the daemon stops. */
  timeoutSecs?: number;
  /** Labels of yours, returned as given. */
  metadata?: Record<string, string>;
  /** This request's timeout (ms): a boot under TCG takes a while. */
  timeoutMs?: number;
}

/** A command: a program and its arguments, or a shell line. */
export interface ExecOptions {
  /** The program and its arguments (`['python3', '-c', 'print(1)']`). */
  command?: string[];
  /** Or a shell command line, run with `sh -c`. */
  shell?: string;
  /** Variables beside the sandbox's. */
  env?: Record<string, string>;
  /** Working directory. */
  cwd?: string;
  /** Run as this user of the sandbox's root (`root`, `UID[:GID]`, `NAME[:GROUP]`). */
  user?: string;
  /** Seconds after which everything it started is killed. */
  timeoutSecs?: number;
  /** Its stdin (text), then closed. */
  stdin?: string;
  /** The HTTP request's own timeout (ms); default: the client's, or `timeoutSecs` plus 30 s when longer. */
  timeoutMs?: number;
}

/** A followed command. */
export interface ExecStreamOptions extends Omit<ExecOptions, 'timeoutMs'> {
  /** Keep stdin open for {@link Sandbox.writeStdin} (not with `stdin`). */
  stdinOpen?: boolean;
  /** Bounds the stream; aborting it (like leaving the loop) kills the command. */
  signal?: AbortSignal;
}

/** A command given as a shell line, an argument list, or its options. */
export type Command<T> = string | string[] | T;

function options<T extends ExecOptions | ExecStreamOptions>(command: Command<T>): T {
  if (typeof command === 'string') return { shell: command } as T;
  if (Array.isArray(command)) return { command } as T;
  return command;
}

function execBody(o: ExecOptions | ExecStreamOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (o.command !== undefined) body['command'] = o.command;
  if (o.shell !== undefined) body['shell'] = o.shell;
  if (o.env !== undefined) body['env'] = o.env;
  if (o.cwd !== undefined) body['cwd'] = o.cwd;
  if (o.user !== undefined) body['user'] = o.user;
  if (o.timeoutSecs !== undefined) body['timeout_secs'] = o.timeoutSecs;
  if (o.stdin !== undefined) body['stdin'] = o.stdin;
  if ('stdinOpen' in o && o.stdinOpen) body['stdin_open'] = true;
  return body;
}

/** Decodes base64 into bytes (no Buffer: any runtime with `atob`). */
export function fromBase64(data: string): Uint8Array {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function toBytes(data: Uint8Array | ArrayBuffer | string): Uint8Array {
  if (typeof data === 'string') return new TextEncoder().encode(data);
  return data instanceof Uint8Array ? data : new Uint8Array(data);
}

/** A sandbox the daemon holds: its commands and files. */
export class Sandbox {
  /** Its id. */
  readonly id: string;
  /** What the daemon said of it when this handle was made (see {@link refresh}). */
  info: SandboxInfo;
  private readonly base: string;

  constructor(
    private readonly http: Transport,
    info: SandboxInfo,
  ) {
    this.id = info.id;
    this.info = info;
    this.base = `/v1/sandboxes/${encodeURIComponent(info.id)}`;
  }

  /** Reads its info anew. */
  async refresh(): Promise<SandboxInfo> {
    this.info = await this.http.json<SandboxInfo>(this.base);
    return this.info;
  }

  /**
   * Runs a command to its end: `exec('uname -s')` (a shell line),
   * `exec(['ls', '-l'])`, or `exec({ command | shell, env, cwd, user,
   * timeoutSecs, stdin })`.
   */
  async exec(command: Command<ExecOptions>): Promise<ExecResult> {
    const o = options(command);
    const timeoutMs = o.timeoutMs ?? Math.max(this.http.timeoutMs, (o.timeoutSecs ?? 0) * 1000 + 30_000);
    return this.http.json<ExecResult>(`${this.base}/exec`, { method: 'POST', json: execBody(o), timeoutMs });
  }

  /**
   * Starts a command and follows it: `started` (its pid), `stdout` and
   * `stderr` (bytes), then `exit` (or `error`). Leaving the loop, or
   * aborting `signal`, closes the stream, which kills the command.
   *
   * ```ts
   * for await (const e of sandbox.execStream({ command: ['cat'], stdinOpen: true })) {
   *   if (e.event === 'started') await sandbox.writeStdin(e.pid, 'hi\n', { eof: true });
   *   if (e.event === 'stdout') console.log(new TextDecoder().decode(e.data));
   * }
   * ```
   */
  async *execStream(command: Command<ExecStreamOptions>): AsyncGenerator<ExecEvent, void, undefined> {
    const o = options(command);
    for await (const sse of this.http.sse(`${this.base}/exec/stream`, { method: 'POST', json: execBody(o), signal: o.signal })) {
      const event = parseData<{ event?: string; pid?: number; data?: string; message?: string; exit_code?: number | null; signal?: number | null; timed_out?: boolean }>(sse);
      switch (sse.event) {
        case 'started':
          yield { event: 'started', pid: event.pid ?? 0 };
          break;
        case 'stdout':
        case 'stderr':
          yield { event: sse.event, data: fromBase64(event.data ?? '') };
          break;
        case 'exit':
          yield { event: 'exit', exit_code: event.exit_code ?? null, signal: event.signal ?? null, timed_out: event.timed_out ?? false };
          return;
        case 'error':
          yield { event: 'error', message: event.message ?? 'following the command failed' };
          return;
        default:
          // A kind newer than this SDK: skipped.
          break;
      }
    }
  }

  /** Writes to a followed command's stdin (started with `stdinOpen`); `eof` closes it after. */
  async writeStdin(pid: number, data: Uint8Array | ArrayBuffer | string, opts: { eof?: boolean } = {}): Promise<void> {
    await this.http.empty(`${this.base}/processes/${pid}/stdin`, {
      method: 'POST',
      body: toBytes(data),
      query: { eof: opts.eof ? 'true' : undefined },
    });
  }

  /** Kills a followed command and everything it started. */
  async killProcess(pid: number): Promise<void> {
    await this.http.empty(`${this.base}/processes/${pid}`, { method: 'DELETE' });
  }

  /** A file's bytes (paths below `/workspace` or `/tmp`). */
  async read(path: string): Promise<Uint8Array> {
    return this.http.bytes(`${this.base}/files`, { query: { path } });
  }

  /** A file's text (UTF-8; invalid bytes become U+FFFD). */
  async readText(path: string): Promise<string> {
    return new TextDecoder('utf-8').decode(await this.read(path));
  }

  /**
   * Writes a file whole (its parents are made). `mode` is permission bits
   * (`0o755`; default 0644).
   */
  async write(path: string, data: Uint8Array | ArrayBuffer | string, opts: { mode?: number } = {}): Promise<void> {
    await this.http.empty(`${this.base}/files`, { method: 'PUT', body: toBytes(data), query: { path, mode: opts.mode } });
  }

  /** What a path is (a final symlink is not followed). */
  async stat(path: string): Promise<FileStat> {
    return this.http.json<FileStat>(`${this.base}/files/stat`, { query: { path } });
  }

  /** A directory's entries, in name order. */
  async list(path: string): Promise<FileStat[]> {
    return this.http.json<FileStat[]>(`${this.base}/files/list`, { query: { path } });
  }

  /** Makes a directory and its parents. */
  async mkdir(path: string): Promise<void> {
    await this.http.empty(`${this.base}/files/mkdir`, { method: 'POST', json: { path } });
  }

  /** Removes a file, a symlink, or a directory with what it holds. */
  async remove(path: string): Promise<void> {
    await this.http.empty(`${this.base}/files`, { method: 'DELETE', query: { path } });
  }

  /** Moves a file or a directory (a file at `to` is replaced). */
  async rename(from: string, to: string): Promise<void> {
    await this.http.empty(`${this.base}/files/rename`, { method: 'POST', json: { from, to } });
  }

  /** Ends the sandbox `secs` from now (1 s to a day). */
  async setTimeout(secs: number): Promise<void> {
    await this.http.empty(`${this.base}/timeout`, { method: 'POST', json: { timeout_secs: secs } });
  }

  /** Ends the sandbox now (its VM is killed). */
  async kill(): Promise<void> {
    await this.http.empty(this.base, { method: 'DELETE' });
  }
}

/** `client.sandboxes`. */
export class Sandboxes {
  constructor(private readonly http: Transport) {}

  /** Boots a sandbox (or restores it from `config.snapshot`) and returns its handle. */
  async create(opts: CreateSandboxOptions = {}): Promise<Sandbox> {
    const body: Record<string, unknown> = {};
    if (opts.config !== undefined) body['config'] = opts.config;
    if (opts.timeoutSecs !== undefined) body['timeout_secs'] = opts.timeoutSecs;
    if (opts.metadata !== undefined) body['metadata'] = opts.metadata;
    const info = await this.http.json<SandboxInfo>('/v1/sandboxes', {
      method: 'POST',
      json: body,
      timeoutMs: opts.timeoutMs ?? Math.max(this.http.timeoutMs, 300_000),
    });
    return new Sandbox(this.http, info);
  }

  /** Every sandbox the daemon holds. */
  async list(): Promise<SandboxInfo[]> {
    return this.http.json<SandboxInfo[]>('/v1/sandboxes');
  }

  /** A handle on sandbox `id`; {@link NotFoundError} when the daemon holds none. */
  async get(id: string): Promise<Sandbox> {
    return new Sandbox(this.http, await this.http.json<SandboxInfo>(`/v1/sandboxes/${encodeURIComponent(id)}`));
  }
}
