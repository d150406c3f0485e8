import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import type { EffectRecorder } from "./effects.js";
import { endedHow, runProcess } from "./process.js";

export interface CommandResult {
  stdout: string;
  stderr: string;
  /** false when the command was only recorded (dry run): its output is not known. */
  ran: boolean;
}

/**
 * Runs a command (argv, no shell). In a dry run it records the command instead and returns empty output;
 * a query runs in both modes.
 */
export type CommandRunner = (
  argv: readonly string[],
  options?: {
    input?: string;
    /** false when the caller records its own effect */
    record?: boolean;
    /** A question that changes nothing (systemctl is-active, cat): asked in a dry run too, never recorded. */
    query?: boolean;
    cwd?: string;
    /** Added to the environment. */
    env?: Record<string, string>;
    /** stdout may hold secrets (a unit's Environment=): a failure's message keeps stderr only. */
    secretStdout?: boolean;
    /** Characters of output kept in the error when the command fails (default 600). */
    tail?: number;
    /** Descriptors the command gets as its 3, 4, … (see ProcessOptions.fds). */
    fds?: readonly number[];
  },
) => Promise<CommandResult>;

const OUTPUT_TAIL = 600;
/** A command writing more than this to stdout or to stderr is stopped and fails (COMMAND_FAILED). */
export const COMMAND_OUTPUT_MAX_BYTES = 16 * 1024 * 1024;

function tail(text: string, max = OUTPUT_TAIL): string {
  const t = text.trim();
  // slice(-0) is the whole text: 0 keeps none.
  if (max <= 0) return "";
  return t.length > max ? `…${t.slice(-max)}` : t;
}

export function createCommandRunner(opts: {
  dryRun: boolean;
  record: EffectRecorder;
  signal: AbortSignal;
  env?: NodeJS.ProcessEnv;
}): CommandRunner {
  return async (argv, options = {}) => {
    if (options.record !== false && !options.query) opts.record({ type: "run", argv: [...argv] });
    if (opts.dryRun && !options.query) return { stdout: "", stderr: "", ran: false };
    const [file = "", ...args] = argv;
    const result = await runProcess(file, args, {
      input: options.input ?? "",
      env: { ...process.env, ...opts.env, ...options.env },
      cwd: options.cwd,
      signal: opts.signal,
      maxBytes: { stdout: COMMAND_OUTPUT_MAX_BYTES, stderr: COMMAND_OUTPUT_MAX_BYTES },
      stripFinalNewline: true,
      fds: options.fds,
    });
    if (result.exitCode !== 0 || result.canceled || result.overflow) {
      // A command that could not start has no output to overflow: the three never meet.
      const why = result.canceled
        ? "was cancelled"
        : result.overflow
          ? `wrote more than ${COMMAND_OUTPUT_MAX_BYTES} bytes to ${result.overflow}`
          : endedHow(result);
      const output = tail(
        options.secretStdout ? result.stderr : result.all || `${result.stderr}\n${result.stdout}`,
        options.tail,
      );
      throw new AgentError(
        "COMMAND_FAILED",
        sanitize(`${argv.join(" ")} ${why}${output ? `: ${output}` : ""}`),
      );
    }
    return { stdout: result.stdout, stderr: result.stderr, ran: true };
  };
}
