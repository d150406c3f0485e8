import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import {
  cp,
  type FileHandle,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  unlink,
} from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { writeFileAtomic } from "./atomic-write.js";
import { readBounded } from "./bounded-read.js";
import type { CommandRunner } from "./command.js";
import { diffSummary } from "./diff-summary.js";
import type { EffectRecorder } from "./effects.js";
import { resolveOwner } from "./owner.js";

/**
 * The host filesystem as steps see it: every absolute path is taken under `root` (`--root`), writes are
 * atomic (temp file in the target directory, fsync, rename, fsync of the directory), and in a dry run
 * writes are recorded with a diff instead of performed.
 */

export interface FileSnapshot {
  path: string;
  data: Buffer | null;
  mode: number;
  uid: number;
  gid: number;
  /** Last modification (ms since the epoch); 0 for a file that does not exist. */
  mtimeMs?: number;
}

/** What `symlink` replaced when it was a symlink: its target, for restore. */
export interface LinkSnapshot {
  path: string;
  link: string;
}

export interface WriteOptions {
  /** Declared mode; default: keep the current file's mode, or 0644 for a new file. */
  mode?: number | undefined;
  /** Declared owner; default: keep the current file's owner. */
  owner?: string | undefined;
  /** Command run on the new file before it replaces the old one; `{file}` is replaced by VALIDATE_PATH. */
  validate?: readonly string[] | undefined;
  /** Content shown in diffs instead of the real content (for files that carry secrets). */
  display?: { before: Buffer | null; after: Buffer };
}

export interface HostFs {
  resolve(hostPath: string): string;
  read(hostPath: string): Promise<Buffer | null>;
  snapshot(hostPath: string): Promise<FileSnapshot>;
  /** Writes the file unless content, mode and owner already match; `previous` is what was there, for restore. */
  write(
    hostPath: string,
    data: Buffer,
    options?: WriteOptions,
  ): Promise<{ outcome: "changed" | "unchanged"; previous: FileSnapshot }>;
  /** Puts a snapshot back: the old content, mode and owner, the old link, or removes what did not exist. */
  restore(snapshot: FileSnapshot | LinkSnapshot): Promise<void>;
  /** The target of a symlink, or null. */
  readlink(hostPath: string): Promise<string | null>;
  /** Removes a file or a whole tree; absent is fine. */
  remove(hostPath: string): Promise<void>;
  /** Copies a directory tree to a new path (its parent is created). */
  copyTree(from: string, to: string): Promise<void>;
  /** Points `hostPath` (a symlink, or a directory first moved to `aside`) at `target` with one rename. */
  swapLink(hostPath: string, target: string, aside: string): Promise<void>;
  /**
   * Points the symlink `hostPath` at `target` with one rename. The target is taken as it is, not under the
   * root: it is outside the host's tree (the agent's own bin). `previous` is what was there, for restore.
   */
  symlink(
    hostPath: string,
    target: string,
  ): Promise<{ outcome: "changed" | "unchanged"; previous: FileSnapshot | LinkSnapshot }>;
  /** Makes a directory and its missing parents with `mode`; `created` is the first one made, null if none. */
  mkdir(hostPath: string, mode: number): Promise<{ created: string | null }>;
  /** Entries of a directory with their modification times; [] when absent. */
  list(hostPath: string): Promise<{ path: string; mtimeMs: number }[]>;
}

/**
 * What `{file}` in a validate command becomes: the new file, open as the command's descriptor 3. A path no
 * other user can swap; it has no directory of its own (a path in the file relative to its directory is
 * taken under /proc/self/fd) and no extension.
 */
export const VALIDATE_PATH = "/proc/self/fd/3";

/** Largest host file read (a target, a backup, a flag file): a larger one is refused, never buffered. */
export const MAX_HOST_FILE_BYTES = 64 * 1024 * 1024;

const unsafe = (hostPath: string, what: string) =>
  new AgentError("TARGET_UNSAFE", `${hostPath} ${what}: it is neither read nor written through`);

