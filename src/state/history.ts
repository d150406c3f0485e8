import { mkdirSync } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { AgentError } from "../core/errors.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { encode, type HistoryRecord, MAX_RECORD_BYTES, parseLine } from "./history-record.js";
import { linesFromEnd } from "./lines-from-end.js";

/**
 * The host's deploy history: one JSON line per run and per operator command, appended to `history.jsonl`
 * in the state directory (0600, in a 0700 directory) with one write each. A writer killed mid-line leaves
 * a torn last line; the next append starts on a new line, and the reader skips (and counts) every line that
 * is not a record. Bounded by count and age: an append under the deploy lock rewrites the file atomically
 * when it holds more than `maxRecords` or its oldest record is older than `maxAgeDays`. Every text passes
 * the redaction point before it is written.
 */

export const HISTORY_FILE = "history.jsonl";

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

const file = (stateDir: string) => path.join(stateDir, HISTORY_FILE);

export interface HistoryQuery {
  /** At most this many records (newest first); default 20. */
  limit?: number | undefined;
  /** Only runs in which this step ran. */
  step?: string | undefined;
  /** Only records this says yes to. */
  where?: ((r: HistoryRecord) => boolean) | undefined;
  /** Look at most at the newest this many bytes (MAX_SCAN_BYTES); for tests of the bound. */
  scanBytes?: number | undefined;
}

export interface HistoryRead {
  file: string;
  /** Newest first. */
  records: HistoryRecord[];
  /** Lines met that are not records (a torn last line, corruption): skipped, never fatal. */
  skipped: number;
  /** Fewer records than asked for, and the file goes on past MAX_SCAN_BYTES: older lines were not read. */
  truncated: boolean;
}

/**
 * The reader looks at most at the newest this many bytes of the file: more than the largest file within
 * its bounds (10,000 records under MAX_RECORD_BYTES each: 80 MiB), so only a damaged file is cut. It bounds
 * time, not memory: memory is 64 KiB and one line (linesFromEnd), whatever the file holds.
 */
export const MAX_SCAN_BYTES = 128 * 1024 * 1024;
/** Where an append looks for the newest record, to tell a routine run: a torn line and the record. */
const NEWEST_SCAN_BYTES = 4 * MAX_RECORD_BYTES;

/** The history file's lines from its end (see linesFromEnd); what cannot be read is HISTORY_UNREADABLE. */
async function* historyLines(historyFile: string, scanBytes: number, cut: { value: boolean }) {
  try {
    yield* linesFromEnd(historyFile, { scanBytes, maxLineBytes: MAX_RECORD_BYTES, cut });
  } catch (err) {
    throw unreadable(historyFile, err);
  }
}

function unreadable(historyFile: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code;
  return new AgentError(
    "HISTORY_UNREADABLE",
    `cannot read ${historyFile}: ${code ?? (err as Error).message}`,
    {
      cause: err,
    },
  );
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

/**
 * Records newest first, as the query says, read from the file's end until the query has its records; lines
 * that are not records (torn, too long, not UTF-8, not JSON) are skipped and counted. Memory: one chunk and
 * one line, and the records returned.
 */
export async function readHistory(stateDir: string, query: HistoryQuery = {}): Promise<HistoryRead> {
  const limit = query.limit ?? 20;
  const out: HistoryRead = { file: file(stateDir), records: [], skipped: 0, truncated: false };
  const cut = { value: false };
  for await (const { bytes } of historyLines(out.file, query.scanBytes ?? MAX_SCAN_BYTES, cut)) {
    if (out.records.length >= limit) break;
    const record = bytes && parseLine(bytes);
    if (!record) {
      out.skipped++;
      continue;
    }
    if (query.step !== undefined && !record.steps.some((s) => s.name === query.step)) continue;
    if (query.where && !query.where(record)) continue;
    out.records.push(record);
  }
  out.truncated = cut.value && out.records.length < limit;
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
  /** Told when the file was rewritten to its bounds: what was kept and what was dropped. */
  onCompact?: ((compaction: Compaction) => void) | undefined;
}

/** What a rewrite to the bounds did. Nothing else is dropped: every record kept is copied byte for byte. */
export interface Compaction {
  /** Records kept: the newest `maxRecords` no older than `maxAgeDays`. */
  kept: number;
  /** Records older than `maxAgeDays`, dropped. */
  old: number;
  /** The file held more than `maxRecords` lines: the rest, older than the records kept, dropped. */
  pastMaxRecords: boolean;
  /** Lines that were not records (torn, too long, not UTF-8, not JSON), dropped. */
  invalid: number;
}

/** One line saying what a rewrite dropped, for the log and the operator. */
export function compactionText(c: Compaction): string {
  const dropped = [
    c.invalid ? `${c.invalid} line(s) that were not records (torn, too long, corrupt)` : "",
    c.old ? `${c.old} record(s) older than maxAgeDays` : "",
    c.pastMaxRecords ? "every older line past maxRecords" : "",
  ].filter(Boolean);
  return `deploy history rewritten to its bounds: kept the newest ${c.kept} record(s), dropped ${dropped.join(", ")}`;
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
  // The newest record, past a torn line a killed writer left after it; looked for in a few record lengths
  // only (every poll asks): behind more junk it is not found, and the record is written, not lost.
  const [newest = null] = (await readHistory(stateDir, { limit: 1, scanBytes: NEWEST_SCAN_BYTES })).records;
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
  if (options.locked) {
    const compaction = await compact(stateDir, options.bounds, options.now ?? Date.now());
    if (compaction) options.onCompact?.(compaction);
  }
  return true;
}

/**
 * Rewrites the file atomically to its bounds when it is past them: more than `maxRecords` lines, a record
 * older than `maxAgeDays`, or a line too long to be a record. Read from the end until `maxRecords` records
 * are kept (or the start); the records kept are copied as they were (a newer agent's fields stay), every
 * other line is dropped and counted. A torn line alone leaves the file as it is. Memory: the records kept
 * (`maxRecords` lines under MAX_RECORD_BYTES each at most), whatever the file's size. Null: not rewritten.
 */
async function compact(stateDir: string, bounds: HistoryBounds, now: number): Promise<Compaction | null> {
  const cutoff = now - bounds.maxAgeDays * 86_400_000;
  const kept: Buffer[] = [];
  const done: Compaction = { kept: 0, old: 0, pastMaxRecords: false, invalid: 0 };
  let long = 0;
  let lines = 0;
  for await (const { bytes } of historyLines(file(stateDir), Number.POSITIVE_INFINITY, { value: false })) {
    if (kept.length === bounds.maxRecords) {
      done.pastMaxRecords = true;
      break;
    }
    lines++;
    const record = bytes && parseLine(bytes);
    if (!record) {
      done.invalid++;
      if (!bytes) long++;
    } else if (!(Date.parse(record.at) >= cutoff)) done.old++;
    else kept.push(Buffer.from(bytes));
  }
  if (!done.pastMaxRecords && !done.old && !long && lines <= bounds.maxRecords) return null;
  done.kept = kept.length;
  const text = Buffer.concat(kept.reverse().flatMap((line) => [line, NEWLINE]));
  await writeFileAtomic(file(stateDir), text, { mode: 0o600 });
  return done;
}

const NEWLINE = Buffer.from("\n");
