/**
 * A small Server-Sent Events parser (the WHATWG `text/event-stream`
 * format) over a fetch body: `event`, `id`, `data` and `retry` fields,
 * comments (`:` lines, the daemon's keep-alives) ignored, several `data`
 * lines joined with `\n`, lines ended by `\n`, `\r\n` or `\r`.
 *
 * @module
 */

/** One dispatched event. */
export interface SseEvent {
  /** Its `event` field (`message` when it had none). */
  event: string;
  /** Its `data` lines, joined with `\n`. */
  data: string;
  /** The last event id seen so far in the stream (its own, or an earlier one). */
  id: string | undefined;
  /** A `retry` field, when the event carried one (milliseconds). */
  retry: number | undefined;
}

/**
 * Incremental parser: {@link push} text as it arrives, get back the events
 * it completed. Usable without any stream (tests, other transports).
 */
export class SseParser {
  private buffer = '';
  private eventType = '';
  private data: string[] = [];
  private hasData = false;
  private lastId: string | undefined;
  private retry: number | undefined;

  /** Feeds decoded text; returns the events it completed, in order. */
  push(text: string): SseEvent[] {
    this.buffer += text;
    const events: SseEvent[] = [];
    for (;;) {
      const cr = this.buffer.indexOf('\r');
      const lf = this.buffer.indexOf('\n');
      if (cr < 0 && lf < 0) break;
      let end: number;
      let next: number;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        // A `\r` at the very end may be the first half of `\r\n`: wait.
        if (cr === this.buffer.length - 1) break;
        end = cr;
        next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
      } else {
        end = lf;
        next = lf + 1;
      }
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(next);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /**
   * The stream ended: a lone trailing `\r` ends its line; an event not
   * closed by a blank line is dropped, as the format says.
   */
  end(): SseEvent[] {
    const events: SseEvent[] = [];
    if (this.buffer.endsWith('\r')) {
      const event = this.line(this.buffer.slice(0, -1));
      if (event) events.push(event);
    }
    this.buffer = '';
    this.reset();
    return events;
  }

  private reset(): void {
    this.eventType = '';
    this.data = [];
    this.hasData = false;
    this.retry = undefined;
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') {
      if (!this.hasData) {
        this.reset();
        return undefined;
      }
      const event: SseEvent = {
        event: this.eventType || 'message',
        data: this.data.join('\n'),
        id: this.lastId,
        retry: this.retry,
      };
      this.reset();
      return event;
    }
    if (line.startsWith(':')) return undefined; // a comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        // Unknown fields are ignored.
        break;
    }
    return undefined;
  }
}

/**
 * The events of a `text/event-stream` body, as they arrive. Leaving the
 * loop early (`break`, `return`, an exception) cancels the body, which
 * closes the connection.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  const parser = new SseParser();
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    finished = true;
    yield* parser.push(decoder.decode());
    yield* parser.end();
  } finally {
    if (!finished) {
      await reader.cancel().catch(() => undefined);
    }
    reader.releaseLock();
  }
}
