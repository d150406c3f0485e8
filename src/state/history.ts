import { mkdirSync } from "node:fs";
import { open } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { redact } from "../core/redact.js";
import { writeFileAtomic } from "../host/atomic-write.js";

/**
 * The host's deploy history: one JSON line per run and per operator command, appended to `history.jsonl`
 * in the state directory (0600, in a 0700 directory) with one write each. A writer killed mid-line leaves
 * a torn last line; the next append starts on a new line, and the reader skips (and counts) every line that
 * is not a record. Bounded by count and age: an append under the deploy lock rewrites the file atomically
 * when it holds more than `maxRecords` or its oldest record is older than `maxAgeDays`. Every text passes
 * the redaction point before it is written.
 */

export const HISTORY_FILE = "history.jsonl";
/** A record is kept below this (messages shortened, then steps left out); a longer line read is skipped. */
export const MAX_RECORD_BYTES = 8 * 1024;
/** The reader reads at most the newest this many bytes, whatever the file's size (a corrupted or hostile file). */
export const MAX_READ_BYTES = 8 * 1024 * 1024;
/** Error messages are cut to this many characters (after redaction, so no part of a secret survives). */
const MESSAGE_CHARS = 500;
/** Names (users, delivery ids, steps) are cut to this many characters. */
const NAME_CHARS = 128;

export interface HistoryBounds {
  maxRecords: number;
  maxAgeDays: number;
}

export const historyBoundsSchema = z
  .strictObject({
    /** Records kept; older ones are dropped when the file is rewritten. */
    maxRecords: z.number().int().min(10).max(10_000).default(1000),
    /** Records older than this are dropped when the file is rewritten. */
    maxAgeDays: z.number().int().min(1).max(3650).default(90),
  })
  .prefault({});

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
});
export type HistoryRecord = z.infer<typeof recordSchema>;

const file = (stateDir: string) => path.join(stateDir, HISTORY_FILE);
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

function encode(record: HistoryRecord): string {
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

function parseLine(line: Buffer): HistoryRecord | null {
  if (line.length >= MAX_RECORD_BYTES) return null;
  try {
    const parsed = recordSchema.safeParse(JSON.parse(line.toString("utf8")));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export interface HistoryQuery {
  /** At most this many records (newest first); default 20. */
  limit?: number | undefined;
  /** Only runs in which this step ran. */
  step?: string | undefined;
  /** Only records this says yes to. */
  where?: ((r: HistoryRecord) => boolean) | undefined;
}

export interface HistoryRead {
  file: string;
  /** Newest first. */
  records: HistoryRecord[];
  /** Lines met that are not records (a torn last line, corruption): skipped, never fatal. */
  skipped: number;
  /** The file is larger than MAX_READ_BYTES: older lines were not read. */
  truncated: boolean;
}

/** The newest `max` bytes of the file, or null when there is none. */
async function tail(
  historyFile: string,
  max = MAX_READ_BYTES,
): Promise<{ bytes: Buffer; truncated: boolean } | null> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(historyFile, "r");
    const { size } = await handle.stat();
    const length = Math.min(size, max);
    const bytes = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await handle.read(bytes, got, length - got, size - length + got);
      if (!bytesRead) break;
      got += bytesRead;
    }
    return { bytes: bytes.subarray(0, got), truncated: size > length };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    throw new AgentError(
      "HISTORY_UNREADABLE",
      `cannot read ${historyFile}: ${code ?? (err as Error).message}`,
      {
        cause: err,
      },
    );
  } finally {
    await handle?.close();
  }
}

/** The document `history --json` prints and `/history` answers. */
export function historyDocument(host: string, read: HistoryRead) {
  return {
    schema: "deploy-agent/history@1",
    host,
    skipped: read.skipped,
    truncated: read.truncated,
    records: read.records,
  };
}

/** Records newest first, as the query says; invalid lines skipped and counted. Memory: MAX_READ_BYTES at most. */
export async function readHistory(stateDir: string, query: HistoryQuery = {}): Promise<HistoryRead> {
  return scan(file(stateDir), await tail(file(stateDir)), query);
}

function scan(
  historyFile: string,
  read: { bytes: Buffer; truncated: boolean } | null,
  query: HistoryQuery,
): HistoryRead {
  const limit = query.limit ?? 20;
  const out: HistoryRead = { file: historyFile, records: [], skipped: 0, truncated: !!read?.truncated };
  if (!read) return out;
  const { bytes } = read;
  // A cut at the start of what was read is the middle of a line: not a record, not counted as invalid.
  const cutAt = bytes.indexOf(0x0a);
  const first = !read.truncated ? 0 : cutAt === -1 ? bytes.length : cutAt + 1;
  let end = bytes.length;
  while (end > first && out.records.length < limit) {
    const nl = bytes.lastIndexOf(0x0a, end - 1);
    const start = nl < first ? first : nl + 1;
    const line = bytes.subarray(start, end);
    end = start > first ? start - 1 : first;
    if (!line.length) continue;
    const record = parseLine(line);
    if (!record) {
      out.skipped++;
      continue;
    }
    if (query.step !== undefined && !record.steps.some((s) => s.name === query.step)) continue;
    if (query.where && !query.where(record)) continue;
    out.records.push(record);
  }
  return out;
}

