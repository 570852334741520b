/**
 * The daemon's JSON shapes, with its field names (snake_case) as
 * `docs/openapi.json` gives them, and the events of its streams as
 * discriminated unions on `event`.
 *
 * @module
 */

// ---------------------------------------------------------------- health

/** `GET /v1/health`. */
export interface Health {
  /** Always `ok`. */
  status: string;
  /** The daemon's version. */
  version: string;
  /** Sandboxes it holds now. */
  sandboxes: number;
}

// ---------------------------------------------------------------- runs

/** Where a run is. */
export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A run, and how it ended when it did. */
export interface RunInfo {
  id: string;
  /** The spec's name. */
  name: string;
  /** `agent`, `pipeline`, `workflow` or `sandbox`. */
  kind: string;
  status: RunStatus;
  /** When it was submitted (ms since the epoch). */
  created_unix_ms: number;
  /** When it ended. */
  ended_unix_ms?: number | null;
  /** An agent's file, schema output or text; a pipeline's or workflow's output; a command's stdout. */
  output: unknown;
  /** Why it failed. */
  error?: string | null;
  /** The whole result (stages, usage, cost): only from `get`, once it ended. */
  result: Record<string, unknown> | null;
  /** Events kept so far. */
  events: number;
  /** Events dropped past the daemon's bound. */
  events_dropped: number;
}

/** Whether a run has ended. */
export function isFinished(status: RunStatus): boolean {
  return status === 'succeeded' || status === 'failed' || status === 'cancelled';
}

/** Token counts. */
export interface TokenUsage {
  input_tokens: number;
  output_tokens: number;
}

/** What every run event carries besides its own fields. */
interface RunEventBase {
  /** Its number in the run (the SSE id): resume after it with `events(id, { after })`. */
  seq: number;
  /** When it happened (ms since the epoch). */
  ts_ms: number;
  /** The run's trace id, when it was traced. */
  trace_id?: string;
}

/** The box's stage began (before its sandbox boots). */
export interface StageStartedEvent extends RunEventBase {
  event: 'stage_started';
  box_name: string;
}

/** The sandbox is up. */
export interface SandboxReadyEvent extends RunEventBase {
  event: 'sandbox_ready';
  box_name: string;
  /** Milliseconds its boot took. */
  boot: number;
  /** `kvm` or `tcg`. */
  accel?: string;
}

/** A model turn begins. */
export interface TurnStartedEvent extends RunEventBase {
  event: 'turn_started';
  box_name: string;
  /** 1-based. */
  turn: number;
}

/** Text streamed from the model. */
export interface RunTextDeltaEvent extends RunEventBase {
  event: 'text_delta';
  box_name: string;
  text: string;
}

/** The model called a tool (before permission: a refused call ends with an error result). */
export interface ToolCallStartedEvent extends RunEventBase {
  event: 'tool_call_started';
  box_name: string;
  id: string;
  name: string;
  arguments: unknown;
}

/** A tool call waits for a person's decision (an `ask` permission rule). */
export interface RunConfirmationRequiredEvent extends RunEventBase {
  event: 'confirmation_required';
  box_name: string;
  id: string;
  tool: string;
  arguments: unknown;
  timeout_secs: number;
}

/** The decision on a confirmation came. */
export interface RunConfirmationAnsweredEvent extends RunEventBase {
  event: 'confirmation_answered';
  box_name: string;
  id: string;
  decision: Decision;
  by: 'client' | 'deadline';
}

/** A tool call ended (or was refused). */
export interface ToolCallFinishedEvent extends RunEventBase {
  event: 'tool_call_finished';
  box_name: string;
  id: string;
  name: string;
  summary: string;
  is_error: boolean;
  /** Milliseconds. */
  duration: number;
}

/** Token counts so far in the stage. */
export interface RunUsageEvent extends RunEventBase {
  event: 'usage';
  box_name: string;
  total: TokenUsage;
  cost_usd: number | null;
}

/** Output of a command (`kind: sandbox`, workflow command steps). */
export interface OutputEvent extends RunEventBase {
  event: 'output';
  box_name: string;
  stream: 'stdout' | 'stderr';
  text: string;
}

