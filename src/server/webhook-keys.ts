import path from "node:path";
import type { Logger } from "pino";
import { asAgentError } from "../core/errors.js";
import { loadNextWebhookSecret, loadWebhookSecret, type SecretSource } from "../gitea/webhook-secret.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { readEnvFile } from "../host/env.js";
import { FS, identity, type WatchFs, watchPaths } from "../host/path-watch.js";
import { fingerprint } from "../secrets/catalog.js";
import type { SecretRole, WebhookKeys } from "./verify.js";

/**
 * The webhook secrets the daemon verifies with, kept in step with their files without a restart. The files,
 * their directories and the directories above are watched (inotify, see ../host/path-watch.ts): while nothing happened
 * there, a delivery is verified with the keys in memory, without a syscall. After an event there, at least
 * every RECHECK_MS whatever the watch says (a filesystem without inotify, a mount), and always when a secret
 * file or a directory in its path is a symlink (its target's directories are not watched), the files are
 * stat()ed and re-read when one changed (inode, size, times or mode). A delivery no key in memory verifies
 * looks at the files again before it is refused, so a secret written a moment before its first delivery is
 * never missed, whichever of the two the daemon hears of first. The next secret's file is looked at before
 * the current one's, so that the atomic rename of `rotate-webhook --finish` (next → current) is never seen
 * half done: whichever moment the two looks fall on, the new secret is accepted. A changed file that fails
 * its checks (mode, length, size) is logged and not taken: the current secret stays the last good one, a
 * refused next secret is not accepted.
 */

/** The longest the files go unlooked-at while deliveries come, whatever the watch says. */
export const RECHECK_MS = 1000;

/** What `rotate-webhook --finish` reads: the first delivery verified with the next secret. */
export const ROTATION_FILE = "webhook-rotation.json";

export interface RotationRecord {
  schema: "deploy-agent/webhook-rotation@1";
  /** The next secret's fingerprint (sha256: and 12 hex digits), never the secret. */
  next: string;
  firstMatchedAt: string;
  delivery?: string | undefined;
}

export interface LiveWebhookKeys {
  /** The keys as they were at start (serve refuses to start without a usable current secret). */
  initial: WebhookKeys;
  /**
   * The keys to verify a delivery with, re-read when a file changed; `look` makes it look at the files now,
   * whatever the watch says (a delivery the keys in memory refused).
   */
  keys(look?: "look"): Promise<WebhookKeys>;
  /** A delivery verified with `role`: the first one with a next secret is recorded in the state directory. */
  verified(role: SecretRole, delivery: string): void;
  /** Stops watching the files. */
  close(): void;
}

/** The files that decide the keys: the current secret's (its file, or the env file it comes from) and the next's. */
function watchedFiles(src: SecretSource): { current: string | null; next: string } {
  const { secretEnv, secretFile, nextSecretFile } = src.manifest.webhook;
  const fromEnvFile = secretEnv && process.env[secretEnv] === undefined ? (src.envFile ?? null) : null;
  return {
    current: secretEnv ? fromEnvFile : src.under(secretFile),
    next: src.under(nextSecretFile),
  };
}

/** The current secret as `loadWebhookSecret` reads it, with the env file read again when it comes from one. */
async function readCurrent(src: SecretSource): Promise<string> {
  const { secretEnv } = src.manifest.webhook;
  if (!secretEnv || !src.envFile || process.env[secretEnv] !== undefined)
    return (await loadWebhookSecret(src)).reveal();
  return (await loadWebhookSecret({ ...src, env: await readEnvFile(src.envFile) })).reveal();
}

