/**
 * Every failure the agent reports carries a stable code. The code decides the exit status, the HTTP status
 * and the retry policy (Flux's failure classes), so call sites never branch on message text.
 */

/** stalled: a human must act; waiting: retry later as-is; transient: retry with backoff. */
export type FailureClass = "stalled" | "waiting" | "transient";

export interface CodeInfo {
  failure: FailureClass;
  /** CLI exit code when this error ends a command: 2 = usage or configuration, 1 = runtime failure. */
  exit: 1 | 2;
  /** What to do, when the place that threw has nothing more precise to say: every error carries a hint. */
  hint: string;
  /** The configuration (manifest, its env) is invalid: nothing is deployed until a human fixes it. */
  configInvalid?: true;
}

const CODES = {
  USAGE: { failure: "stalled", exit: 2, hint: "deploy-agent help COMMAND shows its usage and options" },
  CONFIG_INVALID: {
    failure: "stalled",
    exit: 2,
    configInvalid: true,
    hint: "fix the manifest and check it with deploy-agent validate; nothing is deployed until it is valid",
  },
  ENV_MISSING: {
    failure: "stalled",
    exit: 2,
    configInvalid: true,
    hint: "set the variable in the manifest's envFile (or the unit's environment)",
  },
  REPO_INVALID: {
    failure: "stalled",
    exit: 2,
    hint: "check the clone at repo.path (or --repo) and its remote",
  },
  LISTEN_FAILED: { failure: "transient", exit: 1, hint: "see who holds the port: ss -ltnp" },
  LOCAL_CHANGES: { failure: "stalled", exit: 1, hint: "keep them in git, or pass --force to overwrite them" },
  INSTALL_FAILED: {
    failure: "stalled",
    exit: 1,
    hint: "nothing was left half done; fix what it names and run install again",
  },
  /** A value an env file cannot carry so that dotenv and systemd read it back identically. */
  ENV_VALUE_UNSAFE: {
    failure: "stalled",
    exit: 2,
    hint: "env values are one line, without control characters; the value itself is never shown",
  },
  /** The old webhook binary's hooks file is a template install cannot resolve (webhook -template). */
  HOOKS_TEMPLATE_UNRESOLVED: {
    failure: "stalled",
    exit: 2,
    hint: "put the secret in /etc/deploy-agent/webhook-secret yourself, then run install again",
  },
  /** The old listener's secret cannot be taken over as the one Gitea signs with. */
  SECRET_UNUSABLE: {
    failure: "stalled",
    exit: 2,
    hint: "set a new secret of 16 or more characters, here and in Gitea's webhook",
  },
  FETCH_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "retried; check that the host reaches the remote: git -C <clone> fetch",
  },
  GIT_FAILED: { failure: "transient", exit: 1, hint: "retried; git's own message says why" },
  LOCKED: { failure: "waiting", exit: 1, hint: "wait for the other run to finish, or pass --wait SECONDS" },
  /** The state directory (or its lock file, or a directory on the way) could be changed by another user. */
  STATE_UNSAFE: {
    failure: "stalled",
    exit: 1,
    hint: "make the state directory and those above it root's, writable by nobody else (chown root:, chmod go-w)",
  },
  /** util-linux's flock(1), which takes the deploy lock, could not be run. */
  LOCK_FAILED: { failure: "stalled", exit: 1, hint: "flock(1) is in util-linux: apt-get install util-linux" },
  /** The revision to deploy is not signed by a trusted key (repo.verify). */
  UNVERIFIED: {
    failure: "stalled",
    exit: 1,
    hint: "nothing was deployed; the host stays on its last good revision until a verified push",
  },
  /** With repo.verify on, the revision does not descend from the last one the host ran (a force push). */
  HISTORY_REWRITTEN: {
    failure: "stalled",
    exit: 1,
    hint: "push a commit on top of the last revision run; to go back on purpose: deploy-agent pin <revision> on the host",
  },
  /** pin: the revision is not one this host may be held at without --force. */
  PIN_REFUSED: {
    failure: "stalled",
    exit: 1,
    hint: "deploy-agent history lists what this host ran; --force pins another revision (still verified)",
  },
  /** The state directory cannot be written: a full disk, a directory where state.json belongs. */
  STATE_WRITE_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "check the state directory: df -h, its owner and mode",
  },
  /** The deploy history cannot be read: it is root's (mode 0600), or the state directory is unusable. */
  HISTORY_UNREADABLE: {
    failure: "stalled",
    exit: 1,
    hint: "the history is readable by root only: sudo deploy-agent history",
  },
  SOURCE_MISSING: {
    failure: "stalled",
    exit: 1,
    hint: "add the file to the repository, or fix the step's source",
  },
  SOURCE_UNSAFE: {
    failure: "stalled",
    exit: 1,
    hint: "sources are regular files inside the repository, never links out of it",
  },
  SOURCE_INVALID: {
    failure: "stalled",
    exit: 1,
    hint: "fix the file in git; the target keeps its previous content",
  },
  COMMAND_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "the command's output is in the message; fix it and push, or re-run the step: deploy-agent run --step NAME",
  },
  STEP_TIMEOUT: {
    failure: "transient",
    exit: 1,
    hint: "raise the step's timeoutSeconds, or find what hangs",
  },
  TARGET_WRITE_FAILED: {
    failure: "stalled",
    exit: 1,
    hint: "check the target's directory: it exists, has space and is writable",
  },
  /** A target is a link, FIFO, device or too large, or its temp file was swapped: never read or written through. */
  TARGET_UNSAFE: {
    failure: "stalled",
    exit: 1,
    hint: "a target is a regular file the agent replaces: remove what is at its path (and find who put it there), or point the step at the real file",
  },
  /** Some of a step's items (targets, connections) failed; each item says why. */
  ITEMS_FAILED: { failure: "transient", exit: 1, hint: "each failed item says why; the others were applied" },
  /** A sandboxed check's child process (transform checks in QuickJS) failed, timed out or answered too much. */
  TRANSFORM_CHECK_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "the message says why; the step runs again at the next push",
  },
  /** The agent was stopping and cancelled the running step. */
  ABORTED: { failure: "transient", exit: 1, hint: "the step runs again at the next start" },
  /** Anything the agent did not expect: a bug or an unforeseen environment. Not retried on a timer. */
  INTERNAL: {
    failure: "stalled",
    exit: 1,
    hint: "a bug or an unforeseen environment: the log has the stack; please report it",
  },
  TOKEN_UNAVAILABLE: {
    failure: "stalled",
    exit: 1,
    hint: "the live config has no usable token; put it back, then re-run the step",
  },
  HEALTH_CHECK_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "the previous config was restored; the service's journal says why",
  },
  BUILD_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "the live site is untouched; the build's output is in the message",
  },
  /** A secret of the repository this host cannot decrypt (not among its recipients, no key, a damaged file). */
  SECRET_UNREADABLE: {
    failure: "stalled",
    exit: 1,
    hint: "the target keeps its old value; add this host's recipient to the secret and run deploy-agent secret rekey",
  },
  /** `secret rotate-webhook --finish` before any delivery was verified with the next secret. */
  ROTATION_UNCONFIRMED: {
    failure: "stalled",
    exit: 1,
    hint: "send a delivery signed with the next secret first (Gitea's Test Delivery); the current secret stays",
  },
  /** Gitea's API refused or failed to give a webhook its new secret. */
  GITEA_HOOK_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "the agent still accepts the current and the next secret; fix what it names and run it again",
  },
  /** A new Matrix token failed its check (whoami, membership, power level) before it replaced the old one. */
  TOKEN_REJECTED: {
    failure: "stalled",
    exit: 1,
    hint: "the old token stays in place; make a token that passes, set it again, commit and push",
  },
  MATRIX_AUTH: { failure: "stalled", exit: 1, hint: "the Matrix token is invalid or expired: rotate it" },
  MATRIX_FORBIDDEN: {
    failure: "stalled",
    exit: 1,
    hint: "the token's user lacks the power level for this room state",
  },
  MATRIX_RATE_LIMITED: { failure: "waiting", exit: 1, hint: "retried after the homeserver's delay" },
  MATRIX_UNAVAILABLE: { failure: "transient", exit: 1, hint: "retried; check that the homeserver is up" },
  MATRIX_REQUEST_FAILED: {
    failure: "transient",
    exit: 1,
    hint: "retried; the homeserver's answer is in the message",
  },
  /** The homeserver refused the request itself (a 4xx other than 401/403/429, a redirect, an oversized answer). */
  MATRIX_REFUSED: {
    failure: "stalled",
    exit: 1,
    hint: "not retried: the homeserver's answer is in the message; check MATRIX_SERVER and the room id",
  },
  /** An HTTP service did not answer usefully (5xx, a network error, a timeout). */
  HTTP_UNAVAILABLE: {
    failure: "transient",
    exit: 1,
    hint: "retried with backoff; check that the service is up",
  },
  /** An HTTP service asked to be called later (429). */
  HTTP_RATE_LIMITED: { failure: "waiting", exit: 1, hint: "retried after the delay the service advised" },
  /** An HTTP service refused the request itself (a 4xx other than 429, a redirect). */
  HTTP_REFUSED: { failure: "stalled", exit: 1, hint: "not retried: check the URL and the credentials" },
  /** A dry run could not find out what a step would do (the homeserver could not be asked). */
  UNDETERMINED: {
    failure: "transient",
    exit: 1,
    hint: "a dry run could not ask the service; try again when it is reachable",
  },
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof CODES;

/** The code table, for what documents it (the README's table is checked against it). */
export const ERROR_CODES: Readonly<Record<ErrorCode, Readonly<CodeInfo>>> = CODES;

/** Whether the code says the configuration is invalid (its flag in the table); false for unknown codes. */
export function isConfigInvalid(code: string): boolean {
  return Object.hasOwn(CODES, code) && (CODES as Record<string, CodeInfo>)[code]?.configInvalid === true;
}

export class AgentError extends Error {
  override readonly name = "AgentError";
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.hint = options.hint ?? CODES[code].hint;
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

/**
 * An error as a log line's fields: its code and message, and for INTERNAL (a bug) the stack of what was
 * thrown, so the journal keeps where it happened.
 */
export function logFields(e: AgentError): { code: ErrorCode; err: string; stack?: string } {
  const stack = e.code === "INTERNAL" ? (e.cause instanceof Error ? e.cause.stack : e.stack) : undefined;
  return { code: e.code, err: e.message, ...(stack ? { stack } : {}) };
}