/**
 * A host file and its status from one descriptor (bounded-read.ts): a regular file of at most
 * MAX_HOST_FILE_BYTES, and with `follow` false never through a symbolic link at the name. Null when nothing
 * is there.
 */
function readHostFile(
  file: string,
  hostPath: string,
  follow: boolean,
): Promise<{ data: Buffer; st: Stats } | null> {
  return readBounded(file, {
    follow,
    maxBytes: MAX_HOST_FILE_BYTES,
    fail: (p) => {
      switch (p.is) {
        case "unopenable":
          return new AgentError("TARGET_WRITE_FAILED", `cannot read ${hostPath}: ${p.code}`, {
            cause: p.cause,
          });
        case "link":
          return unsafe(hostPath, "is a symbolic link");
        case "not-file":
          return unsafe(hostPath, "is not a regular file");
        case "too-large":
          return unsafe(hostPath, `is ${p.size} bytes, more than the ${MAX_HOST_FILE_BYTES} read`);
        case "changed":
          return unsafe(hostPath, "changed size while it was read");
      }
    },
  });
}

function writeError(hostPath: string, err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  const e = err as NodeJS.ErrnoException;
  return new AgentError("TARGET_WRITE_FAILED", `cannot write ${hostPath}: ${e.code ?? e.message}`, {
    cause: err,
  });
}

/** `--root`: a host path as seen under the root ("" for the real host). The one place it is applied. */
export const rooted =
  (root: string) =>
  (hostPath: string): string =>
    root ? path.join(root, hostPath) : hostPath;

