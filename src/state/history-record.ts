import { userInfo } from "node:os";
import { z } from "zod";
import { redact } from "../core/redact.js";

/**
 * One record of the deploy history (see history.ts): its schema, read leniently so that a newer agent's
 * records still read, and its encoding, which passes every text through the redaction point and keeps a
 * line below MAX_RECORD_BYTES.
 */

/** A record is kept below this (messages shortened, then steps left out); a longer line read is skipped. */
export const MAX_RECORD_BYTES = 8 * 1024;
/** Error messages are cut to this many characters (after redaction, so no part of a secret survives). */
const MESSAGE_CHARS = 500;
/** Names (users, delivery ids, steps) are cut to this many characters. */
const NAME_CHARS = 128;

const name = z.string().max(NAME_CHARS);

/** What started a run or command. `user`: the operator (SUDO_USER, else the login name). */
const triggerSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("push"), delivery: name }),
  z.object({ kind: z.literal("poll") }),
  z.object({ kind: z.literal("start-up") }),
  z.object({ kind: z.literal("self-heal"), steps: z.array(name) }),
  z.object({ kind: z.literal("retry"), after: name }),
  z.object({ kind: z.literal("manual"), user: name }),
  z.object({ kind: z.literal("resume"), user: name }),
  z.object({ kind: z.literal("pin"), user: name }),
  z.object({ kind: z.literal("unpin"), user: name }),
]);
export type Trigger = z.infer<typeof triggerSchema>;

// Read leniently (z.object, not strict): a record written by a newer agent with more fields still reads.
const recordSchema = z.object({
  v: z.literal(1),
  /** When the run or command ended. */
  at: z.iso.datetime(),
  host: z.string(),
  event: z.enum(["run", "suspend", "resume"]),
  trigger: triggerSchema,
  /** The revision run (null: the run failed before it knew one); for commands, the revision live then. */
  revision: z.string().nullable(),
  /** The revision the host last ran before this one. */
  previousRevision: z.string().nullable(),
  result: z.enum(["succeeded", "failed", "noop", "suspended", "error", "resumed"]),
  /** repo.verify was on and the revision passed it. */
  verified: z.boolean(),
  /** Every step of the manifest had applied `revision` when the run ended. */
  applied: z.boolean(),
  /** Why it failed: the first failing step, or the error that ended the run before its steps. */
  error: z.object({ code: z.string(), message: z.string(), step: name.optional() }).nullable(),
  /** The steps that ran. */
  steps: z.array(
    z.object({ name, outcome: z.string(), code: z.string().optional(), durationMs: z.number() }),
  ),
  /** Steps left out to keep the record below MAX_RECORD_BYTES. */
  stepsOmitted: z.number().optional(),
  durationMs: z.number(),
  /** suspend: the reason given. */
  reason: z.string().optional(),
  /**
   * A run: the newest revision of the branch verified here as it left the host (a pinned run verifies the
   * tip and runs the pin, so `revision` is not it). Absent from records of older agents.
   */
  anchor: z.string().optional(),
  /** A pin or unpin run: its pin was written to the state ("set") or cleared, even if the run then failed. */
  pin: z.enum(["set", "cleared"]).optional(),
});
export type HistoryRecord = z.infer<typeof recordSchema>;

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
/** Redacted first, then cut: a secret straddling the cut is gone before the cut could keep half of it. */
const clean = (text: string, max: number) => cut(redact(text), max);

/** The operator running a command: sudo's caller, else the login name (a shell of root says root). */
export function operator(env: NodeJS.ProcessEnv = process.env): string {
  const sudo = env.SUDO_USER?.replace(/[^\w.@-]/g, "");
  if (sudo) return cut(sudo, NAME_CHARS);
  try {
    return cut(userInfo().username, NAME_CHARS);
  } catch {
    return `uid ${process.getuid?.() ?? "unknown"}`;
  }
}

export function encode(record: HistoryRecord): string {
  const cleaned: HistoryRecord = {
    ...record,
    error: record.error && { ...record.error, message: clean(record.error.message, MESSAGE_CHARS) },
    ...(record.reason !== undefined ? { reason: clean(record.reason, MESSAGE_CHARS) } : {}),
  };
  let line = redact(JSON.stringify(cleaned));
  if (Buffer.byteLength(line) >= MAX_RECORD_BYTES) {
    line = redact(JSON.stringify({ ...cleaned, steps: [], stepsOmitted: record.steps.length }));
  }
  // Still too long only with absurd names: the record is cut to what it must say.
  if (Buffer.byteLength(line) >= MAX_RECORD_BYTES) {
    line = JSON.stringify({ ...cleaned, steps: [], stepsOmitted: record.steps.length, error: null });
  }
  return `${line}\n`;
}

/** A record as another agent sent it (`fleet history`), or null when it is not one. */
export function parseRecord(json: unknown): HistoryRecord | null {
  const parsed = recordSchema.safeParse(json);
  return parsed.success ? parsed.data : null;
}

/** A record, or null for a line that is not one: too long, not UTF-8 (corruption), not JSON, not a record. */
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function parseLine(line: Buffer): HistoryRecord | null {
  if (line.length >= MAX_RECORD_BYTES) return null;
  try {
    const parsed = recordSchema.safeParse(JSON.parse(utf8.decode(line)));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
