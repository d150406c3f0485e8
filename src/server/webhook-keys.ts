import { statSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { asAgentError } from "../core/errors.js";
import { loadNextWebhookSecret, loadWebhookSecret, type SecretSource } from "../gitea/webhook-secret.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { readEnvFile } from "../host/env.js";
import { fingerprint } from "../secrets/catalog.js";
import type { SecretRole, WebhookKeys } from "./verify.js";

/**
 * The webhook secrets the daemon verifies with, kept in step with their files without a restart: before
 * each delivery the files are stat()ed (two syscalls) and re-read when one changed (inode, size, times or
 * mode). The next secret's file is looked at before the current one's, so that the atomic rename of
 * `rotate-webhook --finish` (next → current) is never seen half done: whichever moment the two looks fall
 * on, the new secret is accepted. A changed file that fails its checks (mode, length, size) is logged and
 * not taken: the current secret stays the last good one, a refused next secret is not accepted.
 */

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
  /** The keys to verify a delivery with, re-read when a file changed. */
  keys(): Promise<WebhookKeys>;
  /** A delivery verified with `role`: the first one with a next secret is recorded in the state directory. */
  verified(role: SecretRole, delivery: string): void;
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

/**
 * What a file is now, synchronously: two stat calls per delivery, on the delivery's own path, never a
 * thread-pool round trip that every delivery at once would queue behind.
 */
function identity(file: string | null): string {
  if (!file) return "fixed";
  // No ENOENT exception for the next secret's file, absent nearly always: an Error and its stack per delivery.
  try {
    const st = statSync(file, { throwIfNoEntry: false });
    return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.mode}` : "absent";
  } catch {
    return "absent"; // not a file it can look at (a directory in the path is a file): as if absent
  }
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
): Promise<LiveWebhookKeys> {
  const files = watchedFiles(src);
  // Looked at in this order: next, then current (see above).
  let seen = { next: identity(files.next), current: identity(files.current) };
  const initial: WebhookKeys = {
    next: (await loadNextWebhookSecret(src))?.reveal(),
    current: (await loadWebhookSecret(src)).reveal(),
  };
  let keys = initial;
  let recorded: string | null = null;
  let refreshing: Promise<WebhookKeys> | null = null;

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

  return {
    initial,
    keys() {
      // Unchanged files (nearly every delivery): the keys in memory, without waiting for anything.
      const now = { next: identity(files.next), current: identity(files.current) };
      if (now.next === seen.next && now.current === seen.current) return Promise.resolve(keys);
      if (!refreshing) {
        refreshing = refresh(now).finally(() => {
          refreshing = null;
        });
      }
      return refreshing;
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
  };
}
