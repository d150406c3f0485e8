import { asAgentError } from "../core/errors.js";
import { appendHistory, compactionText } from "../state/history.js";
import { operator } from "../state/history-record.js";
import { acquireLock, COMMAND_LOCK_WAIT_MS } from "../state/lock.js";
import { readState } from "../state/read-state.js";
import { writeState } from "../state/state.js";
import { type CommonFlags, resolve } from "./options.js";
import { type RunFlags, runCommand } from "./run.js";

/**
 * `deploy-agent suspend [--reason TEXT]` and `resume`: pause a host on purpose. While suspended, runs (the
 * daemon's too) still fetch and verify and remember the newest revision, and deploy nothing; `resume` clears
 * the mark and deploys what came meanwhile at once. Both take the deploy lock (waiting up to a minute).
 */

/**
 * Suspends (with `reason`) or resumes (undefined), decided under the deploy lock on the state as it is then:
 * `since` is when the lock was taken, and a host suspended already keeps its `since` and the newest revision
 * it remembers (the reason is the new one), so a new reason never restarts the clock of the alert.
 */
async function mark(flags: CommonFlags, reason: string | undefined) {
  const r = await resolve(flags);
  const lock = await acquireLock(r.stateDir, COMMAND_LOCK_WAIT_MS);
  try {
    const { state } = await readState(r.stateDir, r.loaded.manifest.host);
    const before = state.suspended;
    // Resuming a host that is not suspended changes nothing, not even the state file's time.
    if (reason === undefined && !before) return { r, before, after: undefined, historyNote: null };
    if (reason !== undefined)
      state.suspended = { ...(before ?? { since: new Date().toISOString() }), reason };
    else delete state.suspended;
    await writeState(r.stateDir, state);
    const revision = state.lastRun?.revision ?? null;
    // Done is done: a history that cannot be written is said, never a failed suspend.
    let dropped: string | null = null;
    const historyNote = await appendHistory(
      r.stateDir,
      {
        v: 1,
        at: new Date().toISOString(),
        host: r.loaded.manifest.host,
        event: reason !== undefined ? "suspend" : "resume",
        trigger: { kind: "manual", user: operator() },
        revision,
        previousRevision: revision,
        result: reason !== undefined ? "suspended" : "resumed",
        verified: false,
        applied: false,
        error: null,
        steps: [],
        durationMs: 0,
        ...(reason !== undefined ? { reason } : {}),
      },
      {
        bounds: r.loaded.manifest.history,
        locked: true,
        // Corruption dropped by the rewrite is said; records past the bounds are routine.
        onCompact: (c) => {
          if (c.invalid) dropped = `warning: ${compactionText(c)}\n`;
        },
      },
    ).then(
      () => dropped,
      (err: unknown) => `warning: not recorded in the deploy history: ${asAgentError(err).message}\n`,
    );
    return { r, before, after: state.suspended, historyNote };
  } finally {
    await lock.release();
  }
}

export async function suspendCommand(
  flags: CommonFlags & { reason?: string | undefined },
  out: (t: string) => void,
): Promise<number> {
  const reason = flags.reason?.trim() || "no reason given";
  const { r, before, after, historyNote } = await mark(flags, reason);
  if (historyNote && !flags.json) out(historyNote);
  out(
    flags.json
      ? `${JSON.stringify({ schema: "deploy-agent/suspend@1", host: r.loaded.manifest.host, suspended: after }, null, 2)}\n`
      : `${r.loaded.manifest.host} suspended${before ? ` (since ${before.since})` : ""}: ${reason}. Pushes are verified and remembered, nothing is deployed until deploy-agent resume.\n`,
  );
  return 0;
}

export async function resumeCommand(flags: RunFlags, out: (t: string) => void): Promise<number> {
  const { r, before, historyNote } = await mark(flags, undefined);
  if (historyNote && !flags.json) out(historyNote);
  const host = r.loaded.manifest.host;
  if (!before) {
    out(
      flags.json
        ? `${JSON.stringify({ schema: "deploy-agent/resume@1", host, suspended: false }, null, 2)}\n`
        : `${host} is not suspended: nothing to resume, nothing deployed (deploy-agent run deploys)\n`,
    );
    return 0;
  }
  if (!flags.json)
    out(
      `${host} resumed (suspended since ${before.since}: ${before.reason}); deploying what came meanwhile\n`,
    );
  return runCommand(flags, out, { kind: "resume", user: operator() });
}
