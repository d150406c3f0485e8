import { type FSWatcher, lstatSync, statSync, watch } from "node:fs";
import path from "node:path";

/**
 * Knowing, without a syscall per look, whether files may have changed: each file, its directory and every
 * directory above it watched (inotify), and what a file is now (a synchronous stat). The webhook secrets'
 * watch (../server/webhook-keys.ts) is built on it; apart because none of this knows what the files hold.
 */

/** The filesystem calls a watch makes; a test wraps them to count or break them. */
export interface WatchFs {
  stat: typeof statSync;
  lstat: typeof lstatSync;
  watch: typeof watch;
}
export const FS: WatchFs = { stat: statSync, lstat: lstatSync, watch };

/**
 * What a file is now, synchronously: a stat call on the delivery's own path, never a thread-pool round trip
 * that every delivery at once would queue behind.
 */
export function identity(fs: WatchFs, file: string | null): string {
  if (!file) return "fixed";
  // No ENOENT exception for the next secret's file, absent nearly always: an Error and its stack per look.
  try {
    const st = fs.stat(file, { throwIfNoEntry: false });
    return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.mode}` : "absent";
  } catch {
    return "absent"; // not a file it can look at (a directory in the path is a file): as if absent
  }
}

/**
 * Watches what decides the files' contents at their paths: each file itself (its inode: a write or chmod
 * through another link or a bind mount makes no event in its directory), its directory (any event), and
 * every directory above up to the root (an event on the name of the one below: a directory in the path
 * moved, replaced or re-pointed). A path not there is not watched: its parent's event tells when it comes.
 * Null when a watch cannot be had (the inotify limit, not allowed): then every delivery looks at the files.
 * `ids()` is every path's lstat dev:ino, to tell when something must be watched anew, and whether one is a
 * symlink: its target's directories are not watched, so every delivery looks at the files.
 */
export function watchPaths(fs: WatchFs, files: (string | null)[], changed: () => void, broken: () => void) {
  // Path → the names an event there must carry to matter; null: any event.
  const targets = new Map<string, Set<string> | null>();
  const add = (p: string, name: string | null) => {
    const had = targets.get(p);
    if (had === null) return;
    targets.set(p, name === null ? null : new Set([...(had ?? []), name]));
  };
  for (const file of files) {
    if (!file) continue;
    const f = path.resolve(file);
    add(f, null);
    add(path.dirname(f), null);
    for (
      let child = path.dirname(f), dir = path.dirname(child);
      dir !== child;
      child = dir, dir = path.dirname(dir)
    )
      add(dir, path.basename(child));
  }
  const watchers: FSWatcher[] = [];
  const close = () => {
    for (const w of watchers) w.close();
  };
  for (const [p, names] of targets) {
    try {
      const w = fs.watch(p, { persistent: false }, (_event, name) => {
        if (!names || name == null || names.has(String(name))) changed();
      });
      w.on("error", broken);
      watchers.push(w);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") continue;
      close();
      return null;
    }
  }
  const ids = () => {
    let symlink = false;
    const key = [...targets.keys()]
      .map((p) => {
        try {
          const st = fs.lstat(p, { throwIfNoEntry: false });
          if (st?.isSymbolicLink()) symlink = true;
          return st ? `${st.dev}:${st.ino}` : "absent";
        } catch {
          return "absent";
        }
      })
      .join(" ");
    return { key, symlink };
  };
  return { close, ids, watched: ids() };
}
