/**
 * Agent sessions: a conversation with one agent (an agent spec's model,
 * skills and sandbox) that lives across turns. A turn is `generate` (the
 * result once the model answers without tools), `generateObject` (a JSON
 * value valid against a schema) or `stream` (the same turn as events,
 * where `ask` permission rules are answered with `confirm`).
 *
 * @module
 */

import { VoidboxError } from './errors.js';
import { parseData, type Transport } from './http.js';
import type {
  CompactResult,
  Decision,
  Message,
  Permissions,
  SessionContext,
  SessionInfo,
  TurnEvent,
  TurnResult,
} from './types.js';

/** Options of {@link Sessions.create}. */
export interface CreateSessionOptions {
  /** `yaml` (the default) or `json`, for a spec given as text. */
  format?: 'yaml' | 'json';
  /** Rules replacing the spec's: `{ ask: ['bash(rm *)'] }`. */
  permissions?: Permissions;
  /** Seconds a confirmation waits before the unattended decision applies (default 300). */
  confirmTimeoutSecs?: number;
}

/** Options of a turn. */
export interface TurnOptions {
  /** Aborting it abandons the request (the turn goes on: `cancel()` stops it). */
  signal?: AbortSignal;
  /**
   * The request's timeout (ms) for `generate`/`generateObject` (default:
   * the client's `turnTimeoutMs`). Node's fetch gives up on a head that
   * takes over 300 s whatever this says: use `stream` for longer turns.
   */
  timeoutMs?: number;
}

/** Options of {@link Session.stream}. */
export interface StreamOptions {
  /** The JSON Schema the answer must validate against (`done.result.output`). */
  schema?: Record<string, unknown>;
  /** Bounds the stream; the turn goes on when it aborts (`cancel()` stops it). */
  signal?: AbortSignal;
}

/** A session: its turns, confirmations and conversation. */
export class Session {
  /** Its id. */
  readonly id: string;
  /** What the daemon said of it last (see {@link refresh}). */
  info: SessionInfo;
  private readonly base: string;

  constructor(
    private readonly http: Transport,
    info: SessionInfo,
    private readonly turnTimeoutMs: number,
  ) {
    this.id = info.id;
    this.info = info;
    this.base = `/v1/sessions/${encodeURIComponent(info.id)}`;
  }

  /** Reads its info anew (messages, busy, totals). */
  async refresh(): Promise<SessionInfo> {
    this.info = await this.http.json<SessionInfo>(this.base);
    return this.info;
  }

  /**
   * One turn: the agent loop on the conversation and `message`, its tools
   * in the session's sandbox; resolves once the model answers without
   * tools. {@link ConflictError} while another turn is under way (or when
   * this one is cancelled), {@link RateLimitedError} when the generate
   * lane is full.
   */
  async generate(message: string, opts: TurnOptions = {}): Promise<TurnResult> {
    return this.http.json<TurnResult>(`${this.base}/generate`, {
      method: 'POST',
      json: { message },
      signal: opts.signal,
      timeoutMs: opts.timeoutMs ?? this.turnTimeoutMs,
    });
  }

  /**
   * A turn whose answer must be a JSON value valid against `schema`
   * (the model is told the schema, and asked again when it misses): the
   * value is `result.output`.
   */
  async generateObject<T = unknown>(message: string, schema: Record<string, unknown>, opts: TurnOptions = {}): Promise<TurnResult<T>> {
    return this.http.json<TurnResult<T>>(`${this.base}/generate_object`, {
      method: 'POST',
      json: { message, schema },
      signal: opts.signal,
      timeoutMs: opts.timeoutMs ?? this.turnTimeoutMs,
    });
  }