export function createHostFs(opts: {
  root: string;
  dryRun: boolean;
  record: EffectRecorder;
  run: CommandRunner;
}): HostFs {
  const resolve = rooted(opts.root);

  async function read(hostPath: string): Promise<Buffer | null> {
    return (await readHostFile(resolve(hostPath), hostPath, true))?.data ?? null;
  }

  async function snapshot(hostPath: string): Promise<FileSnapshot> {
    // Never through a link at the name: a file the agent replaces is read to compare and to restore, and a
    // link planted there by whoever may write the directory would copy what it points at into the new file.
    const file = await readHostFile(resolve(hostPath), hostPath, false);
    if (!file) return { path: hostPath, data: null, mode: 0, uid: 0, gid: 0 };
    const { data, st } = file;
    return { path: hostPath, data, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs };
  }

  /** Refuses a missing target directory (never creates one), then writes atomically. */
  async function replace(
    hostPath: string,
    data: Buffer,
    mode: number,
    ids: { uid: number; gid: number | undefined } | undefined,
    validate: readonly string[] | undefined,
  ): Promise<void> {
    const target = resolve(hostPath);
    const dir = path.dirname(target);
    // stat, not lstat: a web root may be a symlink to the live release (a job that swaps releases).
    const dirStat = await stat(dir).catch(() => null);
    if (!dirStat?.isDirectory()) {
      throw new AgentError(
        "TARGET_WRITE_FAILED",
        `cannot write ${hostPath}: directory ${path.dirname(hostPath)} does not exist`,
      );
    }
    try {
      await writeFileAtomic(target, data, {
        mode,
        prepare: async (handle) => {
          if (ids) await handle.chown(ids.uid, ids.gid ?? -1);
          if (validate) await validateOpen(validate, handle);
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
  async function validateOpen(validate: readonly string[], handle: FileHandle): Promise<void> {
    const copy = await open(`/proc/self/fd/${handle.fd}`, constants.O_RDONLY);
    try {
      await opts.run(
        validate.map((a) => a.replaceAll("{file}", VALIDATE_PATH)),
        { record: false, fds: [copy.fd] },
      );
    } finally {
      await copy.close();
    }
  }

  /** Replaces whatever is at `at` with a symlink to `target`, atomically. */
  async function pointLink(at: string, target: string): Promise<void> {
    const link = `${at}.${randomBytes(6).toString("hex")}.tmp`;
    await symlink(target, link);
    await rename(link, at).catch(async (err: unknown) => {
      await unlink(link).catch(() => {});
      throw err;
    });
  }

  return {
    resolve,
    read,
    snapshot,

    async write(hostPath, data, options = {}) {
      const before = await snapshot(hostPath);
      const mode = options.mode ?? (before.data ? before.mode : 0o644);
      const ids = options.owner
        ? await resolveOwner(options.owner)
        : before.data
          ? { uid: before.uid, gid: before.gid }
          : undefined;
      const sameOwner = !ids || (ids.uid === before.uid && (ids.gid === undefined || ids.gid === before.gid));
      if (before.data?.equals(data) && before.mode === mode && sameOwner)
        return { outcome: "unchanged", previous: before };

      const shown = options.display ?? { before: before.data, after: data };
      const diff = await diffSummary(hostPath, shown.before, shown.after);
      opts.record({
        type: "write",
        path: hostPath,
        mode,
        bytes: data.length,
        change: before.data ? "modified" : "created",
        ...diff,
      });
      if (options.validate) opts.record({ type: "validate", path: hostPath, argv: [...options.validate] });
      if (!opts.dryRun) await replace(hostPath, data, mode, ids, options.validate);
      return { outcome: "changed", previous: before };
    },

    async readlink(hostPath) {
      return readlink(resolve(hostPath)).catch(() => null);
    },

    async remove(hostPath) {
      opts.record({ type: "remove", path: hostPath });
      if (!opts.dryRun) await rm(resolve(hostPath), { recursive: true, force: true });
    },

    async copyTree(from, to) {
      opts.record({ type: "copy", from, to });
      if (opts.dryRun) return;
      await mkdir(path.dirname(resolve(to)), { recursive: true });
      await cp(resolve(from), resolve(to), { recursive: true });
    },

    async swapLink(hostPath, target, aside) {
      opts.record({ type: "link", path: hostPath, target });
      if (opts.dryRun) return;
      const at = resolve(hostPath);
      if ((await lstat(at).catch(() => null))?.isDirectory()) {
        // A plain directory (the first switch on a host): kept aside, not deleted.
        await mkdir(path.dirname(resolve(aside)), { recursive: true });
        await rename(at, resolve(aside));
      }
      await pointLink(at, resolve(target));
    },

    async symlink(hostPath, target) {
      const now = await readlink(resolve(hostPath)).catch(() => null);
      const previous = now === null ? await snapshot(hostPath) : { path: hostPath, link: now };
      if (now === target) return { outcome: "unchanged", previous };
      opts.record({ type: "link", path: hostPath, target });
      if (!opts.dryRun)
        await pointLink(resolve(hostPath), target).catch((err) => Promise.reject(writeError(hostPath, err)));
      return { outcome: "changed", previous };
    },

    async mkdir(hostPath, mode) {
      let created: string | null = null;
      for (let dir = hostPath; dir !== "/" && !(await stat(resolve(dir)).catch(() => null)); ) {
        created = dir;
        dir = path.posix.dirname(dir);
      }
      if (created === null) return { created };
      opts.record({ type: "mkdir", path: hostPath, mode });
      if (!opts.dryRun) {
        await mkdir(resolve(hostPath), { recursive: true, mode }).catch((err) =>
          Promise.reject(writeError(hostPath, err)),
        );
      }
      return { created };
    },

    async list(hostPath) {
      const dir = resolve(hostPath);
      const names = await readdir(dir).catch(() => [] as string[]);
      return Promise.all(
        names.map(async (n) => ({
          path: path.posix.join(hostPath, n),
          mtimeMs: (await stat(path.join(dir, n))).mtimeMs,
        })),
      );
    },

    async restore(snap) {
      opts.record({ type: "restore", path: snap.path });
      if (opts.dryRun) return;
      if ("link" in snap) {
        await pointLink(resolve(snap.path), snap.link).catch((err) =>
          Promise.reject(writeError(snap.path, err)),
        );
        return;
      }
      if (snap.data === null) {
        await unlink(resolve(snap.path)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOENT") throw writeError(snap.path, err);
        });
        return;
      }
      await replace(snap.path, snap.data, snap.mode, { uid: snap.uid, gid: snap.gid }, undefined);
    },
  };
}