export async function watchWebhookKeys(
  src: SecretSource,
  stateDir: string,
  log: Logger,
  fs: WatchFs = FS,
): Promise<LiveWebhookKeys> {
  const files = watchedFiles(src);
  // Looked at in this order: next, then current (see above).
  const look = () => ({ next: identity(fs, files.next), current: identity(fs, files.current) });
  // Watched before the first look, so that no change falls between the two.
  let changed = true;
  let watcher: ReturnType<typeof watchPaths> = null;
  /** A path is a symlink: every delivery looks at the files (see watchPaths). */
  let symlinked = false;
  let closed = false;
  const unwatch = () => {
    if (!watcher) return;
    watcher.close();
    watcher = null;
    log.warn("webhook secret files no longer watched (the watch failed): every delivery looks at them");
  };
  const rewatch = () => {
    watcher?.close();
    watcher = null;
    if (closed) return;
    watcher = watchPaths(
      fs,
      [files.next, files.current],
      () => {
        changed = true;
      },
      unwatch,
    );
  };
  rewatch();
  if (!watcher) log.info("webhook secret files not watched (inotify): every delivery looks at them");
  let seen = look();
  let lookedAt = 0;
  const initial: WebhookKeys = {
    next: (await loadNextWebhookSecret(src))?.reveal(),
    current: (await loadWebhookSecret(src)).reveal(),
  };
  let keys = initial;
  let recorded: string | null = null;
  /** The refresh under way, and the look it takes the files to: a later look that differs waits for its own. */
  let refreshing: { to: typeof seen; done: Promise<WebhookKeys> } | null = null;

  async function refresh(now: typeof seen): Promise<WebhookKeys> {
    let { current, next } = keys;
    if (now.next !== seen.next) {
      next = await loadNextWebhookSecret(src).then(
        (s) => s?.reveal(),
        (err: unknown) => {
          const e = asAgentError(err);
          log.error({ code: e.code, hint: e.hint }, `next webhook secret refused: ${e.message}`);
          return undefined;
        },
      );
    }
    if (now.current !== seen.current) {
      current = await readCurrent(src).catch((err: unknown) => {
        const e = asAgentError(err);
        log.error(
          { code: e.code, hint: e.hint },
          `changed webhook secret refused, the last good one stays: ${e.message}`,
        );
        return current;
      });
    }
    if (current !== keys.current || next !== keys.next) {
      log.info(
        { next: next ? fingerprint(next) : null, rotating: !!next },
        next ? "webhook secrets re-read: the current and the next are accepted" : "webhook secret re-read",
      );
    }
    seen = now;
    keys = { current, next };
    return keys;
  }

  /**
   * The keys for the files as `now` found them: those in memory when nothing changed since the last refresh,
   * else a refresh to `now`. One under way to another look is waited for first, never taken instead: it may
   * have read the files before this change, and the event that told of it is spent.
   */
  function settle(now: typeof seen): Promise<WebhookKeys> {
    const ahead = refreshing;
    if (!ahead && now.next === seen.next && now.current === seen.current) return Promise.resolve(keys);
    if (ahead && now.next === ahead.to.next && now.current === ahead.to.current) return ahead.done;
    const entry = {
      to: now,
      done: (ahead?.done ?? Promise.resolve(keys))
        .then(() => (now.next === seen.next && now.current === seen.current ? keys : refresh(now)))
        .finally(() => {
          if (refreshing === entry) refreshing = null;
        }),
    };
    refreshing = entry;
    return entry.done;
  }

  return {
    initial,
    keys(force) {
      // A delivery the keys in memory refused: a look at the files now (two stats, as every delivery cost
      // before the watch), the watch's own bookkeeping left to the next regular look.
      if (force) return settle(look());
      const t = Date.now();
      const due = changed || !(t - lookedAt < RECHECK_MS && t >= lookedAt);
      // Nothing happened where the watch can tell (nearly every delivery): the keys in memory, no syscall;
      // during a refresh, that refresh: the keys in memory are those a change made stale.
      if (!due && watcher && !symlinked) return refreshing ? refreshing.done : Promise.resolve(keys);
      if (due) {
        // Cleared before the look: an event from here on means another look.
        changed = false;
        lookedAt = t;
        // Something watched was replaced, or no watch could be had (retried at this floor): watched anew.
        let ids = watcher?.ids();
        if (!watcher || ids?.key !== watcher.watched.key) {
          rewatch();
          ids = watcher?.watched;
        }
        symlinked = ids?.symlink ?? false;
      }
      return settle(look());
    },
    verified(role, delivery) {
      if (role !== "next" || !keys.next) return;
      const next = fingerprint(keys.next);
      if (recorded === next) return;
      recorded = next;
      const record: RotationRecord = {
        schema: "deploy-agent/webhook-rotation@1",
        next,
        firstMatchedAt: new Date().toISOString(),
        delivery,
      };
      writeFileAtomic(path.join(stateDir, ROTATION_FILE), `${JSON.stringify(record)}\n`, {
        mode: 0o600,
      }).then(
        () => log.info({ next, delivery }, "first delivery signed with the next webhook secret"),
        (err: unknown) => {
          recorded = null;
          log.warn({ err }, "could not record the first delivery signed with the next webhook secret");
        },
      );
    },
    close() {
      closed = true;
      watcher?.close();
      watcher = null;
    },
  };
}
