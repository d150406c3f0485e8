import { statSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { problemText, readBoundedSync } from "../host/bounded-read.js";
import { HISTORY_FILE, readHistory } from "./history.js";
import type { HistoryRecord } from "./history-record.js";
import {
  emptyState,
  type RunSummary,
  STATE_FILE,
  type State,
  stateSchema,
  stepStateSchema,
} from "./state.js";

/**
 * Reading the host's state: what `state.json` says, and when it cannot be used whole, what it still says
 * field by field, completed from the deploy history, so that damage, a hand edit or a downgrade never lifts a
 * suspension, drops a pin or forgets the anchor.
 */

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
    // Synchronously: a small file read once per run, on a push's path (see writeFileAtomic). Without
    // blocking: a FIFO in its place would hold /status, /metrics and every run until someone writes to it.
    const read = readBoundedSync(file, {
      maxBytes: MAX_STATE_BYTES,
      follow: true,
      fail: (p) => new StateUnread(`${file} ${problemText(p, MAX_STATE_BYTES)}`),
    });
    if (!read) return { state: emptyState(host) };
    text = read.data.toString("utf8");
  } catch (err) {
    // The read itself failing (EIO…) is said with the file's name too.
    const problem =
      err instanceof StateUnread
        ? err.message
        : `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
    return recovered(stateDir, host, {}, problem);
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

/** Far more than any state the agent writes (steps × 11 results): a larger file is refused, never read. */
export const MAX_STATE_BYTES = 64 * 1024 * 1024;

/** The state file refused by its checks (its message says why); any other error is the read failing. */
class StateUnread extends Error {}

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
