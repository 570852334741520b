/**
 * The transport every resource uses: the base URL, the bearer token,
 * timeouts, JSON in and out, errors as {@link VoidboxError}s, and
 * Server-Sent Events.
 *
 * @module
 * @internal
 */

import { TimeoutError, VoidboxError, errorFromResponse } from './errors.js';
import { readSse, type SseEvent } from './sse.js';

/** Query parameters; `undefined` ones are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

/** One request. */
export interface RequestOptions {
  method?: string;
  query?: Query;
  /** A JSON body (sent with `Content-Type: application/json`). */
  json?: unknown;
  /** Raw bytes (sent as `application/octet-stream`). */
  body?: Uint8Array;
  headers?: Record<string, string>;
  /**
   * Milliseconds for the whole request (for a stream: until its head
   * arrives). Default: the client's.
   */
  timeoutMs?: number;
  /** The caller's signal; aborting it aborts the request (and a stream's reads). */
  signal?: AbortSignal;
}

/** The client's connection settings. */
export interface TransportOptions {
  baseUrl: string;
  token: string | undefined;
  timeoutMs: number;
  /** A `fetch` to use instead of the global one (tests, proxies). */
  fetch?: typeof fetch;
}

/** A signal aborted when any of `signals` is (AbortSignal.any, kept small and explicit). */
function anySignal(signals: (AbortSignal | undefined)[]): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const cleanups: (() => void)[] = [];
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    const onAbort = (): void => controller.abort(s.reason);
    s.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => s.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, dispose: () => cleanups.forEach((c) => c()) };
}

/** Sends requests to one daemon. */
export class Transport {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch;

  constructor(options: TransportOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    this.timeoutMs = options.timeoutMs;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The absolute URL of `path` with `query`. */
  url(path: string, query?: Query): string {
    const url = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    return url.toString();
  }

  /**
   * Sends a request and returns its 2xx response, its body read under the
   * timeout; any other status is thrown as the matching
   * {@link VoidboxError}.
   */
  async send(path: string, options: RequestOptions = {}): Promise<Response> {
    return (await this.open(path, options, false)).response;
  }

  /**
   * {@link send}; with `keepOpen` the timeout covers only the wait for the
   * response's head, its body left to the caller (bounded by its own
   * signal), and `done` lets go of that signal once the body is read.
   */
  private async open(path: string, options: RequestOptions, keepOpen: boolean): Promise<{ response: Response; done: () => void }> {
    const method = options.method ?? (options.json !== undefined || options.body !== undefined ? 'POST' : 'GET');
    const what = `${method} ${path}`;
    const headers: Record<string, string> = { ...options.headers };
    if (this.token) headers['authorization'] = `Bearer ${this.token}`;
    let body: string | Uint8Array<ArrayBuffer> | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      body = options.body as Uint8Array<ArrayBuffer>;
    }
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const timer = new AbortController();
    const timeout = setTimeout(() => timer.abort(new TimeoutError(`${what}: no answer in ${timeoutMs} ms`, { request: what })), timeoutMs);
    const linked = anySignal([options.signal, timer.signal]);
    let response: Response;
    try {
      response = await this.fetchImpl(this.url(path, options.query), {
        method,
        headers,
        body,
        signal: linked.signal,
      });
      if (!keepOpen) {
        // Read the whole body under the timeout, then hand back a copy.
        const bytes = new Uint8Array(await response.arrayBuffer());
        response = new Response(response.status === 204 || response.status === 304 ? null : bytes, {
          status: response.status,
          statusText: response.statusText,
          headers: response.headers,
        });
      }
    } catch (e) {
      throw this.failure(e, what, timer.signal, options.signal);
    } finally {
      clearTimeout(timeout);
      if (!keepOpen) linked.dispose();
    }
    if (!response.ok) {
      linked.dispose();
      throw await errorFromResponse(response, what);
    }
    return { response, done: linked.dispose };
  }

  /** Why a fetch threw: the timeout, the caller's abort, or the network. */
  private failure(e: unknown, what: string, timer: AbortSignal, caller: AbortSignal | undefined): unknown {
    if (timer.aborted && !caller?.aborted) return timer.reason as unknown;
    if (caller?.aborted) return e;
    if (e instanceof VoidboxError) return e;
    const detail = e instanceof Error ? (e.cause instanceof Error ? `${e.message}: ${e.cause.message}` : e.message) : String(e);
    return new VoidboxError(0, `${what}: ${detail} (is the daemon at ${this.baseUrl} up?)`, { request: what, cause: e });
  }

  /** A request whose answer is JSON. */
  async json<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.send(path, options);
    return (await response.json()) as T;
  }

  /** A request whose answer has no body worth reading (204). */
  async empty(path: string, options: RequestOptions = {}): Promise<void> {
    await this.send(path, options);
  }

  /** A request whose answer is bytes. */
  async bytes(path: string, options: RequestOptions = {}): Promise<Uint8Array> {
    const response = await this.send(path, options);
    return new Uint8Array(await response.arrayBuffer());
  }

  /**
   * A request whose answer is a `text/event-stream`: its events as they
   * come. The timeout covers the head only; `options.signal` bounds the
   * reads. Leaving the loop closes the connection.
   */
  async *sse(path: string, options: RequestOptions = {}): AsyncGenerator<SseEvent, void, undefined> {
    const { response, done } = await this.open(path, { ...options, headers: { accept: 'text/event-stream', ...options.headers } }, true);
    try {
      if (!response.body) return;
      yield* readSse(response.body);
    } catch (e) {
      if (options.signal?.aborted) throw e;
      const detail = e instanceof Error ? e.message : String(e);
      throw new VoidboxError(0, `${options.method ?? 'GET'} ${path}: the stream broke: ${detail}`, { cause: e });
    } finally {
      done();
    }
  }
}

/** Parses an SSE event's data as JSON, with a clear error when it is not. */
export function parseData<T>(event: SseEvent): T {
  try {
    return JSON.parse(event.data) as T;
  } catch (e) {
    throw new VoidboxError(0, `the daemon sent a \`${event.event}\` event whose data is not JSON: ${event.data.slice(0, 200)}`, { cause: e });
  }
}
