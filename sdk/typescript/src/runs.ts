/**
 * Runs: submit a spec (its text, or a path on the daemon's host), list,
 * get, cancel, follow its events (resuming after the last one seen),
 * wait for its end, read a stage's output.
 *
 * @module
 */

import { VoidboxError } from './errors.js';
import { parseData, type Transport } from './http.js';
import { isFinished, type RunEvent, type RunInfo } from './types.js';

/** The run event kinds this SDK knows; others arrive as `other`. */
const KNOWN = new Set([
  'stage_started',
  'sandbox_ready',
  'turn_started',
  'text_delta',
  'tool_call_started',
  'confirmation_required',
  'confirmation_answered',
  'tool_call_finished',
  'usage',
  'output',
  'network',
  'stage_finished',
]);

/** Options of {@link Runs.submit}. */
export interface SubmitOptions {
  /** `yaml` (the default) or `json`, for a spec given as text (or an object, sent as JSON). */
  format?: 'yaml' | 'json';
  /** Input for the first stage (a `kind: sandbox` run's stdin). */
  input?: string;
  /** A request's own timeout (ms). */
  timeoutMs?: number;
}

/** Options of {@link Runs.events}. */
export interface EventsOptions {
  /** Resume after this event number (sent as `Last-Event-ID`). */
  after?: number;
  /**
   * `true` (the default): wait for new events until the run ends.
   * `false`: end once the events kept so far are sent.
   */
  follow?: boolean;
  /** Bounds the stream: aborting it ends the iteration with an error. */
  signal?: AbortSignal;
  /**
   * Times a broken stream is resumed from the last event seen (default 3);
   * no event is lost or repeated.
   */
  reconnects?: number;
}

/** Options of {@link Runs.wait}. */
export interface WaitOptions {
  /** Give up (with an AbortError) when this signal aborts. */
  signal?: AbortSignal;
}

/** `client.runs`. */
export class Runs {
  constructor(private readonly http: Transport) {}

  /**
   * Submits a spec: `spec` is its text (YAML, or JSON with
   * `format: 'json'`), or an object sent as JSON, or `{ path }` of a spec
   * file on the daemon's host. Answers at once with the run `queued` (or
   * `running`); a spec that does not check is a 422 with its place.
   */
  async submit(spec: string | Record<string, unknown> | { path: string }, options: SubmitOptions = {}): Promise<RunInfo> {
    let body: Record<string, unknown>;
    if (typeof spec === 'string') {
      body = { spec, format: options.format };
    } else if (typeof (spec as { path?: unknown }).path === 'string' && Object.keys(spec).length === 1) {
      body = { path: (spec as { path: string }).path };
    } else {
      body = { spec: JSON.stringify(spec), format: 'json' };
    }
    if (options.input !== undefined) body['input'] = options.input;
    return this.http.json<RunInfo>('/v1/runs', { method: 'POST', json: body, timeoutMs: options.timeoutMs });
  }

  /** Every run the daemon knows (its last 1000), newest first. */
  async list(): Promise<RunInfo[]> {
    return this.http.json<RunInfo[]>('/v1/runs');
  }

  /** One run, with its whole `result` once it ended. */
  async get(id: string): Promise<RunInfo> {
    return this.http.json<RunInfo>(`/v1/runs/${encodeURIComponent(id)}`);
  }

  /** Cancels a queued or running run (its VMs are killed); {@link ConflictError} once it ended. */
  async cancel(id: string): Promise<RunInfo> {
    return this.http.json<RunInfo>(`/v1/runs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
  }

  /**
   * The run's events, in order, each with its number (`seq`); the last is
   * `end`, with the run as it is. A stream that breaks is resumed after
   * the last event seen (`Last-Event-ID`).
   *
   * ```ts
   * for await (const e of client.runs.events(run.id)) {
   *   if (e.event === 'text_delta') process.stdout.write(e.text);
   * }
   * ```
   */
  async *events(id: string, options: EventsOptions = {}): AsyncGenerator<RunEvent, void, undefined> {
    let after = options.after;
    let reconnects = options.reconnects ?? 3;
    const path = `/v1/runs/${encodeURIComponent(id)}/events`;
    for (;;) {
      const headers: Record<string, string> = {};
      if (after !== undefined) headers['last-event-id'] = String(after);
      try {
        for await (const sse of this.http.sse(path, {
          query: { follow: options.follow === false ? 'false' : undefined },
          headers,
          signal: options.signal,
        })) {
          if (sse.event === 'end') {
            yield { event: 'end', run: parseData<RunInfo | null>(sse) };
            return;
          }
          const seq = Number(sse.id);
          const fields = parseData<Record<string, unknown>>(sse);
          const kind = typeof fields['event'] === 'string' ? fields['event'] : sse.event;
          if (KNOWN.has(kind)) {
            yield { ...fields, event: kind, seq } as RunEvent;
          } else {
            const ts_ms = typeof fields['ts_ms'] === 'number' ? fields['ts_ms'] : 0;
            yield { event: 'other', kind, seq, ts_ms, fields };
          }
          if (Number.isFinite(seq)) after = seq;
        }
        // The daemon closed without `end` (it stopped): resume, or say so.
        throw new VoidboxError(0, `the events of run \`${id}\` ended without \`end\``);
      } catch (e) {
        const transient = e instanceof VoidboxError && e.status === 0 && !options.signal?.aborted;
        if (!transient || reconnects <= 0) throw e;
        reconnects -= 1;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  /** Waits for the run to end (following its events) and returns it with its `result`. */
  async wait(id: string, options: WaitOptions = {}): Promise<RunInfo> {
    const run = await this.get(id);
    if (isFinished(run.status)) return run;
    for await (const event of this.events(id, { after: run.events, signal: options.signal })) {
      if (event.event === 'end') break;
    }
    return this.get(id);
  }

  /**
   * A box's or step's output in an ended run (its output file, else its
   * output, text or stdout), as JSON; {@link NotFoundError} before it
   * ended or for an unknown stage.
   */
  async stageOutput(id: string, stage: string): Promise<unknown> {
    return this.http.json<unknown>(`/v1/runs/${encodeURIComponent(id)}/stages/${encodeURIComponent(stage)}/output`);
  }
}