/** A connection attempt or DNS question of the box's sandbox. */
export interface NetworkEvent extends RunEventBase {
  event: 'network';
  box_name: string;
  connection: {
    kind: 'tcp' | 'udp' | 'dns' | 'published';
    allowed: boolean;
    reason: string;
    host?: string;
    address?: string;
    port: number;
    [key: string]: unknown;
  };
}

/** The stage ended. */
export interface StageFinishedEvent extends RunEventBase {
  event: 'stage_finished';
  box_name: string;
  success: boolean;
  /** Milliseconds. */
  duration: number;
  error: string | null;
}

/**
 * The last event of a stream: the run as it is (ended, or, with
 * `follow: false`, as far as it got). Not numbered.
 */
export interface RunEndEvent {
  event: 'end';
  run: RunInfo | null;
}

/**
 * One event of `GET /v1/runs/{id}/events`. A kind this SDK does not know
 * yet arrives as {@link OtherRunEvent} (`event: 'other'`).
 */
export type RunEvent =
  | StageStartedEvent
  | SandboxReadyEvent
  | TurnStartedEvent
  | RunTextDeltaEvent
  | ToolCallStartedEvent
  | RunConfirmationRequiredEvent
  | RunConfirmationAnsweredEvent
  | ToolCallFinishedEvent
  | RunUsageEvent
  | OutputEvent
  | NetworkEvent
  | StageFinishedEvent
  | RunEndEvent
  | OtherRunEvent;

/** An event of a kind newer than this SDK: its kind and its fields as sent. */
export interface OtherRunEvent extends RunEventBase {
  event: 'other';
  /** The daemon's name for it. */
  kind: string;
  /** Its fields. */
  fields: Record<string, unknown>;
}

// ---------------------------------------------------------------- sandboxes

/** A sandbox the daemon holds. */
export interface SandboxInfo {
  id: string;
  /** `kvm` or `tcg`. */
  accel: string;
  /** Milliseconds its start took (a boot or a restore). */
  boot_ms: number;
  created_unix_ms: number;
  /** When it will be ended, if it has a timeout. */
  expires_unix_ms?: number | null;
  memory_mb: number;
  vcpus: number;
  /** Its OCI image. */
  image?: string | null;
  /** The snapshot it started from. */
  snapshot?: string | null;
  /** The caller's labels. */
  metadata: Record<string, string>;
}

/**
 * A sandbox's configuration, as the daemon's `SandboxConfig` serializes
 * (every field optional; unknown fields are refused with 422).
 */
export interface SandboxConfig {
  image?: string;
  snapshot?: string;
  memory_mb?: number;
  vcpus?: number;
  network?: unknown;
  env?: [string, string][];
  [field: string]: unknown;
}

/** How a command ended, and what it wrote (UTF-8, lossily decoded). */
export interface ExecResult {
  exit_code?: number | null;
  signal?: number | null;
  timed_out: boolean;
  stdout: string;
  stderr: string;
}

/** The command runs as this guest pid (for `writeStdin`, `killProcess`). */
export interface ExecStartedEvent {
  event: 'started';
  pid: number;
}

/** Bytes of its stdout. */
export interface ExecStdoutEvent {
  event: 'stdout';
  data: Uint8Array;
}

/** Bytes of its stderr. */
export interface ExecStderrEvent {
  event: 'stderr';
  data: Uint8Array;
}

/** It ended; nothing follows. */
export interface ExecExitEvent {
  event: 'exit';
  exit_code?: number | null;
  signal?: number | null;
  timed_out: boolean;
}

/** Following it failed; nothing follows. */
export interface ExecErrorEvent {
  event: 'error';
  message: string;
}

/** One event of a followed command (`execStream`). */
export type ExecEvent = ExecStartedEvent | ExecStdoutEvent | ExecStderrEvent | ExecExitEvent | ExecErrorEvent;

/** What a path is. */
export interface FileStat {
  /** The last part of the path. */
  name: string;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  /** Permission bits. */
  mode: number;
  modified_unix_ms: number;
}

