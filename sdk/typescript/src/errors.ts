/**
 * Errors the daemon answers. Every error body of `voidbox serve` is
 * `{"code": HTTP status, "message": "..."}`; the SDK turns it into a
 * {@link VoidboxError}, or one of its subclasses for the statuses a caller
 * usually handles on its own.
 *
 * @module
 */

/** Any failure the daemon reported, or a transport failure (status 0). */
export class VoidboxError extends Error {
  /** The HTTP status (0 when no answer came: a network error or a timeout). */
  readonly status: number;
  /** The daemon's `code` field, when its body had one (else the status). */
  readonly code: number;
  /** The request, as `METHOD /path`. */
  readonly request: string | undefined;

  constructor(status: number, message: string, options?: { code?: number; request?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VoidboxError';
    this.status = status;
    this.code = options?.code ?? status;
    this.request = options?.request;
  }
}

/** 401: no token, or a wrong one. */
export class UnauthorizedError extends VoidboxError {
  constructor(message: string, options?: { code?: number; request?: string }) {
    super(401, message, options);
    this.name = 'UnauthorizedError';
  }
}

/** 404: an unknown run, sandbox, process, file, session or confirmation. */
export class NotFoundError extends VoidboxError {
  constructor(message: string, options?: { code?: number; request?: string }) {
    super(404, message, options);
    this.name = 'NotFoundError';
  }
}

/** 409: a run that has ended, a session whose turn is under way (or was cancelled). */
export class ConflictError extends VoidboxError {
  constructor(message: string, options?: { code?: number; request?: string }) {
    super(409, message, options);
    this.name = 'ConflictError';
  }
}

/**
 * 429 (a lane's queue is full, or too many sandboxes), and 503 (a request
 * waited too long for its lane): try again after {@link retryAfter} seconds.
 */
export class RateLimitedError extends VoidboxError {
  /** Seconds to wait, from the `Retry-After` header (undefined when absent). */
  readonly retryAfter: number | undefined;

  constructor(status: number, message: string, retryAfter: number | undefined, options?: { code?: number; request?: string }) {
    super(status, message, options);
    this.name = 'RateLimitedError';
    this.retryAfter = retryAfter;
  }
}

/** A request that did not get its answer within its timeout. */
export class TimeoutError extends VoidboxError {
  constructor(message: string, options?: { request?: string; cause?: unknown }) {
    super(0, message, options);
    this.name = 'TimeoutError';
  }
}

/** Reads `Retry-After` as seconds (a number, or an HTTP date). */
function retryAfterSecs(value: string | null): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/**
 * The error for a non-2xx answer: its body's `message` (or the body's text
 * when it is not the daemon's JSON shape) in the class of its status.
 */
export async function errorFromResponse(response: Response, request?: string): Promise<VoidboxError> {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // A body that breaks off: the status says enough.
  }
  let message = text.trim() || response.statusText || `HTTP ${response.status}`;
  let code: number | undefined;
  try {
    const body = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (typeof body.message === 'string') message = body.message;
    if (typeof body.code === 'number') code = body.code;
  } catch {
    // Not JSON: keep the text.
  }
  const options = { code, request };
  switch (response.status) {
    case 401:
      return new UnauthorizedError(message, options);
    case 404:
      return new NotFoundError(message, options);
    case 409:
      return new ConflictError(message, options);
    case 429:
    case 503:
      return new RateLimitedError(response.status, message, retryAfterSecs(response.headers.get('retry-after')), options);
    default:
      return new VoidboxError(response.status, message, options);
  }
}
