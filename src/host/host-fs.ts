import { cp, lstat, mkdir, readdir, readlink, rename, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { CommandRunner } from "./command.js";
import { diffSummary } from "./diff-summary.js";
import type { EffectRecorder } from "./effects.js";
import { readHostFile } from "./host-read.js";
import { pointLink, replaceFile, writeError } from "./host-write.js";
import { type Ids, resolveOwner } from "./owner.js";

/**
 * The host filesystem as steps see it: every absolute path is taken under `root` (`--root`), writes are
 * atomic (temp file in the target directory, fsync, rename, fsync of the directory), and in a dry run
 * writes are recorded with a diff instead of performed. This module decides what to do and records it;
 * what a read refuses is host-read.ts, and the writes themselves are host-write.ts.
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
  /**
   * Command run on the new file before it replaces the old one; `{file}` is replaced by VALIDATE_PATH
   * (host-write.ts).
   */
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

  /** Writes for real: the dry-run check and the record are the caller's. */
  function replace(
    hostPath: string,
    data: Buffer,
    mode: number,
    ids: Ids | undefined,
    validate: readonly string[] | undefined,
  ): Promise<void> {
    return replaceFile(resolve(hostPath), hostPath, data, { mode, ids, validate, run: opts.run });
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
