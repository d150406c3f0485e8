/**
 * Every failure the agent reports carries a stable code. The code decides the exit status, the HTTP status
 * and the retry policy (Flux's failure classes), so call sites never branch on message text.
 */

/** stalled: a human must act; waiting: retry later as-is; transient: retry with backoff. */
export type FailureClass = "stalled" | "waiting" | "transient";

interface CodeInfo {
  failure: FailureClass;
  /** CLI exit code when this error ends a command: 2 = usage or configuration, 1 = runtime failure. */
  exit: 1 | 2;
}

const CODES = {
  USAGE: { failure: "stalled", exit: 2 },
  CONFIG_INVALID: { failure: "stalled", exit: 2 },
  ENV_MISSING: { failure: "stalled", exit: 2 },
  REPO_INVALID: { failure: "stalled", exit: 2 },
  LISTEN_FAILED: { failure: "transient", exit: 1 },
  LOCAL_CHANGES: { failure: "stalled", exit: 1 },
  INSTALL_FAILED: { failure: "stalled", exit: 1 },
  FETCH_FAILED: { failure: "transient", exit: 1 },
  GIT_FAILED: { failure: "transient", exit: 1 },
  LOCKED: { failure: "waiting", exit: 1 },
  /** The state directory (or its lock file, or a directory on the way) could be changed by another user. */
  STATE_UNSAFE: { failure: "stalled", exit: 1 },
  /** util-linux's flock(1), which takes the deploy lock, could not be run. */
  LOCK_FAILED: { failure: "stalled", exit: 1 },
  /** The revision to deploy is not signed by a trusted key (repo.verify). */
  UNVERIFIED: { failure: "stalled", exit: 1 },
  /** The state directory cannot be written: a full disk, a directory where state.json belongs. */
  STATE_WRITE_FAILED: { failure: "transient", exit: 1 },
  SOURCE_MISSING: { failure: "stalled", exit: 1 },
  SOURCE_UNSAFE: { failure: "stalled", exit: 1 },
  SOURCE_INVALID: { failure: "stalled", exit: 1 },
  COMMAND_FAILED: { failure: "transient", exit: 1 },
  STEP_TIMEOUT: { failure: "transient", exit: 1 },
  TARGET_WRITE_FAILED: { failure: "stalled", exit: 1 },
  STEP_FAILED: { failure: "transient", exit: 1 },
  /** Some of a step's items (targets, connections) failed; each item says why. */
  ITEMS_FAILED: { failure: "transient", exit: 1 },
  /** The agent was stopping and cancelled the running step. */
  ABORTED: { failure: "transient", exit: 1 },
  /** Anything the agent did not expect: a bug or an unforeseen environment. Not retried on a timer. */
  INTERNAL: { failure: "stalled", exit: 1 },
  TOKEN_UNAVAILABLE: { failure: "stalled", exit: 1 },
  HEALTH_CHECK_FAILED: { failure: "transient", exit: 1 },
  BUILD_FAILED: { failure: "transient", exit: 1 },
  TRANSFORM_INVALID: { failure: "stalled", exit: 1 },
  CONNECTION_MISSING: { failure: "stalled", exit: 1 },
  MATRIX_AUTH: { failure: "stalled", exit: 1 },
  MATRIX_FORBIDDEN: { failure: "stalled", exit: 1 },
  MATRIX_RATE_LIMITED: { failure: "transient", exit: 1 },
  MATRIX_UNAVAILABLE: { failure: "transient", exit: 1 },
  MATRIX_REQUEST_FAILED: { failure: "transient", exit: 1 },
  /** A dry run could not find out what a step would do (the homeserver could not be asked). */
  UNDETERMINED: { failure: "transient", exit: 1 },
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof CODES;

export class AgentError extends Error {
  override readonly name = "AgentError";
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
  }

  get failure(): FailureClass {
    return CODES[this.code].failure;
  }

  get exitCode(): 1 | 2 {
    return CODES[this.code].exit;
  }
}

/** Wraps anything thrown into an AgentError, keeping an AgentError as it is; the unforeseen is INTERNAL. */
export function asAgentError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  const e = err as NodeJS.ErrnoException;
  const message = err instanceof Error ? `${e.code ? `${e.code}: ` : ""}${err.message}` : String(err);
  return new AgentError("INTERNAL", message, { cause: err });
}
