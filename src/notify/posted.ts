import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { z } from "zod";
import { writeFileAtomic } from "../host/atomic-write.js";

/**
 * The commit statuses each target has, per revision: the notifier's memory of what it posted, so that the
 * same outcome is posted once. Kept in the state directory as well (commit-statuses.json): each CLI command
 * is a new process, and a daemon restarts, and both must know what Gitea already has as the running daemon
 * does. An entry is remembered when its status is queued (two runs in a row post it once), forgotten when
 * its send failed or it was dropped (the next run sends it again), and written to the file only once Gitea
 * took it. The file is read again before each write and whenever another process changed it, so what
 * another process recorded stays; two writing at the same instant may lose one entry, which costs one
 * status posted again, never a status missing. It holds target names, revisions and states: no secret.
 */

export const POSTED_FILE = "commit-statuses.json";

/** 50 revisions for each of 4 targets. */
const POSTED_MAX = 200;
/** Far above what POSTED_MAX entries take: a larger file is not ours, and is left unread. */
const FILE_MAX_BYTES = 256 * 1024;

const fileSchema = z.strictObject({
  schema: z.literal("deploy-agent/commit-statuses@1"),
  /** [target name, revision, key], oldest first. */
  posted: z.array(z.tuple([z.string(), z.string(), z.string()])).max(POSTED_MAX),
});

/** The file's entries as they are now; none when it is missing or not ours. */
function currentEntries(file: string): [string, string, string][] {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st?.isFile() || st.size > FILE_MAX_BYTES) return [];
  try {
    const parsed = fileSchema.safeParse(JSON.parse(readFileSync(file, "utf8")));
    return parsed.success ? parsed.data.posted : [];
  } catch {
    return [];
  }
}

export interface PostedStatuses {
  /** What the target was last posted for the revision (queued or taken), if anything. */
  get(target: string, revision: string): string | undefined;
  /** Queued now. */
  remember(target: string, revision: string, key: string): void;
  /** Its send failed, or it was dropped from the queue: the next run sends it again. */
  forget(target: string, revision: string, key: string): void;
  /** Gitea took it: recorded for the next process. Never throws. */
  taken(target: string, revision: string, key: string): Promise<void>;
}

const at = (target: string, revision: string) => `${target} ${revision}`;

function bound(map: Map<string, string>) {
  while (map.size > POSTED_MAX) map.delete(map.keys().next().value as string);
}

/** `dir`: the state directory (none: memory only, as in tests of the notifier alone). */
export function postedStatuses(dir: string | undefined, log: Logger): PostedStatuses {
  const file = dir ? path.join(dir, POSTED_FILE) : null;
  const memory = new Map<string, string>();
  /** The file as last read (mtime and size): read again only once it changed. */
  let seen = "";

  /** The file's entries; none when it is missing, unreadable or not ours (said once per change). */
  function readFile(): [string, string, string][] {
    if (!file) return [];
    try {
      const st = statSync(file, { throwIfNoEntry: false });
      const mark = st ? `${st.mtimeMs} ${st.size}` : "";
      if (!st || mark === seen) return [];
      seen = mark;
      if (!st.isFile() || st.size > FILE_MAX_BYTES) throw new Error("not a file of at most 256 KiB");
      return fileSchema.parse(JSON.parse(readFileSync(file, "utf8"))).posted;
    } catch (err) {
      log.warn(
        { file, problem: (err as Error).message },
        "commit statuses posted before not read: some may be posted again",
      );
      return [];
    }
  }

  /** What another process recorded since: Gitea has it. */
  function refresh() {
    for (const [target, revision, key] of readFile()) {
      memory.delete(at(target, revision));
      memory.set(at(target, revision), key);
    }
    bound(memory);
  }
  refresh();

  return {
    get(target, revision) {
      refresh();
      return memory.get(at(target, revision));
    },
    remember(target, revision, key) {
      memory.delete(at(target, revision));
      memory.set(at(target, revision), key);
      bound(memory);
    },
    forget(target, revision, key) {
      if (memory.get(at(target, revision)) === key) memory.delete(at(target, revision));
    },
    async taken(target, revision, key) {
      if (!file) return;
      try {
        // What is there now, if it reads as ours: a damaged record is replaced, not kept in the way.
        const entries = new Map<string, [string, string, string]>();
        for (const e of currentEntries(file)) entries.set(at(e[0], e[1]), e);
        entries.delete(at(target, revision));
        entries.set(at(target, revision), [target, revision, key]);
        const posted = [...entries.values()].slice(-POSTED_MAX);
        const doc: z.infer<typeof fileSchema> = { schema: "deploy-agent/commit-statuses@1", posted };
        await writeFileAtomic(file, `${JSON.stringify(doc)}\n`, { mode: 0o600, durable: false });
        // Our own write is no news: read back, it would undo a newer state queued since.
        const now = statSync(file, { throwIfNoEntry: false });
        if (now) seen = `${now.mtimeMs} ${now.size}`;
      } catch (err) {
        log.warn(
          { file, problem: (err as Error).message },
          "commit status posted, not recorded: the next process may post it again",
        );
      }
    },
  };
}
