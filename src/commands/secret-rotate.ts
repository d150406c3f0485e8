import { randomBytes } from "node:crypto";
import { open, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { parseHookRef, setHookSecret } from "../gitea/hook.js";
import { loadNextWebhookSecret, loadWebhookSecret, readPrivateFile } from "../gitea/webhook-secret.js";
import { writeFileAtomic } from "../host/atomic-write.js";
import { setEnv } from "../host/env.js";
import { fingerprint } from "../secrets/catalog.js";
import { ROTATION_FILE, type RotationRecord } from "../server/webhook-keys.js";
import { acquireLock, COMMAND_LOCK_WAIT_MS } from "../state/lock.js";
import { type CommonFlags, type Resolved, resolve, secretSource } from "./options.js";

/**
 * `deploy-agent secret rotate-webhook`, on the host: a new webhook secret without a missed push.
 * 1. (no --finish) makes the next secret (32 random bytes, 64 hex digits) in webhook.nextSecretFile (0600,
 *    the current secret's owner); the daemon accepts it beside the current one from its next delivery on.
 *    With --hook, gives it to Gitea (src/gitea/hook.ts) and asks Gitea for a test delivery; else prints the
 *    steps. Run again, it keeps the next secret it made (--force makes another).
 * 2. --finish, once a delivery was verified with the next secret (the daemon records the first one in the
 *    state directory): the next becomes the current in one rename (or one env-file write, with secretEnv),
 *    and the old one is refused from the next delivery on. No restart.
 * The secret itself is never printed: only its fingerprint.
 */

export interface RotateFlags extends CommonFlags {
  finish: boolean;
  force: boolean;
  hook?: string | undefined;
  tokenFile?: string | undefined;
}

type Out = (text: string) => void;

/** Random bytes in a new secret (printed as twice as many hex digits). */
export const NEW_SECRET_BYTES = 32;

/** The Gitea token: --token-file (private) or GITEA_TOKEN. */
async function giteaToken(flags: RotateFlags): Promise<Secret> {
  const value = flags.tokenFile
    ? await readPrivateFile(path.resolve(flags.tokenFile), "Gitea token file")
    : process.env.GITEA_TOKEN;
  if (!value?.trim()) {
    throw new AgentError("USAGE", "--hook needs a Gitea token", {
      hint: "set GITEA_TOKEN, or pass --token-file F (mode 0600): a token of a repository administrator",
    });
  }
  return new Secret(value.trim());
}

/** The file that holds the current secret and is rewritten by --finish: the secret file, or the env file. */
function currentHolder(r: Resolved): { file: string; env?: string } {
  const { secretEnv, secretFile } = r.loaded.manifest.webhook;
  if (!secretEnv) return { file: r.under(secretFile) };
  if (process.env[secretEnv] !== undefined || !r.loaded.envFile) {
    throw new AgentError(
      "USAGE",
      `${secretEnv} comes from the process environment, not an env file: it cannot be rotated here`,
      { hint: `set ${secretEnv} in the manifest's envFile instead, or rotate by hand` },
    );
  }
  return { file: r.loaded.envFile, env: secretEnv };
}

/** Writes `data` atomically with the mode given and the owner of `like` (when it exists and we may chown). */
async function writeLike(file: string, data: string, mode: number, like: string): Promise<void> {
  const owner = await stat(like).catch(() => null);
  await writeFileAtomic(file, data, {
    mode,
    prepare: async (handle) => {
      if (owner && process.getuid?.() === 0) await handle.chown(owner.uid, owner.gid);
    },
  });
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function rotateWebhookCommand(flags: RotateFlags, out: Out): Promise<number> {
  const r = await resolve(flags);
  // Under the deploy lock: two rotations at once would each write a next secret and give Gitea its own,
  // and the one left in the file could be neither Gitea's nor the current one.
  const lock = await acquireLock(r.stateDir, COMMAND_LOCK_WAIT_MS);
  try {
    return await (flags.finish ? finish(r, flags, out) : start(r, flags, out));
  } finally {
    await lock.release();
  }
}

async function start(r: Resolved, flags: RotateFlags, out: Out): Promise<number> {
  const src = secretSource(r);
  await loadWebhookSecret(src);
  const holder = currentHolder(r);
  const nextFile = r.under(r.loaded.manifest.webhook.nextSecretFile);
  // Parsed before anything is written: a wrong --hook changes nothing.
  const hook = flags.hook !== undefined ? parseHookRef(flags.hook) : undefined;
  const token = hook ? await giteaToken(flags) : undefined;
  let next = flags.force ? undefined : await loadNextWebhookSecret(src);
  if (next) {
    out(`a rotation is under way: keeping the next secret in ${nextFile} (${fingerprint(next.reveal())})\n`);
  } else {
    next = new Secret(randomBytes(NEW_SECRET_BYTES).toString("hex"));
    await writeLike(nextFile, `${next.reveal()}\n`, 0o600, holder.file);
    out(
      `next webhook secret written to ${nextFile} (mode 0600, ${fingerprint(next.reveal())}); the agent accepts it beside the current one from its next delivery on\n`,
    );
  }
  const finishCommand = `deploy-agent secret rotate-webhook --finish --config ${r.loaded.file}`;
  if (hook && token) {
    const done = await setHookSecret(hook, token, next);
    out(
      `Gitea's hook ${hook.id} of ${hook.repository} (${done.url}) now signs with the next secret\n` +
        (done.tested
          ? `Gitea's test delivery failed (${done.tested}): send one from the hook's page (Test Delivery), or push\n`
          : "Gitea was asked for a test delivery\n") +
        `when the agent has logged "first delivery signed with the next webhook secret": ${finishCommand}\n`,
    );
    return 0;
  }
  out(
    [
      "now give Gitea the same secret (it is not printed here):",
      `  1. on this host: cat ${nextFile}`,
      "  2. Gitea: the repository → Settings → Webhooks → this host's hook → Secret: paste it → Update Webhook",
      '  3. on the same page: Test Delivery (or push); the agent logs "first delivery signed with the next webhook secret"',
      `  4. ${finishCommand}`,
      "(with GITEA_TOKEN set, --hook https://<gitea>/<owner>/<repo>/settings/hooks/<id> does 2 and 3)",
      "",
    ].join("\n"),
  );
  return 0;
}

async function rotationRecord(stateDir: string): Promise<RotationRecord | null> {
  const text = await readFile(path.join(stateDir, ROTATION_FILE), "utf8").catch(() => null);
  if (text === null || text.length > 4096) return null;
  try {
    return JSON.parse(text) as RotationRecord;
  } catch {
    return null;
  }
}

async function finish(r: Resolved, flags: RotateFlags, out: Out): Promise<number> {
  const src = secretSource(r);
  const nextFile = r.under(r.loaded.manifest.webhook.nextSecretFile);
  const next = await loadNextWebhookSecret(src);
  if (!next) {
    throw new AgentError("USAGE", `no rotation under way: ${nextFile} does not exist`, {
      hint: "start one: deploy-agent secret rotate-webhook",
    });
  }
  const holder = currentHolder(r);
  const print = fingerprint(next.reveal());
  const record = await rotationRecord(r.stateDir);
  const confirmed = record?.next === print;
  if (!confirmed && !flags.force) {
    throw new AgentError(
      "ROTATION_UNCONFIRMED",
      `no delivery signed with the next webhook secret (${print}) has reached the agent yet`,
      {
        hint: "give Gitea the secret and send a Test Delivery first (the old secret stays until then); --force finishes anyway, and a push Gitea still signs with the old secret is then refused",
      },
    );
  }
  if (holder.env) {
    // One env-file write makes it current; the next file goes after, so a delivery sees it in one of them.
    const text = await readFile(holder.file, "utf8");
    const mode = (await stat(holder.file)).mode & 0o777;
    await writeLike(holder.file, setEnv(text, holder.env, next.reveal()), mode, holder.file);
    await unlink(nextFile);
  } else {
    try {
      // One rename: the next file becomes the current one (its mode and owner were made for that).
      await rename(nextFile, holder.file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
      await writeLike(holder.file, `${next.reveal()}\n`, 0o600, holder.file);
      await unlink(nextFile);
    }
    await syncDir(path.dirname(holder.file));
  }
  await unlink(path.join(r.stateDir, ROTATION_FILE)).catch(() => {});
  out(
    `the next webhook secret (${print}) is now the current one in ${holder.env ? `${holder.env} of ${holder.file}` : holder.file}; ` +
      `the old one is refused from the agent's next delivery on (no restart)${confirmed ? "" : " — finished with --force before any delivery was signed with it"}\n`,
  );
  return 0;
}
