import { AgentError } from "../core/errors.js";

/**
 * age (X25519 recipients) through `age-encryption`, the reference implementation's TypeScript port. It is
 * imported here only, on first use: it costs about 140 ms and several MiB to load, and a host without secret
 * steps never pays for it (build.mjs leaves it outside the bundle). Ciphertexts are ASCII-armored, so they
 * read as text in git.
 */

type AgeModule = typeof import("age-encryption");
let loaded: Promise<AgeModule> | undefined;
const age = (): Promise<AgeModule> => {
  loaded ??= import("age-encryption");
  return loaded;
};

/** An X25519 recipient: `age1` and 58 bech32 characters. Other recipient types are refused. */
export const RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/;
/** An X25519 identity as age-keygen writes it. */
export const IDENTITY = /^AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}$/;

export async function generateIdentity(): Promise<{ identity: string; recipient: string }> {
  const a = await age();
  const identity = await a.generateX25519Identity();
  return { identity, recipient: await a.identityToRecipient(identity) };
}

export async function recipientOf(identity: string): Promise<string> {
  return (await age()).identityToRecipient(identity);
}

/** The value encrypted to every recipient, armored. */
export async function encrypt(value: string, recipients: readonly string[]): Promise<string> {
  const a = await age();
  const e = new a.Encrypter();
  for (const r of recipients) e.addRecipient(r);
  return a.armor.encode(await e.encrypt(value));
}

/**
 * The armored file decrypted with one identity. A file not encrypted to it, damaged or not age at all is
 * SECRET_UNREADABLE; the library's message says which (it never holds the plaintext).
 */
export async function decrypt(armored: string, identity: string, what: string): Promise<string> {
  const a = await age();
  const d = new a.Decrypter();
  d.addIdentity(identity);
  try {
    // As bytes, decoded keeping a leading byte order mark: "text" would drop it, and the value the host
    // places would not be the one `secret set` fingerprinted.
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(await d.decrypt(a.armor.decode(armored)));
  } catch (err) {
    throw new AgentError(
      "SECRET_UNREADABLE",
      `${what} cannot be decrypted with this key: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}
