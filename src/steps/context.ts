import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { AgentError, asAgentError } from "../core/errors.js";
import { sanitize } from "../core/redact.js";
import { withTimeout } from "../core/with-timeout.js";
import { createCommandRunner } from "../host/command.js";
import type { EffectRecorder } from "../host/effects.js";
import { waitHealthy } from "../host/health.js";
import { createHostFs } from "../host/host-fs.js";
import { createMatrixClient } from "../matrix/client.js";
import { gitAt } from "../source/git-command.js";
import type { Snapshot } from "../source/snapshot.js";
import type { MatrixConfig, StepContext, StepMatrix } from "./types.js";

/**
 * The one door a step has to the world: files under the root, commands, Matrix room state, HTTP health
 * checks, the effect record, the log and one abort signal (a rollback gets its own, bounded). In a dry run
 * the same context reads what it may (files, room state) and records every write instead of doing it, so a
 * step has no dry-run branch of its own and cannot write by mistake.
 */

export interface ContextOptions {
  dryRun: boolean;
  /** Prefix of every host path; "" for the real host. */
  root: string;
  log: Logger;
  /** Aborted on the step's timeout or when the agent must stop now; every IO call gets it. */
  signal: AbortSignal;
  /** Aborted when the agent must stop now (its shutdown grace is over): ends a rollback too. */
  stopNow?: AbortSignal | undefined;
  commands: { systemctl: readonly string[] };
  record: EffectRecorder;
  /**
   * Nothing leaves the host with its credentials (a pull request's preview: its manifest may name any
   * homeserver): Matrix reads answer "unknown" without a request. Only with dryRun.
   */
  offline?: boolean | undefined;
}

/** A step's context: the world, and the revision being deployed. */
export function createStepContext(opts: ContextOptions & { source: Snapshot }): StepContext {
  return { ...createContext(opts), source: opts.source };
}

/** The world as steps and host jobs reach it (see the module comment). */
export function createContext(opts: ContextOptions): Omit<StepContext, "source"> {
  const { dryRun, record, signal } = opts;
  const run = createCommandRunner({ dryRun, record, signal });
  const host = createHostFs({ root: opts.root, dryRun, record, run });
  return {
    host,
    run,
    async git(hostDir, args) {
      const dir = host.resolve(hostDir);
      const argv = ["git", "-C", dir, ...args];
      record({ type: "run", argv });
      if (dryRun) return { stdout: "", stderr: "", ran: false };
      try {
        const stdout = await gitAt(dir, signal).raw([...args]);
        return { stdout: stdout.replace(/\n$/, ""), stderr: "", ran: true };
      } catch (err) {
        if (err instanceof AgentError) throw err;
        const why = (err instanceof Error ? err.message : String(err)).trim().split("\n").at(-1);
        throw new AgentError("COMMAND_FAILED", sanitize(`${argv.join(" ")} failed: ${why}`));
      }
    },
    record,
    log: opts.log,
    signal,
    commands: opts.commands,

    matrix(config: MatrixConfig) {
      if (opts.offline && dryRun) return offlineMatrix(record);
      const client = createMatrixClient({
        homeserver: config.homeserver,
        token: config.token,
        signal,
        // A dry run looks once: it must not spend minutes retrying a homeserver it only compares with.
        maxAttempts: dryRun ? 1 : config.attempts,
        backoffMs: config.backoffMs,
        requestTimeoutMs: config.timeoutMs,
      });
      const matrix: StepMatrix = {
        async whoami() {
          try {
            return await client.whoami();
          } catch (err) {
            const e = asAgentError(err);
            // A rejected token is an answer, not a failure to look.
            if (!dryRun || e.failure === "stalled") throw err;
            throw new AgentError("UNDETERMINED", `whoami unknown (${e.code}: ${e.message})`, { cause: err });
          }
        },
        async getState(room, type, key) {
          try {
            return await client.getState(room, type, key);
          } catch (err) {
            if (!dryRun) throw err;
            const e = asAgentError(err);
            throw new AgentError("UNDETERMINED", `current state unknown (${e.code}: ${e.message})`, {
              cause: err,
            });
          }
        },
        async replaceState(room, type, key, content, detail) {
          record({ type: "request", method: "PUT", url: `${room} state ${type}/${key}`, detail });
          if (dryRun) return;
          await client.putState(room, type, key, content);
          const back = await client.getState(room, type, key).catch((err: unknown) => {
            // Past the point of no return: say so, else the failure reads as if nothing was written.
            const e = asAgentError(err);
            throw new AgentError(e.code, `written, but the read-back failed: ${e.message}`, {
              hint: e.hint,
              cause: err,
            });
          });
          // Equal as JSON, not as text: a homeserver may answer the keys in another order (canonical JSON).
          if (!isDeepStrictEqual(back, content)) {
            throw new AgentError(
              "MATRIX_REQUEST_FAILED",
              "read-back after the write does not show the new content",
            );
          }
        },
      };
      return matrix;
    },

    async health(url, timeoutSeconds) {
      record({ type: "request", method: "GET", url, detail: `until 200, up to ${timeoutSeconds}s` });
      if (dryRun) return { healthy: true, last: "not checked (dry run)" };
      return waitHealthy(url, { timeoutMs: timeoutSeconds * 1000, signal });
    },

    rollback(timeoutSeconds, work) {
      return withTimeout(timeoutSeconds * 1000, opts.stopNow, (own) =>
        work(createContext({ ...opts, signal: own })),
      );
    },
  };
}

/** Matrix for a context that sends nothing: every read is unknown, every write only recorded. */
function offlineMatrix(record: EffectRecorder): StepMatrix {
  const unknown = (what: string) =>
    new AgentError(
      "UNDETERMINED",
      `${what} unknown (not asked: a preview sends no request with the host's token)`,
    );
  return {
    whoami: async () => {
      throw unknown("whoami");
    },
    getState: async () => {
      throw unknown("current state");
    },
    replaceState: async (room, type, key, _content, detail) => {
      record({ type: "request", method: "PUT", url: `${room} state ${type}/${key}`, detail });
    },
  };
}
