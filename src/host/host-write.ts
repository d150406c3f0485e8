import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, open, rename, stat, symlink, unlink } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { writeFileAtomic } from "./atomic-write.js";
import type { CommandRunner } from "./command.js";
import type { Ids } from "./owner.js";

/**
 * The writes host-fs.ts performs once it has decided to: a file replaced atomically (owner and validation on
 * the open temp file), a name pointed at a link with one rename, and how their failures read. Kept apart from
 * host-fs.ts, which records every effect and leaves these out in a dry run: nothing here records or knows
 * of dry runs, and nothing here takes a path under `--root` (callers pass the resolved one).
 */

/**
 * What `{file}` in a validate command becomes: the new file, open as the command's descriptor 3. A path no
 * other user can swap; it has no directory of its own (a path in the file relative to its directory is
 * taken under /proc/self/fd) and no extension.
 */
export const VALIDATE_PATH = "/proc/self/fd/3";

export function writeError(hostPath: string, err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  const e = err as NodeJS.ErrnoException;
  return new AgentError("TARGET_WRITE_FAILED", `cannot write ${hostPath}: ${e.code ?? e.message}`, {
    cause: err,
  });
}

/**
 * Writes `data` to `target` (the resolved `hostPath`) atomically. Refuses a missing target directory (never
 * creates one).
 */
export async function replaceFile(
  target: string,
  hostPath: string,
  data: Buffer,
  o: { mode: number; ids: Ids | undefined; validate: readonly string[] | undefined; run: CommandRunner },
): Promise<void> {
  const dir = path.dirname(target);
  // stat, not lstat: a web root may be a symlink to the live release (a job that swaps releases).
  const dirStat = await stat(dir).catch(() => null);
  if (!dirStat?.isDirectory()) {
    throw new AgentError(
      "TARGET_WRITE_FAILED",
      `cannot write ${hostPath}: directory ${path.dirname(hostPath)} does not exist`,
    );
  }
  const { ids, validate } = o;
  try {
    await writeFileAtomic(target, data, {
      mode: o.mode,
      prepare: async (handle) => {
        if (ids) await handle.chown(ids.uid, ids.gid ?? -1);
        if (validate) await validateOpen(validate, handle, o.run);
      },
    });
  } catch (err) {
    throw writeError(hostPath, err);
  }
}

/**
 * Runs a validate command on the new file through its descriptor: reopened read-only from this process's
 * own (never by the temporary file's name, which the directory's other users may swap for a link to any
 * file of root's while the command runs) and handed to the command as its descriptor 3.
 */
async function validateOpen(
  validate: readonly string[],
  handle: FileHandle,
  run: CommandRunner,
): Promise<void> {
  const copy = await open(`/proc/self/fd/${handle.fd}`, constants.O_RDONLY);
  try {
    await run(
      validate.map((a) => a.replaceAll("{file}", VALIDATE_PATH)),
      { record: false, fds: [copy.fd] },
    );
  } finally {
    await copy.close();
  }
}

/** Replaces whatever is at `at` with a symlink to `target`, atomically. */
export async function pointLink(at: string, target: string): Promise<void> {
  const link = `${at}.${randomBytes(6).toString("hex")}.tmp`;
  await symlink(target, link);
  await rename(link, at).catch(async (err: unknown) => {
    await unlink(link).catch(() => {});
    throw err;
  });
}