// ---------------------------------------------------------------- sessions

/** Tokens, cost and turns of a session so far. */
export interface SessionTotals {
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  turns: number;
  /** The last model call's input: how full the context is. */
  last_input_tokens: number;
}

/** A session. */
export interface SessionInfo {
  id: string;
  /** The agent's name. */
  name: string;
  created_unix_ms: number;
  /** Messages in its conversation. */
  messages: number;
  /** Whether a turn is under way. */
  busy: boolean;
  totals: SessionTotals;
}

/** `allow` or `deny`. */
export type Decision = 'allow' | 'deny';

/** Permission rules (`bash`, `bash(rm *)`, `write`, `mcp__*`). */
export interface Permissions {
  allow?: string[];
  deny?: string[];
  ask?: string[];
  /** What a call no rule names gets (default `allow`). */
  default?: Decision;
  /** What an `ask` call gets when nobody answers in time (default `deny`). */
  unattended?: Decision;
}

/** One tool call of a turn. */
export interface ToolCallRecord {
  id: string;
  name: string;
  arguments: unknown;
  summary: string;
  is_error: boolean;
}

/** A turn's result. */
export interface TurnResult<T = unknown> {
  /** The model's final text. */
  text: string;
  /** `generateObject`'s value (valid against the schema); else null. */
  output: T;
  tool_calls: ToolCallRecord[];
  usage: TokenUsage;
  cost_usd: number | null;
  /** Model calls the turn took. */
  model_calls: number;
}

/** A content block of a message, in the model's wire shape. */
export type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: unknown }
  | { type: 'tool_result'; tool_use_id: string; content: string; is_error: boolean };

/** A message of a session's conversation. */
export interface Message {
  role: 'user' | 'assistant';
  content: ContentBlock[];
}

/** `GET /v1/sessions/{id}/context`. */
export interface SessionContext {
  messages: number;
  /** The conversation's JSON size / 4. */
  estimated_tokens: number;
  last_input_tokens: number;
  totals: SessionTotals;
}

/** `POST /v1/sessions/{id}/compact`. */
export interface CompactResult {
  messages_before: number;
  messages_after: number;
}

/** Text streamed from the model. */
export interface TextDeltaEvent {
  event: 'text_delta';
  text: string;
}

/** The model called a tool (before permission: a refused call ends with an error `tool_result`). */
export interface ToolCallEvent {
  event: 'tool_call';
  id: string;
  name: string;
  arguments: unknown;
}

/** A tool call ended (or was refused). */
export interface ToolResultEvent {
  event: 'tool_result';
  id: string;
  name: string;
  summary: string;
  is_error: boolean;
}

/** An `ask` rule stopped the turn: answer with `session.confirm(id, ...)`. */
export interface ConfirmationRequiredEvent {
  event: 'confirmation_required';
  /** The confirmation's id. */
  id: string;
  tool: string;
  arguments: unknown;
  /** Seconds before the unattended decision applies. */
  timeout_secs: number;
}

/** A confirmation was answered, by the client or by its deadline. */
export interface ConfirmationAnsweredEvent {
  event: 'confirmation_answered';
  id: string;
  decision: Decision;
  by: 'client' | 'deadline';
}

/** Token counts so far in the turn. */
export interface UsageEvent {
  event: 'usage';
  input_tokens: number;
  output_tokens: number;
  cost_usd: number | null;
}

/** The turn ended; nothing follows. */
export interface DoneEvent<T = unknown> {
  event: 'done';
  result: TurnResult<T>;
}

/** The turn failed or was cancelled; nothing follows. */
export interface TurnErrorEvent {
  event: 'error';
  message: string;
}

/** One event of a streamed turn (`session.stream`). */
export type TurnEvent<T = unknown> =
  | TextDeltaEvent
  | ToolCallEvent
  | ToolResultEvent
  | ConfirmationRequiredEvent
  | ConfirmationAnsweredEvent
  | UsageEvent
  | DoneEvent<T>
  | TurnErrorEvent;