  /**
   * One turn as events: `text_delta`, `tool_call`, `tool_result`,
   * `confirmation_required` (answer it with {@link confirm} while the
   * stream goes on), `confirmation_answered`, `usage`, then `done` (the
   * result) or `error`. Leaving the loop does not stop the turn.
   */
  async *stream<T = unknown>(message: string, opts: StreamOptions = {}): AsyncGenerator<TurnEvent<T>, void, undefined> {
    const json: Record<string, unknown> = { message };
    if (opts.schema !== undefined) json['schema'] = opts.schema;
    let ended = false;
    for await (const sse of this.http.sse(`${this.base}/stream`, { method: 'POST', json, signal: opts.signal })) {
      const event = parseData<TurnEvent<T>>(sse);
      if (!event || typeof event !== 'object' || typeof event.event !== 'string') continue;
      yield event;
      if (event.event === 'done' || event.event === 'error') {
        ended = true;
        return;
      }
    }
    if (!ended) throw new VoidboxError(0, `the stream of session \`${this.id}\` ended without \`done\` or \`error\``);
  }

  /** Answers a `confirmation_required`; {@link NotFoundError} once it is not waiting. */
  async confirm(confirmation: string, decision: Decision): Promise<void> {
    await this.http.empty(`${this.base}/confirmations/${encodeURIComponent(confirmation)}`, {
      method: 'POST',
      json: { decision },
    });
  }

  /** The conversation's messages, in the model's wire shape. */
  async history(): Promise<Message[]> {
    return this.http.json<Message[]>(`${this.base}/history`);
  }

  /** How full the conversation is: messages, estimated tokens, the last call's input tokens. */
  async context(): Promise<SessionContext> {
    return this.http.json<SessionContext>(`${this.base}/context`);
  }

  /** Forgets the conversation (the sandbox and its files stay). */
  async clear(): Promise<void> {
    await this.http.empty(`${this.base}/clear`, { method: 'POST' });
  }

  /** Replaces the conversation by the model's summary of it. */
  async compact(opts: TurnOptions = {}): Promise<CompactResult> {
    return this.http.json<CompactResult>(`${this.base}/compact`, {
      method: 'POST',
      signal: opts.signal,
      timeoutMs: opts.timeoutMs ?? this.turnTimeoutMs,
    });
  }

  /** Cancels the turn under way; {@link ConflictError} when there is none. */
  async cancel(): Promise<void> {
    await this.http.empty(`${this.base}/cancel`, { method: 'POST' });
  }

  /** Ends the session: its turn cancelled, its VM killed. */
  async destroy(): Promise<void> {
    await this.http.empty(this.base, { method: 'DELETE' });
  }
}

/** `client.sessions`. */
export class Sessions {
  constructor(
    private readonly http: Transport,
    private readonly turnTimeoutMs: number,
  ) {}

  /**
   * Makes a session of an agent spec (`kind: agent`): its text (YAML, or
   * JSON with `format: 'json'`) or an object (sent as JSON). Its sandbox
   * boots at the first turn. A spec that is not an agent, or a bad rule:
   * 422.
   */
  async create(spec: string | Record<string, unknown>, opts: CreateSessionOptions = {}): Promise<Session> {
    const body: Record<string, unknown> =
      typeof spec === 'string' ? { spec, format: opts.format } : { spec: JSON.stringify(spec), format: 'json' };
    if (opts.permissions !== undefined) body['permissions'] = opts.permissions;
    if (opts.confirmTimeoutSecs !== undefined) body['confirm_timeout_secs'] = opts.confirmTimeoutSecs;
    const info = await this.http.json<SessionInfo>('/v1/sessions', { method: 'POST', json: body });
    return new Session(this.http, info, this.turnTimeoutMs);
  }

  /** Every open session. */
  async list(): Promise<SessionInfo[]> {
    return this.http.json<SessionInfo[]>('/v1/sessions');
  }

  /** A handle on session `id`; {@link NotFoundError} when it is not open. */
  async get(id: string): Promise<Session> {
    return new Session(this.http, await this.http.json<SessionInfo>(`/v1/sessions/${encodeURIComponent(id)}`), this.turnTimeoutMs);
  }
}