/**
 * The newest run that left every step at `revision` (the host ran it whole and successfully), or null.
 * Only what the history still holds: records beyond its bounds are gone.
 */
export async function findApplied(stateDir: string, revision: string): Promise<HistoryRecord | null> {
  const { records } = await readHistory(stateDir, {
    limit: 1,
    where: (r) => r.event === "run" && r.applied && r.revision === revision,
  });
  return records[0] ?? null;
}

/**
 * A run that changes nothing and says nothing new (a poll or retry finding the same revision, or repeating
 * the newest record's outcome) is not recorded: 288 polls a day would push every change out of the history.
 */
export function routine(record: HistoryRecord, newest: HistoryRecord | null): boolean {
  if (record.event !== "run" || (record.trigger.kind !== "poll" && record.trigger.kind !== "retry"))
    return false;
  if (record.result === "noop" && record.revision === record.previousRevision) return true;
  return (
    !!newest &&
    newest.event === "run" &&
    (newest.trigger.kind === "poll" || newest.trigger.kind === "retry") &&
    newest.revision === record.revision &&
    newest.result === record.result &&
    newest.error?.code === record.error?.code
  );
}

export interface AppendOptions {
  bounds: HistoryBounds;
  /** The caller holds the deploy lock: the file may be rewritten to its bounds. */
  locked: boolean;
  now?: number;
}

/**
 * Appends one record (one write; a new line first if a killed writer left a torn one) and, under the lock,
 * rewrites the file to its bounds. Returns false when the record was routine and not written. A record
 * appended without the lock (a run refused LOCKED) may be lost to a rewrite by the lock's holder.
 */
export async function appendHistory(
  stateDir: string,
  record: HistoryRecord,
  options: AppendOptions,
): Promise<boolean> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const historyFile = file(stateDir);
  // The newest record is in the last two record lengths, unless a torn or hostile line hides it.
  const newest =
    scan(historyFile, await tail(historyFile, 2 * MAX_RECORD_BYTES), { limit: 1 }).records[0] ?? null;
  if (routine(record, newest)) return false;
  const line = encode(record);
  const handle = await open(historyFile, "a+", 0o600);
  try {
    const { size, mode } = await handle.stat();
    // A file made by someone else's umask, or copied in: readable by root only, whatever it was.
    if ((mode & 0o777) !== 0o600) await handle.chmod(0o600);
    const last = Buffer.alloc(1);
    if (size) await handle.read(last, 0, 1, size - 1);
    const data = Buffer.from(size && last[0] !== 0x0a ? `\n${line}` : line);
    let written = 0;
    while (written < data.length) {
      const { bytesWritten } = await handle.write(data, written, data.length - written);
      written += bytesWritten;
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
  if (options.locked) await compact(stateDir, options.bounds, options.now ?? Date.now());
  return true;
}

/** Rewrites the file atomically to its bounds when it is past them; invalid lines are dropped with it. */
async function compact(stateDir: string, bounds: HistoryBounds, now: number): Promise<void> {
  const read = await tail(file(stateDir));
  if (!read) return;
  const cutoff = now - bounds.maxAgeDays * 86_400_000;
  let lines = 0;
  for (let i = read.bytes.indexOf(0x0a); i !== -1; i = read.bytes.indexOf(0x0a, i + 1)) lines++;
  const oldest = readOldest(read.bytes);
  if (!read.truncated && lines <= bounds.maxRecords && (!oldest || Date.parse(oldest.at) >= cutoff)) return;
  const { records } = scan(file(stateDir), read, {
    limit: bounds.maxRecords,
    where: (r) => Date.parse(r.at) >= cutoff,
  });
  const text = records
    .reverse()
    .map((r) => encode(r))
    .join("");
  await writeFileAtomic(file(stateDir), text, { mode: 0o600 });
}

/** The first valid record of the bytes (the oldest), if any in its first few lines. */
function readOldest(bytes: Buffer): HistoryRecord | null {
  let start = 0;
  for (let n = 0; n < 10 && start < bytes.length; n++) {
    const nl = bytes.indexOf(0x0a, start);
    const end = nl === -1 ? bytes.length : nl;
    const record = parseLine(bytes.subarray(start, end));
    if (record) return record;
    start = end + 1;
  }
  return null;
}
