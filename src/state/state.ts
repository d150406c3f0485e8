import { mkdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { HISTORY_FILE, type HistoryRecord, readHistory } from "./history.js";

/**
 * Per-step deploy state, recorded the Flux way: `lastAttemptedRevision` when a step starts,
 * `lastAppliedRevision` only after it succeeded, and the last result with a short history.
 * The file is rewritten atomically after every step, so a crash leaves the last consistent picture.
 */

const itemSchema = z.strictObject({
  id: z.string(),
  outcome: z.enum(["changed", "unchanged", "failed", "skipped", "unknown"]),
  detail: z.string().optional(),
});

const resultSchema = z.strictObject({
  outcome: z.enum(["succeeded", "failed"]),
  revision: z.string(),
  /** Why, for people: Succeeded or StepFailed (as Flux's reasons). */
  reason: z.string(),
  /** The error's stable code (src/core/errors.ts) when it failed. */
  code: z.string().optional(),
  message: z.string(),
  at: z.string(),
  durationMs: z.number(),
  items: z.array(itemSchema).default([]),
});

const stepStateSchema = z.strictObject({
  lastAttemptedRevision: z.string().optional(),
  /** When the last attempt started: recorded before the step's first effect. */
  lastAttemptedAt: z.string().optional(),
  lastAppliedRevision: z.string().optional(),
  lastResult: resultSchema.optional(),
  history: z.array(resultSchema).default([]),
});

const runSummarySchema = z.strictObject({
  revision: z.string(),
  result: z.enum(["succeeded", "failed", "noop"]),
  at: z.string(),
  durationMs: z.number(),
});

export const stateSchema = z.strictObject({
  version: z.literal(1),
  host: z.string(),
  steps: z.record(z.string(), stepStateSchema),
  lastRun: runSummarySchema.optional(),
  /**
   * The newest revision of the branch verified here: a push must descend from it (repo.verify on). A pin
   * goes back without moving it, so a force push to a revision between the pin and it is still refused.
   */
  anchor: z.string().optional(),
  /**
   * Set by `deploy-agent pin`: runs deploy this revision whatever the tip (remembered in newestRevision)
   * until `unpin`. `until` is when the pin was meant to end (an alert fires after it), not an expiry.
   */
  pinned: z
    .strictObject({
      revision: z.string(),
      reason: z.string(),
      since: z.string(),
      until: z.string(),
      by: z.string(),
      newestRevision: z.string().optional(),
    })
    .optional(),
  /** Set by `deploy-agent suspend`: runs verify and remember the newest revision, and deploy nothing. */
  suspended: z
    .strictObject({ reason: z.string(), since: z.string(), newestRevision: z.string().optional() })
    .optional(),
});

export type State = z.infer<typeof stateSchema>;
export type StepState = z.infer<typeof stepStateSchema>;
export type StepResult = z.infer<typeof resultSchema>;
export type StepItem = z.infer<typeof itemSchema>;
export type RunSummary = z.infer<typeof runSummarySchema>;
export type Pin = NonNullable<State["pinned"]>;

const HISTORY_LENGTH = 10;
export const STATE_FILE = "state.json";

export function emptyState(host: string): State {
  return { version: 1, host, steps: {} };
}

export interface LoadedState {
  state: State;
  /**
   * Why the stored state could not be used whole. What it still said field by field is kept; the pin, the
   * suspension, the anchor and the last run it no longer says are taken from the deploy history; a step
   * it lost counts as never applied.
   */
  problem?: string;
}

type Salvaged = Pick<State, "anchor" | "pinned" | "suspended" | "lastRun">;
const SAFETY = ["suspended", "pinned", "anchor", "lastRun"] as const satisfies readonly (keyof Salvaged)[];

export async function readState(stateDir: string, host: string): Promise<LoadedState> {
  const file = path.join(stateDir, STATE_FILE);
  let text: string;
  try {
    // Synchronously: a small file read once per run, on a push's path (see writeFileAtomic).
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { state: emptyState(host) };
    return recovered(stateDir, host, {}, `cannot read ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return recovered(stateDir, host, {}, `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = stateSchema.safeParse(json);
  if (parsed.success && parsed.data.host === host) return { state: parsed.data };
  if (!isObject(json)) return recovered(stateDir, host, {}, `${file} does not hold a JSON object`);
  const fields = json;
  if (fields.host !== host) {
    return recovered(stateDir, host, {}, `${file} belongs to host "${String(fields.host)}", not "${host}"`);
  }
  // Another shape (a newer agent's field, a hand edit): every field that still reads is kept on its own, so
  // a downgrade or a typo does not lift a suspension, drop a pin or forget the anchor.
  const kept: Salvaged = {};
  for (const key of SAFETY) {
    const field = stateSchema.shape[key].safeParse(fields[key]);
    if (field.success && field.data !== undefined) Object.assign(kept, { [key]: field.data });
  }
  const steps: State["steps"] = {};
  for (const [name, step] of Object.entries(isObject(fields.steps) ? fields.steps : {})) {
    const parsedStep = stepStateSchema.safeParse(step);
    if (parsedStep.success) steps[name] = parsedStep.data;
  }
  const why = parsed.success ? "" : `: ${z.prettifyError(parsed.error)}`;
  return recovered(stateDir, host, { ...kept, steps }, `${file} has an unexpected shape${why}`);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * A state that says less than it should, completed from the deploy history: the newest suspend or resume,
 * the newest pin or unpin that ran, the newest verified revision as the anchor, the newest run. The history
 * is the only other record of them; what it no longer holds (past its bounds) is said to be lost.
 */
async function recovered(
  stateDir: string,
  host: string,
  kept: Salvaged & { steps?: State["steps"] },
  problem: string,
): Promise<LoadedState> {
  const state: State = { ...emptyState(host), ...kept, steps: kept.steps ?? {} };
  const said: string[] = [];
  const keptSteps = Object.keys(state.steps).length;
  said.push(keptSteps ? `${keptSteps} step(s) kept, the others run again` : "every step runs again");
  const missing = SAFETY.filter((key) => state[key] === undefined);
  if (missing.length) {
    try {
      const { found, oldest, unknown } = await fromHistoryOnce(stateDir, host);
      for (const key of missing) if (found[key]) Object.assign(state, { [key]: found[key] });
      const from = missing.filter((key) => found[key]).map(describe(state));
      if (from.length) said.push(`from the deploy history: ${from.join(", ")}`);
      // The history is bounded: a suspension or pin set before its oldest record is not known, and said so.
      const lost = unknown.filter((key) => missing.includes(key));
      if (lost.length)
        said.push(
          `the deploy history ${oldest ? `back to ${oldest}` : "(empty)"} has no record of ${lost.map((k) => (k === "suspended" ? "a suspend or resume" : "a pin or unpin")).join(" nor ")}: one older is lost`,
        );
    } catch (err) {
      said.push(`the deploy history cannot say more (${(err as Error).message})`);
    }
  }
  const fromFile = SAFETY.filter((key) => kept[key] !== undefined).map(describe(state));
  if (fromFile.length) said.push(`kept from the file: ${fromFile.join(", ")}`);
  return { state, problem: `${problem} (${said.join("; ")})` };
}

const describe = (state: State) => (key: (typeof SAFETY)[number]) => {
  switch (key) {
    case "suspended":
      return `suspended since ${state.suspended?.since}`;
    case "pinned":
      return `pinned at ${state.pinned?.revision.slice(0, 12)}`;
    case "anchor":
      return `anchor ${state.anchor?.slice(0, 12)}`;
    case "lastRun":
      return `last run ${state.lastRun?.revision.slice(0, 12)}`;
  }
};

/**
 * The last pass over the history, by the file it read: while the state is unusable every /status and
 * /metrics request reads the state, and a pass may read the whole history (most hosts were never suspended).
 * An append (its size) or a rewrite (its inode) makes the next read pass again.
 */
let lastPass: { key: string; pass: Pass } | null = null;

/** What a pass found, the oldest record it read, and which marks it found no record of at all. */
interface Pass {
  found: Salvaged;
  oldest: string | null;
  unknown: ("suspended" | "pinned")[];
}

async function fromHistoryOnce(stateDir: string, host: string): Promise<Pass> {
  let key: string | null = null;
  try {
    const st = statSync(path.join(stateDir, HISTORY_FILE), { bigint: true });
    key = JSON.stringify([stateDir, host, `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`]);
  } catch {
    // Nothing to remember it by: the pass says why (no history, or one it cannot read).
  }
  if (key !== null && lastPass?.key === key) return structuredClone(lastPass.pass);
  const pass = await fromHistory(stateDir, host);
  if (key !== null) lastPass = { key, pass: structuredClone(pass) };
  return pass;
}

/** How long a pin recovered from the history is meant to last from its recovery (it still alerts after). */
const RECOVERED_PIN_MS = 24 * 3_600_000;

async function fromHistory(stateDir: string, host: string): Promise<Pass> {
  // A run that ended in "error" wrote its pin or unpin only when its record says so (`pin`): an older
  // agent's record does not, and its error is taken as before the write (refused, unverified, locked).
  const took = (r: HistoryRecord) => r.event === "run" && r.result !== "error";
  const kinds = {
    pause: (r: HistoryRecord) => r.event === "suspend" || r.event === "resume",
    pin: (r: HistoryRecord) =>
      r.event === "run" &&
      (r.trigger.kind === "pin" || r.trigger.kind === "unpin") &&
      (r.pin !== undefined || r.result !== "error"),
    // The anchor the run left, when its record says it. An older agent's record says only the revision it
    // ran: a pin's goes back, and a run under a pin (its revision the previous run's) ran the pinned one.
    verified: (r: HistoryRecord) =>
      r.event === "run" &&
      (r.anchor !== undefined ||
        (took(r) &&
          r.verified &&
          !!r.revision &&
          r.trigger.kind !== "pin" &&
          r.revision !== r.previousRevision)),
    run: (r: HistoryRecord) =>
      r.event === "run" && !!r.revision && ["succeeded", "failed", "noop"].includes(r.result),
  };
  const newest: Partial<Record<keyof typeof kinds, HistoryRecord>> = {};
  let oldest: string | null = null;
  // One pass, newest first (this may answer /status): the first record of each kind is the one that counts,
  // and the pass ends once every kind is found (the one record "kept" is the one that completed them).
  await readHistory(stateDir, {
    limit: 1,
    where: (r) => {
      oldest = r.at;
      if (r.host !== host) return false;
      for (const [kind, is] of Object.entries(kinds)) {
        const k = kind as keyof typeof kinds;
        if (!newest[k] && is(r)) newest[k] = r;
      }
      return Object.keys(newest).length === Object.keys(kinds).length;
    },
  });
  const out: Salvaged = {};
  const { pause, pin, verified, run } = newest;
  if (pause?.event === "suspend") {
    out.suspended = { reason: pause.reason ?? "recovered from the deploy history", since: pause.at };
  }
  if (pin?.trigger.kind === "pin" && pin.revision) {
    out.pinned = {
      revision: pin.revision,
      reason: "recovered from the deploy history (the state file was unusable)",
      since: pin.at,
      until: new Date(Date.now() + RECOVERED_PIN_MS).toISOString(),
      by: pin.trigger.user,
    };
  }
  const anchor = verified?.anchor ?? verified?.revision;
  if (anchor) out.anchor = anchor;
  if (run?.revision) {
    out.lastRun = {
      revision: run.revision,
      result: run.result as RunSummary["result"],
      at: run.at,
      durationMs: run.durationMs,
    };
  }
  const unknown = [...(pause ? [] : ["suspended" as const]), ...(pin ? [] : ["pinned" as const])];
  return { found: out, oldest, unknown };
}

/** A state directory that cannot be written (full disk, a directory where the file should be). */
export function stateWriteError(file: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  return new AgentError("STATE_WRITE_FAILED", `cannot write ${file}: ${code || (err as Error).message}`, {
    hint:
      code === "ENOSPC"
        ? "the disk is full: free space, then the next run retries"
        : `check ${path.dirname(file)} (a directory where a file belongs, permissions)`,
    cause: err,
  });
}

/**
 * `durable: false` for the intent written before a step: a killed agent must find it, and the page cache
 * keeps it for that; after a power loss the services start again anyway and read what the step wrote.
 */
export async function writeState(stateDir: string, state: State, options = { durable: true }): Promise<void> {
  const file = path.join(stateDir, STATE_FILE);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, redact(`${JSON.stringify(state, null, 2)}\n`), {
      mode: 0o600,
      durable: options.durable,
    });
  } catch (err) {
    throw stateWriteError(file, err);
  }
}

/** Records a finished step: the applied revision moves only on success. */
export function recordResult(state: State, step: string, result: StepResult): void {
  const prev = state.steps[step] ?? { history: [] };
  state.steps[step] = {
    ...prev,
    lastAttemptedRevision: result.revision,
    lastAppliedRevision: result.outcome === "succeeded" ? result.revision : prev.lastAppliedRevision,
    lastResult: result,
    history: [result, ...prev.history].slice(0, HISTORY_LENGTH),
  };
}

/** Records the intent to run a step, before its first effect. */
export function recordAttempt(state: State, step: string, revision: string): void {
  const prev = state.steps[step] ?? { history: [] };
  state.steps[step] = { ...prev, lastAttemptedRevision: revision, lastAttemptedAt: new Date().toISOString() };
}

/**
 * Whether the step's last attempt may have left work half done: it was cut off before its result was
 * recorded (kill, power loss), or it failed. Its retry then completes the follow-up actions (reload,
 * daemon-reload, restart, flag) even when the files are already equal.
 */
export function unfinished(state: State, step: string): boolean {
  const s = state.steps[step];
  if (s?.lastResult?.outcome === "failed") return true;
  if (!s?.lastAttemptedAt) return false;
  return !s.lastResult || s.lastResult.at < s.lastAttemptedAt;
}

/** A step none of whose files changed is as current as the new revision; its history is not touched. */
export function recordUpToDate(state: State, step: string, revision: string): void {
  const prev = state.steps[step];
  if (prev) state.steps[step] = { ...prev, lastAppliedRevision: revision };
}

/**
 * Steps the state knows that the manifest no longer has (removed or renamed): their state is kept, in case
 * the step comes back, and reported instead of silently dropped.
 */
export function orphanedSteps(steps: readonly { name: string }[], state: State) {
  const names = new Set(steps.map((s) => s.name));
  return Object.entries(state.steps)
    .filter(([name]) => !names.has(name))
    .map(([name, s]) => ({
      name,
      lastAppliedRevision: s.lastAppliedRevision ?? null,
      lastResult: s.lastResult ?? null,
    }));
}

/** Per step of the manifest, what the state says (null where it says nothing): for `status` and `/status`. */
export function stepStatuses(steps: readonly { name: string; kind: string }[], state: State) {
  return steps.map((step) => {
    const s = state.steps[step.name];
    return {
      name: step.name,
      kind: step.kind,
      lastAppliedRevision: s?.lastAppliedRevision ?? null,
      lastAttemptedRevision: s?.lastAttemptedRevision ?? null,
      lastResult: s?.lastResult ?? null,
    };
  });
}
