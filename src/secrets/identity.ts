import { AgentError } from "../core/errors.js";
import { Secret } from "../core/secret.js";
import { problemText, readBounded } from "../host/bounded-read.js";
import type { HostFs } from "../host/host-fs.js";
import { generateIdentity, IDENTITY, RECIPIENT, recipientOf } from "./age.js";

/**
 * A host's own age identity: `/etc/deploy-agent/age.key`, mode 0600, made by `install`, in age-keygen's
 * format (so `age -d -i` reads it too), its public recipient in the `# public key:` comment where `status`
 * reads it without loading any crypto.
 */

export const HOST_IDENTITY_FILE = "/etc/deploy-agent/age.key";

export function identityFileText(identity: string, recipient: string, now = new Date()): string {
  return `# created: ${now.toISOString().replace(/\.\d+Z$/, "Z")}\n# public key: ${recipient}\n${identity}\n`;
}

/** The identity line and the `# public key:` comment of a key file's text. */
export function parseIdentityFile(text: string): {
  identity: string | undefined;
  recipient: string | undefined;
} {
  let identity: string | undefined;
  let recipient: string | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const comment = /^#\s*public key:\s*(\S+)$/.exec(line);
    if (comment && RECIPIENT.test(comment[1] ?? "")) recipient = comment[1];
    else if (IDENTITY.test(line)) identity = line;
  }
  return { identity, recipient };
}

/** The recipient written beside the key (no crypto: for `status`); undefined when there is no key file. */
export async function hostRecipient(file: string): Promise<string | undefined> {
  // Without blocking and bounded: a FIFO or a huge file at the name must not hold `status`.
  const read = await readBounded(file, {
    follow: true,
    maxBytes: MAX_IDENTITY_FILE_BYTES,
    fail: (p) => new Error(p.is),
  }).catch(() => null);
  return read ? parseIdentityFile(read.data.toString("utf8")).recipient : undefined;
}

/** Far more than age-keygen writes (three short lines): a larger file is not a key file. */
const MAX_IDENTITY_FILE_BYTES = 64 * 1024;

const unreadable = (message: string, hint: string) => new AgentError("SECRET_UNREADABLE", message, { hint });

/** The host's identity and its recipient, refusing a missing, unparsable or group/world-readable key file. */
export async function readHostIdentity(
  host: HostFs,
  file: string,
): Promise<{ identity: Secret; recipient: string }> {
  const snap = await host.snapshot(file);
  if (!snap.data) {
    throw unreadable(
      `this host has no age identity at ${file}`,
      "deploy-agent install makes one and prints its recipient; add that to secrets/secrets.yaml and run deploy-agent secret rekey",
    );
  }
  if (snap.mode & 0o077) {
    throw unreadable(
      `${file} is readable by others (mode 0${snap.mode.toString(8)}); refusing to use it`,
      `chmod 600 ${file}, then check who read it (and replace the key if anyone did)`,
    );
  }
  const { identity } = parseIdentityFile(snap.data.toString("utf8"));
  if (!identity) {
    throw unreadable(`${file} holds no AGE-SECRET-KEY-1 line`, "make a new key with deploy-agent install");
  }
  const secret = new Secret(identity);
  return { identity: secret, recipient: await recipientOf(secret.reveal()) };
}

/**
 * For install: the key file to write when the host has none (a new identity), and the recipient either
 * way. An existing key is kept as it is: replacing it would lock the host out of every secret.
 */
export async function plannedHostIdentity(
  file: string,
): Promise<{ recipient: string | undefined; data: Buffer | undefined }> {
  // Nothing at the name plans a new key; anything there that cannot be read as one (a directory, a FIFO, a
  // file it may not open) is refused: planned over, the host's key would be replaced.
  const read = await readBounded(file, {
    follow: true,
    maxBytes: MAX_IDENTITY_FILE_BYTES,
    fail: (p) =>
      unreadable(
        `${file} ${problemText(p, MAX_IDENTITY_FILE_BYTES)}: it cannot be read as a key file`,
        `move it away if it is no key, or make it the host's key file (age-keygen's format, mode 0600)`,
      ),
  });
  if (read) {
    const { identity, recipient } = parseIdentityFile(read.data.toString("utf8"));
    return { recipient: recipient ?? (identity ? await recipientOf(identity) : undefined), data: undefined };
  }
  const made = await generateIdentity();
  return { recipient: made.recipient, data: Buffer.from(identityFileText(made.identity, made.recipient)) };
}
