import { randomBytes } from "node:crypto";
import { closeSync, fchmodSync, openSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { type FileHandle, lstat, open, readdir, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";

/**
 * Writes a file so that readers see the old content or the new, never a mix: a temp file beside the target
 * (same filesystem, so the rename is atomic), fsync, mode, an optional preparation of the temp file (owner,
 * validation), rename, fsync of the directory. Temp files a killed writer left for the same target are
 * removed first: callers write under the deploy lock, so none of them is in use. `durable: false` leaves
 * out both fsyncs, for records that only a crash of this process (not of the machine) must find: the write
 * stays atomic, and the page cache survives a killed process. Such a write (small records: the lock holder,
 * the intent before a step, both on a push's path) is made with synchronous calls: five syscalls on the
 * page cache take tens of microseconds, five thread-pool round trips about a millisecond.
 *
 * A target's directory may be writable by a service's user, who can swap the temp file's name for a link
 * at any moment: mode and owner are set on the open file (a chmod or chown by name would follow the link to
 * any file of root's), the preparation gets the open file and never its name (a validate command run on the
 * name would read whatever the name leads to by then), and just before the rename the name must still be
 * the file written, or the write fails with TARGET_UNSAFE.
 */
const swept = new Set<string>();

export async function writeFileAtomic(
  file: string,
  data: string | Buffer,
  options: {
    mode: number;
    /** Owner, validation: on the open temp file (its name is not given: another user may swap it). */
    prepare?: (handle: FileHandle) => Promise<void>;
    durable?: boolean;
  },
): Promise<void> {
  const durable = options.durable ?? true;
  const dir = path.dirname(file);
  const prefix = `.${path.basename(file)}.deploy-agent-`;
  // Once per target and process: a failed write of this process removes its own temp file.
  if (!swept.has(file)) {
    for (const name of await readdir(dir).catch(() => [])) {
      if (name.startsWith(prefix)) await unlink(path.join(dir, name)).catch(() => {});
    }
    swept.add(file);
  }
  const tmp = path.join(dir, `${prefix}${randomBytes(6).toString("hex")}`);
  if (!durable && !options.prepare) return writeNow(file, tmp, data, options.mode);
  try {
    const handle = await open(tmp, "wx", 0o600);
    try {
      await handle.writeFile(data);
      if (durable) await handle.sync();
      await handle.chmod(options.mode);
      await options.prepare?.(handle);
      await stillNamed(tmp, handle, file);
      await rename(tmp, file).catch((err: NodeJS.ErrnoException) => {
        // Named ours a moment ago, gone now: another user of the directory moved it away.
        throw err.code === "ENOENT" ? replaced(file) : err;
      });
    } finally {
      await handle.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  if (!durable) return;
  const dirHandle = await open(dir, "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** The temp file's name still leads to the file this process wrote, not to a link or another file. */
async function stillNamed(tmp: string, handle: FileHandle, file: string): Promise<void> {
  const [named, written] = await Promise.all([lstat(tmp).catch(() => null), handle.stat()]);
  if (named?.isFile() && named.dev === written.dev && named.ino === written.ino) return;
  throw replaced(file);
}

const replaced = (file: string) =>
  new AgentError(
    "TARGET_UNSAFE",
    `the temporary file for ${file} was replaced while it was written (by another user of its directory?)`,
    { hint: "nothing was replaced; find who writes in that directory, and run the step again" },
  );

function writeNow(file: string, tmp: string, data: string | Buffer, mode: number): void {
  try {
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeFileSync(fd, data);
      fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // never created, or already renamed
    }
    throw err;
  }
}
