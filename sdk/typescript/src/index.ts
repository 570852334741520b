/**
 * `@voidbox/sdk`: the TypeScript client of void-box's daemon
 * (`voidbox serve`): runs of specs, sandboxes with their commands and
 * files, and agent sessions.
 *
 * @module
 */

export { VoidboxClient, type ClientOptions } from './client.js';
export {
  VoidboxError,
  UnauthorizedError,
  NotFoundError,
  ConflictError,
  RateLimitedError,
  TimeoutError,
} from './errors.js';
export { Runs, type SubmitOptions, type EventsOptions, type WaitOptions } from './runs.js';
export {
  Sandbox,
  Sandboxes,
  fromBase64,
  type Command,
  type CreateSandboxOptions,
  type ExecOptions,
  type ExecStreamOptions,
} from './sandboxes.js';
export { Session, Sessions, type CreateSessionOptions, type StreamOptions, type TurnOptions } from './sessions.js';
export { SseParser, readSse, type SseEvent } from './sse.js';
export * from './types.js';
