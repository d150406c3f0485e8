import { AgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import type { EffectRecorder } from "./effects.js";

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
    /** Characters of output kept in the error when the command fails (default 600). */
    tail?: number;
  },
) => Promise<CommandResult>;

const OUTPUT_TAIL = 600;

function tail(text: string, max = OUTPUT_TAIL): string {
  const t = text.trim();
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
    // Imported on first use: a daemon that has run no command yet does not carry execa's memory.
    const { execa } = await import("execa");
    const result = await execa(file, args, {
      reject: false,
      cancelSignal: opts.signal,
      input: options.input ?? "",
      env: { ...opts.env, ...options.env },
      cwd: options.cwd,
      all: true,
      stripFinalNewline: true,
    });
    if (result.failed) {
      const why = result.isCanceled
        ? "was cancelled"
        : result.exitCode !== undefined
          ? `exited with code ${result.exitCode}`
          : `failed: ${result.originalMessage ?? result.shortMessage}`;
      const output = tail(String(result.all ?? `${result.stderr}\n${result.stdout}`), options.tail);
      throw new AgentError(
        "COMMAND_FAILED",
        sanitize(`${argv.join(" ")} ${why}${output ? `: ${output}` : ""}`),
      );
    }
    return { stdout: String(result.stdout), stderr: String(result.stderr), ran: true };
  };
}
